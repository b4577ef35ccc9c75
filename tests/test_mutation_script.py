"""scripts/mutation.py: the pieces that turn mutmut's results into the numbers docs/testing.md reports."""

from __future__ import annotations

import fnmatch
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "mutation.py"


@pytest.fixture(scope="module")
def mutation():
    spec = importlib.util.spec_from_file_location("mutation_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("k", "n"), [(14, 14), (13, 14), (11, 14), (9, 14), (0, 5), (550, 552)])
def test_wilson_interval_matches_scipy(mutation, k, n):
    """The sample estimates' intervals (docs/testing.md) against SciPy's Wilson interval."""
    from scipy.stats import binomtest

    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = mutation.wilson_interval(k, n)
    assert lo == pytest.approx(ref.low, abs=1e-6) and hi == pytest.approx(ref.high, abs=1e-6)


NAMES = [
    "scott_distill.student.evaluation.x_predict__mutmut_3",
    "scott_distill.student.evaluation.x_predict_batch__mutmut_1",
    "scott_distill.teacher.scoring.x_check_alpha__mutmut_2",
    "scott_distill.teacher.processor.x\u01c1ContrastiveRationaleLogitsProcessor\u01c1__call____mutmut_25",
    "scott_distill.teacher.processor.x\u01c1ContrastiveRationaleLogitsProcessor\u01c1_start__mutmut_3",
]


def test_function_filter_selects_exactly_that_functions_mutants(mutation):
    """``run MODULE --functions NAME``: the pattern handed to mutmut matches the mutants of that function only (not
    those of a function whose name starts the same), and ``function_of`` reads a name back."""
    pattern = mutation.function_pattern("scott_distill.student.evaluation", "predict")
    assert [n for n in NAMES if fnmatch.fnmatchcase(n, pattern)] == [NAMES[0]]
    pattern = mutation.function_pattern("scott_distill.teacher.processor", "ContrastiveRationaleLogitsProcessor._start")
    assert [n for n in NAMES if fnmatch.fnmatchcase(n, pattern)] == [NAMES[4]]
    assert [mutation.function_of(n) for n in NAMES] == [
        "predict", "predict_batch", "check_alpha", "ContrastiveRationaleLogitsProcessor.__call__",
        "ContrastiveRationaleLogitsProcessor._start"]


def test_a_function_without_mutants_is_refused_by_name(mutation, monkeypatch):
    """mutmut only refuses a filter when no name matches; one misspelt name among several must not pass silently."""
    status = dict.fromkeys(NAMES, "killed")
    mutation._check_functions("evaluation", ["predict", "predict_batch"], status)
    with pytest.raises(SystemExit, match=r"no mutants of \['predcit'\] in scott_distill.student.evaluation"):
        mutation._check_functions("evaluation", ["predict", "predcit"], status)
    with pytest.raises(SystemExit, match="_start"):  # a method must be written Class.method
        mutation._check_functions("processor", ["_start"], status)


def test_workers_reach_mutmut_and_bad_counts_are_refused(mutation, monkeypatch, capsys):
    """``run --workers N`` hands N to mutmut's --max-children; 0, negatives and non-numbers are refused by name."""
    calls = []
    monkeypatch.setattr(mutation, "_prepare", lambda: None)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(mutation.subprocess, "call", lambda cmd, **kwargs: calls.append((cmd, kwargs["env"])) or 0)
    mutation._run(["a.*"], 2)
    mutation._run(["b.*"])
    assert [c[c.index("--max-children") + 1] for c, _ in calls] == ["2", "1"]
    assert calls[0][0][-1] == "a.*"
    # several workers get one torch thread each (2 x 2 threads would oversubscribe the 2 cores)
    assert [env.get("OMP_NUM_THREADS") for _, env in calls] == ["1", None]
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(SystemExit):
            mutation.main(["run", "formula", "--workers", bad])
        assert f"expected a whole number of workers >= 1, got '{bad}'" in capsys.readouterr().err


def test_functions_are_assigned_to_their_modules(mutation):
    """``--functions``: bare names with one module, ``MODULE:NAME`` with several; a module without names runs whole;
    a bare name among several modules, or a module that was not named, is refused."""
    assert mutation.functions_by_module(["trainer"], ["compute_loss"]) == {"trainer": ["compute_loss"]}
    assert mutation.functions_by_module(["scoring", "fused", "trainer"],
                                        ["fused:_decode", "trainer:CounterfactualTrainer.compute_loss"]) == {
        "scoring": [], "fused": ["_decode"], "trainer": ["CounterfactualTrainer.compute_loss"]}
    assert mutation.functions_by_module(["scoring"], None) == {"scoring": []}
    with pytest.raises(SystemExit, match="write MODULE:NAME, got '_decode'"):
        mutation.functions_by_module(["scoring", "fused"], ["_decode"])
    with pytest.raises(SystemExit, match="module 'evaluation' is not among the modules named"):
        mutation.functions_by_module(["fused"], ["evaluation:predict"])


def test_run_names_every_module_in_one_mutmut_run(mutation, monkeypatch):
    """Several modules and functions go to mutmut together (one clean test run), with whole-module patterns for
    modules without listed functions."""
    runs = []
    monkeypatch.setattr(mutation, "_run", lambda names, workers=1: runs.append((names, workers)))
    monkeypatch.setattr(mutation, "results", lambda: dict.fromkeys(NAMES, "killed"))
    monkeypatch.setattr(mutation, "print_score", lambda *a, **k: None)
    mutation.main(["run", "scoring", "evaluation", "--functions", "evaluation:predict", "--workers", "2"])
    assert runs == [(["scott_distill.teacher.scoring.*", "scott_distill.student.evaluation.x_predict__mutmut_*"], 2)]


def test_a_misspelt_function_is_refused_before_the_run_when_results_exist(mutation, monkeypatch, tmp_path):
    """With results in mutants/ (mutmut generates every module's mutants in any run), a misspelt name among several
    modules is refused before mutmut runs the other names' mutants (hours for a whole module), not after."""
    runs = []
    (tmp_path / "mutants").mkdir()
    monkeypatch.setattr(mutation, "ROOT", tmp_path)
    monkeypatch.setattr(mutation, "_run", lambda names, workers=1: runs.append(names))
    monkeypatch.setattr(mutation, "results", lambda: dict.fromkeys(NAMES, "killed"))
    monkeypatch.setattr(mutation, "print_score", lambda *a, **k: None)
    with pytest.raises(SystemExit, match=r"no mutants of \['chek_alpha'\] in scott_distill.teacher.scoring"):
        mutation.main(["run", "evaluation", "scoring", "--functions", "evaluation:predict", "scoring:chek_alpha"])
    assert runs == []
    mutation.main(["run", "evaluation", "scoring", "--functions", "evaluation:predict", "scoring:check_alpha"])
    assert runs == [["scott_distill.student.evaluation.x_predict__mutmut_*", "scott_distill.teacher.scoring.x_check_alpha__mutmut_*"]]


def test_all_with_functions_is_refused_and_a_module_named_twice_runs_once(mutation, monkeypatch):
    """``all`` with ``--functions`` would run every other module whole (hours); a module named twice is one module."""
    runs = []
    monkeypatch.setattr(mutation, "_run", lambda names, workers=1: runs.append(names))
    monkeypatch.setattr(mutation, "results", lambda: dict.fromkeys(NAMES, "killed"))
    monkeypatch.setattr(mutation, "print_score", lambda *a, **k: None)
    with pytest.raises(SystemExit, match="--functions cannot be combined with 'all'"):
        mutation.main(["run", "all", "--functions", "evaluation:predict"])
    assert runs == []
    mutation.main(["run", "evaluation", "evaluation", "--functions", "predict"])
    assert runs == [["scott_distill.student.evaluation.x_predict__mutmut_*"]]


def test_run_asks_mutmut_for_results_once_before_and_once_after(mutation, monkeypatch, tmp_path):
    """``mutmut results`` is a subprocess over every mutant: the names are checked once (before the run when mutants/
    holds results, after it otherwise) and the score reuses the results read after the run."""
    calls, runs, scored = [], [], []
    monkeypatch.setattr(mutation, "ROOT", tmp_path)
    monkeypatch.setattr(mutation, "_run", lambda names, workers=1: runs.append(names))
    monkeypatch.setattr(mutation, "results", lambda: calls.append(1) or dict.fromkeys(NAMES, "killed"))
    monkeypatch.setattr(mutation, "print_score", lambda table, **k: scored.append(table))
    mutation.main(["run", "scoring", "--functions", "check_alpha"])  # no mutants/ yet: checked after the run
    assert (len(calls), len(runs)) == (1, 1)
    assert scored[-1]["scoring"]["killed"] == 1
    with pytest.raises(SystemExit, match="no mutants of"):  # a misspelt name is still refused after the run
        mutation.main(["run", "scoring", "--functions", "chek_alpha"])
    (tmp_path / "mutants").mkdir()
    calls.clear()
    mutation.main(["run", "scoring", "--functions", "check_alpha"])
    assert len(calls) == 2


def test_survivors_rerun_timeouts_only_when_asked(mutation, monkeypatch, tmp_path):
    """``--survivors`` reruns survived mutants; ``--timeouts`` adds the timeouts, which a loaded machine makes and
    which count as killed; killed and equivalent mutants are never rerun."""
    (tmp_path / "mutants").mkdir()
    (tmp_path / "tests" / "mutation").mkdir(parents=True)
    equivalent = tmp_path / "tests" / "mutation" / "equivalent.txt"
    equivalent.write_text(NAMES[4] + "  # listed\n")
    status = dict(zip(NAMES, ["survived", "timeout", "killed", "segfault", "survived"]))
    runs = []
    monkeypatch.setattr(mutation, "ROOT", tmp_path)
    monkeypatch.setattr(mutation, "EQUIVALENT_FILE", equivalent)
    monkeypatch.setattr(mutation, "_run", lambda names, workers=1: runs.append(sorted(names)))
    monkeypatch.setattr(mutation, "results", lambda: status)
    monkeypatch.setattr(mutation, "print_score", lambda *a, **k: None)
    mutation.main(["run", "--survivors", "evaluation", "processor"])
    assert runs == [[NAMES[0]]]
    mutation.main(["run", "--survivors", "--timeouts", "evaluation", "processor"])
    assert runs[-1] == sorted([NAMES[0], NAMES[1], NAMES[3]])
    with pytest.raises(SystemExit, match="use it with --survivors"):
        mutation.main(["run", "--timeouts", "evaluation"])
    assert len(runs) == 2
