"""LAS against the authors' compute_sim.py (re-implemented), the bootstrap vs row resampling, the calibrated k-bins
variant vs sklearn + pandas.cut, label types, and the evaluate module."""

from __future__ import annotations

import doctest
import importlib.util
import warnings

import numpy as np
import pandas as pd
import pytest

from scott_distill import load_las
from scott_distill.las import (
    calibrate_leakage_probabilities,
    las_module_path,
    leakage_adjusted_simulatability,
)
from scott_distill.las.formula import (
    equal_width_bins,
    las_from_cell_counts,
    las_from_correctness,
    simulator_correctness,
    validate_labels,
)


def las_dropping_empty_bins(xe, x, e, y):
    """compute_sim.py's statistic with one change: an EMPTY bin is dropped (LAS = the other bin's difference),
    where the authors' code gives NaN. The reference for the default ``empty_bin="other"``."""
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


def compute_sim_reference(xe, x, e, y):
    """Hase et al.'s compute_sim.py as it behaves (re-implemented from reading it): labels compared with pandas
    ``==`` (by value), the two bins' ``acc(x,e) - acc(x)`` from np.mean over index arrays (NaN for an empty bin),
    and their np.mean. Returns (unweighted mean, leaking diff, nonleaking diff)."""
    labels = pd.Series(list(y))
    xe_correct = np.array(1 * (labels == pd.Series(list(xe))))
    x_correct = np.array(1 * (labels == pd.Series(list(x))))
    e_correct = np.array(1 * (labels == pd.Series(list(e))))
    leaked = np.argwhere(e_correct.tolist()).reshape(-1)
    nonleaked = np.setdiff1d(np.arange(len(e_correct)), leaked)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # np.mean of an empty bin
        diffs = [np.mean(xe_correct[split]) - np.mean(x_correct[split]) for split in (leaked, nonleaked)]
        return float(np.mean(diffs)), float(diffs[0]), float(diffs[1])


def random_case(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    k = int(rng.integers(2, 5))
    y = rng.integers(0, k, n)
    xe, x = rng.integers(0, k, n), rng.integers(0, k, n)
    mode = seed % 4  # also all-leaked and none-leaked inputs
    e = y.copy() if mode == 1 else (y + 1) % k if mode == 2 else rng.integers(0, k, n)
    return xe, x, e, y


@pytest.mark.parametrize("seed", range(40))
def test_matches_paper_formula_on_random_vectors(seed):
    xe, x, e, y = random_case(seed)
    n = len(y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = leakage_adjusted_simulatability(xe, x, e, y)
    assert got["las"] == pytest.approx(las_dropping_empty_bins(xe, x, e, y), abs=1e-12)
    assert got["n_leaked"] + got["n_nonleaked"] == n
    assert got["n_leaked"] == int((e == y).sum())
    assert -1 <= got["las"] <= 1 and not np.isnan(got["las"])


@pytest.mark.parametrize("seed", range(40))
def test_authors_empty_bin_rule_matches_compute_sim_exactly(seed):
    """empty_bin="nan" reproduces compute_sim.py, NaN included (seeds 1 and 2 mod 4 leave a bin empty)."""
    xe, x, e, y = random_case(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = leakage_adjusted_simulatability(xe, x, e, y, empty_bin="nan")
    las, leaking, nonleaking = compute_sim_reference(xe, x, e, y)
    np.testing.assert_equal([got["las"], got["leaked_diff"], got["nonleaked_diff"]], [las, leaking, nonleaking])
    if seed % 4 in (1, 2):
        assert np.isnan(got["las"])


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


# The example: by value LAS is +0.5 (compute_sim.py, pandas ==); comparing float 1.0 with int 1 as
# different strings gave -0.5.
BASE = {"predictions": [1, 0, 1, 0], "x_predictions": [1, 1, 0, 0], "e_predictions": [1, 0, 0, 1],
        "references": [1, 0, 1, 0]}
ENCODINGS = {
    "float": lambda v: [float(a) for a in v],
    "bool": lambda v: [bool(a) for a in v],
    "numpy int8": lambda v: np.array(v, dtype=np.int8),
    "numpy float32": lambda v: np.array(v, dtype=np.float32),
    "numpy bool": lambda v: np.array(v, dtype=bool),
    "numpy scalars in a list": lambda v: [np.int64(a) for a in v],
    "string": lambda v: ["yes" if a else "no" for a in v],
    "numpy str": lambda v: np.array(["yes" if a else "no" for a in v]),
}
MIXED = {  # one encoding per argument
    "xe float, rest int": ("float", None, None, None),
    "refs bool, rest int": (None, None, None, "bool"),
    "all numeric kinds": ("numpy float32", "bool", "numpy scalars in a list", "float"),
    "str and numpy str": ("numpy str", "string", "string", "numpy str"),
}


def _encode(spec):
    names = list(BASE)
    return {k: (ENCODINGS[enc](BASE[k]) if enc else BASE[k]) for k, enc in zip(names, spec)}


@pytest.mark.parametrize("case", [*ENCODINGS, *MIXED])
def test_labels_compare_by_value_in_both_entry_points(case):
    spec = MIXED.get(case, (case,) * 4)
    inputs = _encode(spec)
    pure = leakage_adjusted_simulatability(**inputs)
    assert pure["las"] == pytest.approx(0.5) and pure["n_leaked"] == 2
    assert pure["las"] == pytest.approx(compute_sim_reference(inputs["predictions"], inputs["x_predictions"],
                                                              inputs["e_predictions"], inputs["references"])[0])
    module = load_las().compute(**inputs)
    assert module == pure


def test_numbers_and_strings_are_never_mixed():
    inputs = {**BASE, "references": ["1", "0", "1", "0"]}
    with pytest.raises(ValueError, match="mix numbers .* and strings"):
        leakage_adjusted_simulatability(**inputs)
    with pytest.raises(ValueError, match="mix numbers .* and strings"):
        load_las().compute(**inputs)
    with pytest.raises(ValueError, match="mix numbers"):  # within one column too
        leakage_adjusted_simulatability(**{**BASE, "predictions": [1, "0", 1, 0]})
    with pytest.raises(ValueError, match=r"`x_predictions`\[1\] is NaN"):
        leakage_adjusted_simulatability(**{**BASE, "x_predictions": [1.0, float("nan"), 0.0, 0.0]})
    with pytest.raises(ValueError, match="labels must be numbers, strings or None"):
        leakage_adjusted_simulatability(**{**BASE, "predictions": [b"1", b"0", b"1", b"0"]})
    # a non-integer label keeps its value through the evaluate module (int64 features truncated 1.5 to 1)
    odd = {**BASE, "predictions": [1.5, 0, 1, 0]}
    assert load_las().compute(**odd) == leakage_adjusted_simulatability(**odd)


def test_numbers_and_strings_are_never_mixed_across_batches():
    """`evaluate` casts every batch to the feature set of the first: strings added after numbers became numbers
    ("1" == 1) without a word. The label rule holds over the batches of one computation."""
    module = load_las()
    module.add_batch(predictions=[1, 0], x_predictions=[1, 0], e_predictions=[1, 1], references=[1, 0])
    with pytest.raises(ValueError, match="mix numbers .* and strings"):
        module.add_batch(predictions=["1"], x_predictions=["0"], e_predictions=["1"], references=["1"])
    with pytest.raises(ValueError, match="mix numbers .* and strings"):
        module.add(prediction="1", x_predictions="0", e_predictions="1", reference="1")
    with pytest.raises(ValueError, match="mix numbers .* and strings"):
        module.compute(predictions=["1"], x_predictions=["0"], e_predictions=["1"], references=["1"])
    module.compute()  # the numbers added so far; the next computation may use strings
    module.add(prediction="a", x_predictions="a", e_predictions="b", reference="a")
    with pytest.raises(ValueError, match="mix numbers .* and strings"):
        module.add(prediction=1.0, x_predictions=1, e_predictions=0, reference=1)
    module.compute()
    assert module.compute(**BASE) == leakage_adjusted_simulatability(**BASE)


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


def row_resampling_loop(xe, x, e, y, boots, seed, empty_bin):
    """The original bootstrap: resample ROWS with replacement and apply the authors' statistic (the mean of the
    two bins' acc(x,e) - acc(x)) to each resample. Written on row indices, independently of the cell counts.
    ``empty_bin="nan"``: a resample with an empty bin gives NaN (compute_sim.py); "other": the other bin."""
    xe_c, x_c, leaked = np.asarray(xe) == np.asarray(y), np.asarray(x) == np.asarray(y), np.asarray(e) == np.asarray(y)
    idx = np.random.default_rng(seed).integers(0, len(y), (boots, len(y)))
    diffs = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for in_bin in (leaked[idx], ~leaked[idx]):
            size = in_bin.sum(1)
            diffs.append(((xe_c[idx] & in_bin).sum(1) - (x_c[idx] & in_bin).sum(1)) / size)
    diffs = np.stack(diffs, 1)
    return diffs.mean(1) if empty_bin == "nan" else np.nanmean(diffs, 1)


def unequal_bins(n=400, seed=3):
    """About 20 % leaked rows where x,e adds nothing, 80 % non-leaked rows where it adds ~0.35: the unweighted
    mean of the two bin differences (~0.17) is far from the pooled difference (~0.28)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    leaked = rng.random(n) < 0.2
    e = np.where(leaked, y, (y + 1) % 3)
    xe = np.where(rng.random(n) < np.where(leaked, 0.9, 0.85), y, (y + 2) % 3)
    x = np.where(rng.random(n) < np.where(leaked, 0.9, 0.5), y, (y + 2) % 3)
    return xe, x, e, y


@pytest.mark.parametrize("empty_bin", ["other", "nan"])
def test_bootstrap_matches_row_resampling_of_the_authors_statistic_with_unequal_bins(empty_bin):
    """The cell-count bootstrap has the distribution of resampling rows and applying the mean of the two bin
    differences. Unequal bins, so that a pooled statistic (all rows together) would be caught."""
    xe, x, e, y = unequal_bins()
    assert 0.15 < (e == y).mean() < 0.25
    ours = leakage_adjusted_simulatability(xe, x, e, y, bootstrap=20000, seed=0, empty_bin=empty_bin)
    boot = row_resampling_loop(xe, x, e, y, 20000, 1, empty_bin)
    assert not np.isnan(boot).any() and ours["bootstrap_resamples_with_empty_bin"] == 0
    low, high = np.percentile(boot, [2.5, 97.5])
    assert ours["las_std"] == pytest.approx(np.std(boot), rel=0.05)
    assert ours["las_ci_low"] == pytest.approx(low, abs=0.006)
    assert ours["las_ci_high"] == pytest.approx(high, abs=0.006)
    assert ours["las_bootstrap_mean"] == pytest.approx(np.mean(boot), abs=0.003)
    assert ours["las_ci_half_width"] == pytest.approx((high - low) / 2, abs=0.004)


def test_bootstrap_resamples_with_an_empty_bin_follow_the_chosen_rule():
    """One leaked row in 30: about (29/30)**30 = 36 % of the row resamples have no leaked row. The authors' code
    then gives NaN for the interval (np.quantile of a list holding NaN); the default drops the empty bin."""
    rng = np.random.default_rng(0)
    n = 30
    y = rng.integers(0, 2, n)
    e = 1 - y
    e[0] = y[0]
    xe = np.where(rng.random(n) < 0.8, y, 1 - y)
    x = np.where(rng.random(n) < 0.5, y, 1 - y)
    authors = row_resampling_loop(xe, x, e, y, 20000, 1, "nan")
    assert np.isnan(np.quantile(authors, [0.025, 0.975])).all()  # what compute_sim.py prints
    nan_rule = leakage_adjusted_simulatability(xe, x, e, y, bootstrap=20000, seed=0, empty_bin="nan")
    assert not np.isnan(nan_rule["las"])  # the full data has both bins
    for key in ("las_ci_low", "las_ci_high", "las_ci_half_width", "las_bootstrap_mean", "las_std"):
        assert np.isnan(nan_rule[key]), key
    default = leakage_adjusted_simulatability(xe, x, e, y, bootstrap=20000, seed=0)
    assert default["las"] == nan_rule["las"]
    dropped = row_resampling_loop(xe, x, e, y, 20000, 1, "other")
    assert default["bootstrap_resamples_with_empty_bin"] / 20000 == pytest.approx(np.isnan(authors).mean(), abs=0.015)
    assert default["bootstrap_resamples_with_empty_bin"] / 20000 == pytest.approx((29 / 30) ** 30, abs=0.015)
    low, high = np.percentile(dropped, [2.5, 97.5])
    assert default["las_ci_low"] == pytest.approx(low, abs=0.02)
    assert default["las_ci_high"] == pytest.approx(high, abs=0.02)
    assert default["las_std"] == pytest.approx(np.std(dropped), rel=0.05)


def test_bootstrap_seeded():
    args = ([1, 0, 1, 0, 1], [0, 0, 1, 1, 1], [1, 1, 0, 0, 1], [1, 0, 1, 0, 1])
    a = leakage_adjusted_simulatability(*args, bootstrap=500, seed=5)
    b = leakage_adjusted_simulatability(*args, bootstrap=500, seed=5)
    assert a == b


def authors_k_bins(xe, x, e, y, p, k):
    """causal_estimation.Rmd's calibrated LAS, from independent tools: glm(ye_correct ~ ye_prob, binomial) as an
    unpenalised sklearn logistic regression; OneR::bin(preds, nbins=k, method="length") as pandas.cut(preds, k)
    (both: k equal-width right-closed intervals over the range, ends widened by 0.1 %; at most k distinct
    values: one bin per value); LAS averaged over the observed bins (dplyr group_by drops empty ones)."""
    from sklearn.linear_model import LogisticRegression

    e_correct = (e == y).astype(int)
    fit = LogisticRegression(C=np.inf, tol=1e-12, max_iter=100_000).fit(p[:, None], e_correct)
    cal = fit.predict_proba(p[:, None])[:, 1]
    bins = pd.cut(cal, k) if len(np.unique(cal)) > k else cal
    df = pd.DataFrame({"bin": bins, "xe": xe == y, "x": x == y})
    return df.groupby("bin", observed=True).apply(lambda d: d["xe"].mean() - d["x"].mean()).mean(), cal


def leaky_case(n=600, seed=1):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    p = rng.beta(0.7, 0.7, n)  # the e-only simulator's probability of the reference label
    leaked = rng.random(n) < 1 / (1 + np.exp(-(5 * p - 3)))  # correctness rises with p, miscalibrated
    e = np.where(leaked, y, (y + 1) % 3)
    xe = np.where(rng.random(n) < 0.4 + 0.5 * p, y, (y + 2) % 3)  # helps more where e leaks more
    x = np.where(rng.random(n) < 0.6, y, (y + 2) % 3)
    return xe, x, e, y, p


@pytest.mark.parametrize("k", [2, 4, 10])
def test_k_bins_is_the_authors_calibrated_variant(k):
    xe, x, e, y, p = leaky_case()
    got = leakage_adjusted_simulatability(xe, x, e, y, e_probabilities=p, k_bins=k)
    want, cal = authors_k_bins(xe, x, e, y, p, k)
    assert got["las_k_bins"] == pytest.approx(want, abs=1e-9)
    np.testing.assert_allclose(calibrate_leakage_probabilities(p, e == y), cal, atol=1e-6)
    # the calibration matters here: equal-width bins of the RAW probabilities over [0, 1] give another number
    raw = np.minimum((p * k).astype(int), k - 1)
    raw_las = np.mean([(xe[raw == b] == y[raw == b]).mean() - (x[raw == b] == y[raw == b]).mean()
                       for b in np.unique(raw)])
    assert abs(raw_las - got["las_k_bins"]) > 1e-3


def test_k_bins_few_distinct_values_constant_correctness_and_separation(caplog):
    xe, x, e, y, _ = leaky_case(n=300, seed=2)
    p = np.choose(np.arange(300) % 3, [0.2, 0.5, 0.9])  # three distinct values, k=4: one bin per value
    got = leakage_adjusted_simulatability(xe, x, e, y, e_probabilities=p, k_bins=4)
    assert got["las_k_bins"] == pytest.approx(authors_k_bins(xe, x, e, y, p, 4)[0], abs=1e-9)
    # e-only always right: one bin, the overall difference
    got = leakage_adjusted_simulatability(xe, x, y, y, e_probabilities=np.linspace(0, 1, 300), k_bins=4)
    assert got["las_k_bins"] == pytest.approx(got["acc_xe"] - got["acc_x"])
    # probabilities that separate leaked from non-leaked rows: no finite fit; the fitted values are still ordered
    q = np.where(e == y, 0.6, 0.4) + np.linspace(0, 0.01, 300)
    with caplog.at_level("INFO", logger="scott_distill.las.formula"):
        cal = calibrate_leakage_probabilities(q, e == y)
    assert "did not converge" in caplog.text
    assert np.all(np.diff(cal[np.argsort(q)]) >= 0) and cal[e == y].min() > 0.99 and cal[e != y].max() < 0.01


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
    assert got["las"] == pytest.approx(las_dropping_empty_bins(xe, x, e, y))
    import evaluate

    direct = evaluate.load(las_module_path())
    assert direct.compute(predictions=xe, x_predictions=x, e_predictions=e, references=y) == got


def test_metric_docstring_examples_run():
    """Like evaluate's LocalModuleTest: run the doctests of _KWARGS_DESCRIPTION."""
    path = las_module_path()
    spec = importlib.util.spec_from_file_location("las_metric_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parser = doctest.DocTestParser()
    test = parser.get_doctest(module._KWARGS_DESCRIPTION, {}, "las._KWARGS_DESCRIPTION", path, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.failures == 0 and runner.tries >= 4


def test_formula_docstring_examples_run():
    import scott_distill.las.formula as formula

    failures, tries = doctest.testmod(formula, optionflags=doctest.ELLIPSIS)
    assert failures == 0 and tries >= 2


# ---- found by mutation testing (docs/testing.md): contracts the suite above did not pin down ----------------------

def test_error_messages_name_the_argument_and_what_was_expected():
    def message(**kw):
        args = {"predictions": [1, 0], "x_predictions": [1, 0], "e_predictions": [1, 0], "references": [1, 0]}
        with pytest.raises(ValueError) as err:
            leakage_adjusted_simulatability(**{**args, **kw})
        return str(err.value)

    assert message(empty_bin="drop") == "`empty_bin` must be one of ('other', 'nan'), got 'drop'."
    assert message(confidence_level=1.5) == "`confidence_level` must be in (0, 1), got 1.5."
    assert message(k_bins=0, e_probabilities=[0.2, 0.8]) == "`k_bins` must be an int >= 1, got 0."
    assert message(e_probabilities=[0.2]) == "`e_probabilities` must hold one probability in [0, 1] per row."
    assert message(references=[{"a": 1}, 0]) == ("`references`[0] is a dict ({'a': 1}); labels must be numbers, "
                                                  "strings or None.")
    assert message(x_predictions=np.array([1.0, np.nan])) == ("`x_predictions`[1] is NaN; a label must be a number, "
                                                               "a string or None.")
    assert message(references=["a", "b"]) == (
        "LAS labels mix numbers (first in `predictions`) and strings (first in `references`). Labels are compared "
        "by value and a number never equals a string (1 != '1'): convert one of them.")
    with pytest.raises(ValueError) as err:
        leakage_adjusted_simulatability([], [], [], [])
    assert str(err.value) == "`references` is empty: LAS needs at least one row."
    with pytest.raises(ValueError) as err:
        validate_labels({"references": np.zeros((2, 2))})
    assert str(err.value) == "`references` must be a flat sequence of labels, got shape (2, 2)."


@pytest.mark.parametrize("bad", [{"bootstrap": True}, {"confidence_level": 0.0}, {"confidence_level": 1.0},
                                 {"k_bins": 2.0, "e_probabilities": [0.2, 0.8]}])
def test_boundary_arguments_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        leakage_adjusted_simulatability([1, 0], [1, 0], [1, 0], [1, 0], **bad)


def test_one_k_bin_is_the_overall_difference_and_acc_e_is_the_e_only_accuracy():
    y = [0, 1, 1, 0, 1]
    r = leakage_adjusted_simulatability([0, 1, 0, 0, 1], [1, 1, 1, 0, 0], [0, 0, 1, 1, 1], y,
                                        e_probabilities=[0.1, 0.4, 0.5, 0.7, 0.9], k_bins=1)
    assert r["las_k_bins"] == pytest.approx(4 / 5 - 3 / 5)  # acc(x, e) - acc(x) over all rows
    assert r["acc_e"] == pytest.approx(3 / 5) and isinstance(r["acc_e"], float)


def test_numeric_and_text_numpy_columns_join_the_mixing_rule_unless_empty():
    with pytest.raises(ValueError, match="mix numbers"):
        validate_labels({"a": np.array([1, 2]), "b": ["x", "y"]})
    with pytest.raises(ValueError, match="mix numbers"):
        validate_labels({"a": np.array(["x", "y"]), "b": [1, 2]})
    # an empty column holds no label, so no kind: nothing to mix
    validate_labels({"a": np.array([], dtype=float), "b": ["x"]})
    validate_labels({"a": np.array([], dtype=str), "b": [1]})


def test_numpy_bytes_labels_compare_as_text():
    r = leakage_adjusted_simulatability(np.array([b"yes", b"no"]), ["no", "no"], ["yes", "yes"], ["yes", "no"])
    assert (r["acc_xe"], r["acc_x"], r["acc_e"]) == (1.0, 0.5, 0.5)


def test_simulator_correctness_returns_boolean_vectors():
    # object arrays of Python bools would turn `~correct` into -1/-2
    for correct in simulator_correctness(["a", "b"], ["a", "a"], ["b", "b"], ["a", "b"]):
        assert correct.dtype == bool
    xe, x, e = simulator_correctness(["a", "b"], ["a", "a"], ["b", "b"], ["a", "b"])
    assert (~x).tolist() == [False, True]


def test_las_from_correctness_defaults_and_integer_masks():
    xe, x, leaked = [1, 0, 1, 1, 0, 1], [0, 0, 1, 0, 0, 1], [1, 1, 0, 0, 0, 0]
    r = las_from_correctness(xe, x, leaked)  # 0/1 integers, not bools: `leaked` must still act as a mask
    assert r == {"las": pytest.approx(((1 / 2 - 0) + (2 / 4 - 1 / 4)) / 2), "leaked_diff": 0.5,
                 "nonleaked_diff": 0.25, "n_leaked": 2, "n_nonleaked": 4}
    with_ci = las_from_correctness(xe, x, leaked, bootstrap=50)
    assert with_ci == las_from_correctness(np.array(xe, bool), np.array(x, bool), np.array(leaked, bool),
                                           bootstrap=50, seed=0, confidence_level=0.95, empty_bin="other")
    full = [0, 1, 1, 0]
    assert leakage_adjusted_simulatability(full, [1, 1, 0, 0], [0, 0, 0, 1], [0, 1, 1, 1], bootstrap=30) == \
        leakage_adjusted_simulatability(full, [1, 1, 0, 0], [0, 0, 0, 1], [0, 1, 1, 1], bootstrap=30, seed=0)
    # k_bins defaults to 4: the data of the calibrated-variant test, where 4 and 5 bins give different numbers
    xe, x, e, y, p = leaky_case()
    default = leakage_adjusted_simulatability(xe, x, e, y, e_probabilities=p)["las_k_bins"]
    assert default == leakage_adjusted_simulatability(xe, x, e, y, e_probabilities=p, k_bins=4)["las_k_bins"]
    assert default != leakage_adjusted_simulatability(xe, x, e, y, e_probabilities=p, k_bins=5)["las_k_bins"]


@pytest.mark.parametrize("empty_bin", ["other", "nan"])
@pytest.mark.parametrize("which", ["leaked", "non-leaked"])
def test_empty_bin_warning_text_and_no_numpy_warning(empty_bin, which):
    e = [1, 1, 1] if which == "non-leaked" else [0, 0, 0]
    consequence = "LAS is NaN (empty_bin='nan')" if empty_bin == "nan" else "LAS is the other bin's difference"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        leakage_adjusted_simulatability([1, 0, 1], [0, 0, 1], e, [1, 1, 1], bootstrap=200, empty_bin=empty_bin)
    assert [str(w.message) for w in caught] == [f"LAS: the {which} bin is empty; {consequence}."]
    assert caught[0].category is UserWarning


def test_cell_counts_give_both_bin_differences():
    counts = np.zeros((1, 2, 2, 2))
    counts[0, 1, 1, 0] = 3  # leaked: 3 rows xe right, x wrong; 1 row both right -> diff 3/4
    counts[0, 1, 1, 1] = 1
    counts[0, 0, 0, 1] = 2  # non-leaked: 2 rows x right only, 2 rows both wrong -> diff -2/4
    counts[0, 0, 0, 0] = 2
    las, leaked_diff, nonleaked_diff = las_from_cell_counts(counts, "other")
    assert (leaked_diff[0], nonleaked_diff[0], las[0]) == (0.75, -0.5, 0.125)


def test_bootstrap_interval_is_the_percentile_interval_of_its_samples():
    # two resamples s0 < s1 (recovered from their mean and std): np.percentile interpolates linearly between them
    xe, x, e, y = random_case(3)
    r = leakage_adjusted_simulatability(xe, x, e, y, bootstrap=2, seed=1, confidence_level=0.9)
    s0, s1 = r["las_bootstrap_mean"] - r["las_std"], r["las_bootstrap_mean"] + r["las_std"]
    assert s1 > s0
    assert r["las_ci_low"] == pytest.approx(s0 + 0.05 * (s1 - s0), abs=1e-12)
    assert r["las_ci_high"] == pytest.approx(s0 + 0.95 * (s1 - s0), abs=1e-12)


def test_resamples_with_an_empty_bin_are_counted_exactly():
    # 3 rows, 1 leaked: a resample empties a bin when it draws the leaked row 0 or 3 times: P = 8/27 + 1/27 = 1/3
    r = leakage_adjusted_simulatability([1, 0, 1], [0, 0, 1], [1, 0, 0], [1, 1, 1], bootstrap=4000, seed=5)
    assert r["bootstrap_resamples_with_empty_bin"] / 4000 == pytest.approx(1 / 3, abs=0.03)


def test_exactly_k_distinct_values_get_one_bin_each():
    # equal-width bins would put 0, 0.1 and 0.2 together; k distinct values keep one bin per value
    assert equal_width_bins(np.array([0.0, 0.1, 0.2, 1.0, 0.1]), 4).tolist() == [0, 1, 2, 3, 1]


def test_calibration_of_constant_correctness_is_that_constant_for_every_row():
    assert calibrate_leakage_probabilities([0.3, 0.9, 0.5], [1, 1, 1]).tolist() == [1.0, 1.0, 1.0]
    assert calibrate_leakage_probabilities([0.3], [0]).tolist() == [0.0]
