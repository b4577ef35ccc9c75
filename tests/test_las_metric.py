"""LAS against a direct transcription of Hase et al.'s formula, the bootstrap, and the evaluate module."""

from __future__ import annotations

import doctest
import importlib.util
import os
import warnings

import numpy as np
import pytest

from scott_distill import load_las
from scott_distill.las import las_module_path, leakage_adjusted_simulatability


def paper_las(xe, x, e, y):
    """Transcription of compute_sim.py: leaked = e-only simulator correct; unweighted mean of bin diffs."""
    rows = list(zip(xe, x, e, y))
    diffs = []
    for leaked in (True, False):
        in_bin = [r for r in rows if (r[2] == r[3]) == leaked]
        if not in_bin:
            continue
        acc_xe = sum(r[0] == r[3] for r in in_bin) / len(in_bin)
        acc_x = sum(r[1] == r[3] for r in in_bin) / len(in_bin)
        diffs.append(acc_xe - acc_x)
    return sum(diffs) / len(diffs)


@pytest.mark.parametrize("seed", range(40))
def test_matches_paper_formula_on_random_vectors(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    k = int(rng.integers(2, 5))
    y = rng.integers(0, k, n)
    xe, x = rng.integers(0, k, n), rng.integers(0, k, n)
    mode = seed % 4  # also all-leaked and none-leaked inputs
    e = y.copy() if mode == 1 else (y + 1) % k if mode == 2 else rng.integers(0, k, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = leakage_adjusted_simulatability(xe, x, e, y)
    assert got["las"] == pytest.approx(paper_las(xe, x, e, y), abs=1e-12)
    assert got["n_leaked"] + got["n_nonleaked"] == n
    assert got["n_leaked"] == int((e == y).sum())
    assert -1 <= got["las"] <= 1 and not np.isnan(got["las"])


def test_empty_bin_warns_and_uses_other_bin():
    y = [0, 1, 1, 0]
    with pytest.warns(UserWarning, match="non-leaked bin is empty"):
        got = leakage_adjusted_simulatability([0, 1, 1, 1], [1, 1, 0, 0], y, y)
    assert got["n_nonleaked"] == 0 and np.isnan(got["nonleaked_diff"])
    assert got["las"] == pytest.approx(0.75 - 0.5)


def test_string_and_int_labels_agree():
    a = leakage_adjusted_simulatability([1, 0, 2], [1, 1, 2], [0, 0, 2], [1, 0, 2])
    b = leakage_adjusted_simulatability(["b", "a", "c"], ["b", "b", "c"], ["a", "a", "c"], ["b", "a", "c"])
    assert a == b


def test_bootstrap_interval_contains_estimate_and_narrows():
    rng = np.random.default_rng(0)
    widths = []
    for n in (100, 1000, 10000):
        y = rng.integers(0, 3, n)
        xe = np.where(rng.random(n) < 0.8, y, (y + 1) % 3)
        x = np.where(rng.random(n) < 0.6, y, (y + 1) % 3)
        e = np.where(rng.random(n) < 0.4, y, (y + 2) % 3)
        r = leakage_adjusted_simulatability(xe, x, e, y, bootstrap=2000, seed=1)
        assert r["las_ci_low"] <= r["las"] <= r["las_ci_high"]
        widths.append(r["las_ci_high"] - r["las_ci_low"])
    assert widths[0] > widths[1] > widths[2]


def test_multinomial_bootstrap_matches_row_resampling_distribution():
    """The cell-count bootstrap must have the distribution of the original row-resampling loop."""
    rng = np.random.default_rng(3)
    n = 300
    y = rng.integers(0, 2, n)
    xe = np.where(rng.random(n) < 0.85, y, 1 - y)
    x = np.where(rng.random(n) < 0.6, y, 1 - y)
    e = np.where(rng.random(n) < 0.5, y, 1 - y)
    ours = leakage_adjusted_simulatability(xe, x, e, y, bootstrap=20000, seed=0)
    boot = []
    for _ in range(4000):
        idx = rng.integers(0, n, n)
        boot.append(paper_las(xe[idx], x[idx], e[idx], y[idx]))
    low, high = np.percentile(boot, [2.5, 97.5])
    assert ours["las_std"] == pytest.approx(np.std(boot), rel=0.08)
    assert ours["las_ci_low"] == pytest.approx(low, abs=0.015)
    assert ours["las_ci_high"] == pytest.approx(high, abs=0.015)


def test_bootstrap_seeded():
    args = ([1, 0, 1, 0, 1], [0, 0, 1, 1, 1], [1, 1, 0, 0, 1], [1, 0, 1, 0, 1])
    a = leakage_adjusted_simulatability(*args, bootstrap=500, seed=5)
    b = leakage_adjusted_simulatability(*args, bootstrap=500, seed=5)
    assert a == b


def test_k_bins_against_direct_computation():
    rng = np.random.default_rng(1)
    n = 500
    y = rng.integers(0, 3, n)
    xe, x, e = rng.integers(0, 3, (3, n))
    p = rng.random(n)
    got = leakage_adjusted_simulatability(xe, x, e, y, e_probabilities=p, k_bins=5)
    diffs = []
    for lo in np.arange(5) / 5:
        sel = (p >= lo) & (p < lo + 0.2) if lo < 0.8 else (p >= lo)
        if sel.any():
            diffs.append((xe[sel] == y[sel]).mean() - (x[sel] == y[sel]).mean())
    assert got["las_k_bins"] == pytest.approx(np.mean(diffs))


def test_bad_input_errors():
    with pytest.raises(ValueError, match="x_predictions"):
        leakage_adjusted_simulatability([1, 2], [1], [1, 2], [1, 2])
    with pytest.raises(ValueError, match="empty"):
        leakage_adjusted_simulatability([], [], [], [])
    with pytest.raises(ValueError, match="bootstrap"):
        leakage_adjusted_simulatability([1], [1], [1], [1], bootstrap=-1)
    with pytest.raises(ValueError, match="e_probabilities"):
        leakage_adjusted_simulatability([1], [1], [1], [1], e_probabilities=[1.5])


def test_evaluate_module_loads_from_any_cwd_and_matches(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    las = load_las()
    assert type(las).__name__ == "LAS"
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 50).tolist()
    xe, x, e = (rng.integers(0, 3, 50).tolist() for _ in range(3))
    got = las.compute(predictions=xe, x_predictions=x, e_predictions=e, references=y)
    assert got["las"] == pytest.approx(paper_las(xe, x, e, y))
    import evaluate

    direct = evaluate.load(las_module_path())
    assert direct.compute(predictions=xe, x_predictions=x, e_predictions=e, references=y) == got


def test_metric_docstring_examples_run():
    """Like evaluate's LocalModuleTest: run the doctests of _KWARGS_DESCRIPTION."""
    path = os.path.join(las_module_path(), "las.py")
    spec = importlib.util.spec_from_file_location("las_metric_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parser = doctest.DocTestParser()
    test = parser.get_doctest(module._KWARGS_DESCRIPTION, {}, "las._KWARGS_DESCRIPTION", path, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.failures == 0 and runner.tries >= 4
