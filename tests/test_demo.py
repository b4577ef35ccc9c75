"""`scott-distill demo`: the pipeline's invariants (files, ranges, schema, resume, determinism), not effect directions."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, replace

import pytest

from scott_distill.commands.demo import main as demo_main
from scott_distill.demo import pipeline
from scott_distill.demo.pipeline import COMPARISONS, DECODINGS, STUDENTS, DemoSettings, run_demo, seed_folder
from scott_distill.demo.world import PLACES, make_world
from scott_distill.report.runs import load_run

# the smallest settings that run the whole pipeline (teacher, three decodings, four students, simulators)
TINY = DemoSettings(quick=True, n_objects=12, n_train=40, n_test=30, teacher_corpus=300, teacher_epochs=2.0,
                    student_epochs=2.0, simulator_epochs=1.0, teacher_width=32, width=32)
STUDENT_METRICS = {"accuracy", "accuracy_anti_shortcut", "counterfactual_consistency", "accuracy_perturbed_rationale"}
TEACHER_METRICS = {"supports_gold", "vacuous", "counterfactual_supports"}


def test_world_is_seeded_and_has_the_designed_shortcut():
    a, b = make_world(3), make_world(3)
    assert a.train == b.train and a.teacher_corpus == b.teacher_corpus
    assert make_world(4).train != a.train
    adjective_names_answer = [r["adjective"] == ["rusty", "dusty", "shiny", "soft"][PLACES.index(r["answer"])]
                              for r in a.train]
    assert 0.75 < sum(adjective_names_answer) / len(a.train) < 0.95
    assert not any(r["adjective"] == ["rusty", "dusty", "shiny", "soft"][PLACES.index(r["answer"])]
                   for r in a.anti_shortcut)
    row = a.train[0]
    assert a.judge(row["rationale"], row["answer"]) == "supports" and a.is_true(row["rationale"], row["object"])
    assert a.judge("Let us think about where such things are usually kept.", row["answer"]) == "vacuous"


def _fake_seed_results(settings: DemoSettings) -> dict:
    """A results.json as run_demo_seed writes it (all seven conditions), with made-up outcomes: for the resume and
    report path only."""
    rng = random.Random(settings.seed)
    conditions = {f"{s}/alpha={a}": "test" for s, a in STUDENTS} | {f"teacher:{d}": "train" for d in DECODINGS}
    per_question = {}
    for cond, split in conditions.items():
        metrics = TEACHER_METRICS if split == "train" else STUDENT_METRICS
        per_question[cond] = {m: {f"{split}-{i}": int(rng.random() < 0.6) for i in range(8)} for m in sorted(metrics)}
    return {"schema_version": 1, "kind": "demo", "seed": settings.seed, "labels": {"setting": "custom"},
            "metrics": {c: {m: sum(v.values()) / len(v) for m, v in pq.items()} for c, pq in per_question.items()},
            "per_question": per_question, "comparisons": [list(c) for c in COMPARISONS], "settings": asdict(settings)}


def _write_finished_seeds(folder, settings: DemoSettings, seeds) -> None:
    for seed in seeds:
        path = seed_folder(folder, seed) / "results.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(_fake_seed_results(replace(settings, seed=seed))))


def _no_training(*args, **kwargs):
    raise AssertionError("a finished seed was run again")


def test_finished_seeds_are_reused_and_reported_over(tmp_path, monkeypatch):
    """Resumable per seed: a seed folder with results.json for the same settings is not run again; the report
    over the seeds (table, PNG, numbers) is written by report_runs into the output folder, every condition."""
    settings = replace(TINY, quick=False)
    _write_finished_seeds(tmp_path, settings, (0, 1))
    monkeypatch.setattr(pipeline, "run_demo_seed", _no_training)
    results = run_demo(tmp_path, seeds=[0, 1], settings=settings, show_progress=False, n_resamples=200)
    assert set(results["seeds"]) == {0, 1} and not results["smoke"]
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    numbers = json.loads((tmp_path / "report.json").read_text())
    assert {(c["a"], c["b"]) for c in numbers["comparisons"]} == set(COMPARISONS)
    assert all(c["n_seeds"] == 2 for c in numbers["comparisons"])
    assert (tmp_path / "report.txt").read_text().strip() == results["table"].strip()
    assert "SMOKE" not in results["table"]


def test_quick_setting_compares_the_teacher_and_labels_the_students_a_smoke_run(tmp_path, monkeypatch):
    """The README's command must not present the quick students' numbers (LAS +0.000 [+0.00, +0.00]) as results:
    the report compares the teacher decodings only; the students get a table labelled SMOKE RUN, without
    intervals or differences."""
    _write_finished_seeds(tmp_path, TINY, (0, 1))
    monkeypatch.setattr(pipeline, "run_demo_seed", _no_training)
    results = run_demo(tmp_path, seeds=[0, 1], settings=TINY, show_progress=False, n_resamples=200)
    assert results["smoke"]
    numbers = json.loads((tmp_path / "report.json").read_text())
    assert {c["condition"] for c in numbers["cells"]} == {f"teacher:{d}" for d in DECODINGS}
    assert {(c["a"], c["b"]) for c in numbers["comparisons"]} == {c for c in COMPARISONS if c[0].startswith("teacher:")}
    teacher_part, student_part = results["table"].split("Students: SMOKE RUN")
    assert "Paired differences" in teacher_part
    assert "[" not in student_part and "CI" not in student_part and "+0.000" not in student_part
    for s, a in STUDENTS:
        assert f"{s}/alpha={a}" in student_part


@pytest.mark.parametrize("seeds", [[], [1, 1], ["0"]])
def test_seeds_must_be_distinct_integers(tmp_path, seeds):
    with pytest.raises(ValueError, match="`seeds`"):
        run_demo(tmp_path, seeds=seeds, show_progress=False)


@pytest.mark.slow
def test_tiny_demo_two_seeds_writes_schema_1_with_per_question_outcomes(tmp_path, monkeypatch):
    """Two seeds on the smallest settings, end to end through the Python API: each seed's results.json is results
    schema 1 (the report's reader accepts it: aggregates equal their per-question outcomes), students are measured
    on the same question ids (pairable), and a second call reuses both seeds and writes the same report."""
    first = run_demo(tmp_path, seeds=[0, 1], settings=TINY, show_progress=False, n_resamples=200)
    for seed in (0, 1):
        path = seed_folder(tmp_path, seed) / "results.json"
        run = load_run(path)  # refuses a file whose aggregates disagree with its per-question outcomes
        assert run.seed == seed and run.kind == "demo" and run.labels == {"setting": "custom"}
        assert run.comparisons == COMPARISONS
        students = [c for c in run.metrics if not c.startswith("teacher:")]
        assert len(students) == 4 and len(run.metrics) == 7
        for cond in students:
            assert STUDENT_METRICS <= set(run.per_question[cond])
            assert set(run.per_question[cond]["accuracy"]) == {f"test-{i}" for i in range(TINY.n_test)}
            assert set(run.per_question[cond]["accuracy_anti_shortcut"]) == {f"anti-{i}" for i in range(TINY.n_test)}
            for cell in run.per_question[cond].get("las", {}).values():
                assert len(cell) == 3 and set(cell) <= {0, 1}
        for cond in ("teacher:greedy", "teacher:contrastive_empty", "teacher:contrastive_wrong"):
            assert set(run.per_question[cond]) == TEACHER_METRICS
            assert set(run.per_question[cond]["vacuous"]) == {f"train-{i}" for i in range(TINY.n_train)}
    assert "seeds" in first["table"] and (tmp_path / "report.png").exists()
    monkeypatch.setattr(pipeline, "run_demo_seed", _no_training)
    again = run_demo(tmp_path, seeds=[0, 1], settings=TINY, show_progress=False, n_resamples=200)
    assert again["table"] == first["table"]


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, capsys):
    """The README's command on one seed, twice from scratch: the same figures (determinism)."""
    assert demo_main(["--quick", "--output", str(tmp_path / "a"), "--seeds", "0", "--n_resamples", "200"]) == 0
    results = json.loads((seed_folder(tmp_path / "a", 0) / "results.json").read_text())
    assert (tmp_path / "a" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results["labels"] == {"setting": "quick"}
    for cond, m in results["metrics"].items():
        assert all(0 <= v <= 1 for k, v in m.items() if k != "las"), cond
        assert -1 <= m.get("las", 0) <= 1
    out = capsys.readouterr().out
    assert "teacher:contrastive_wrong" in out and "Paired differences" in out
    demo_main(["--quick", "--output", str(tmp_path / "b"), "--seed", "0", "--n_resamples", "200"])
    second = json.loads((seed_folder(tmp_path / "b", 0) / "results.json").read_text())
    assert second["metrics"] == results["metrics"] and second["per_question"] == results["per_question"]
