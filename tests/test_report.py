"""`scott_distill.report`: synthetic results files in tmp dirs -> one table and one PNG whose numbers are the
stats module's; pre-schema (aggregate-only) files give the degraded table; bad input gives clear errors."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest

from scott_distill.commands.report import main as report_main
from scott_distill.report.runs import RESULTS_SCHEMA_VERSION, collect_runs, find_result_files, load_run
from scott_distill.report.stats import (
    FINDING_RULE,
    describe_direction,
    paired_difference,
    seed_level_difference,
    seed_level_estimate,
    two_stage_estimate,
)
from scott_distill.report.tables import AGGREGATES_ONLY_NOTE, build_report, format_table

N_RESAMPLES = 2000
GREEDY, CONTRASTIVE = "greedy/alpha=0.0", "contrastive_wrong/alpha=0.0"
QUESTIONS = {0: 30, 1: 45, 2: 1}  # unequal, and a seed with a single question


def _outcomes(seed: int, p: float) -> tuple[dict, dict]:
    rng = random.Random(seed * 100 + int(p * 10))
    n = QUESTIONS[seed]
    acc = {f"test-{i}": int(rng.random() < p) for i in range(n)}
    las = {f"test-{i}": [int(rng.random() < 0.4), int(rng.random() < p + 0.2), int(rng.random() < 0.5)]
           for i in range(n)}
    return acc, las


def write_v1(folder: Path, seed: int, labels: dict | None = None, conditions=((GREEDY, 0.3), (CONTRASTIVE, 0.6)),
             state_aggregates: bool = True, overrides: dict | None = None) -> Path:
    per_question, metrics = {}, {}
    for cond, p in conditions:
        acc, las = _outcomes(seed, p)
        per_question[cond] = {"accuracy": acc, "las": las}
        metrics[cond] = {"accuracy": sum(acc.values()) / len(acc)} if state_aggregates else {}
    data = {"schema_version": RESULTS_SCHEMA_VERSION, "kind": "demo", "seed": seed,
            "labels": labels if labels is not None else {"setting": "full"}, "metrics": metrics,
            "per_question": per_question, "comparisons": [[CONTRASTIVE, GREEDY]]}
    data.update(overrides or {})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.json"
    path.write_text(json.dumps(data))
    return path


def write_legacy_demo(folder: Path, seed: int, quick: bool = False) -> Path:
    """Today's demo results.json: aggregates only (scott_distill.demo.pipeline.run_demo)."""
    rng = random.Random(seed)
    students = {f"{src}/alpha={a}": {"accuracy": rng.uniform(0.8, 0.9), "accuracy_anti_shortcut": rng.uniform(0, 0.4),
                                     "counterfactual_consistency": rng.uniform(0.95, 1),
                                     "accuracy_perturbed_rationale": rng.uniform(0.5, 0.7), "las": rng.uniform(-0.2, 0.1),
                                     "las_ci_low": -0.3, "las_ci_high": 0.2}
                for src in ("greedy", "contrastive_wrong") for a in (0.0, 0.5)}
    decoding = {name: {"supports_gold": rng.uniform(0.4, 1), "vacuous": rng.uniform(0, 0.5),
                       "counterfactual_supports": rng.uniform(0.4, 1)}
                for name in ("greedy", "contrastive_empty", "contrastive_wrong")}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.json"
    path.write_text(json.dumps({"settings": {"seed": seed, "quick": quick, "n_train": 400}, "decoding": decoding,
                                "students": students, "seconds": 200.0, "places": ["shed"]}))
    return path


def write_legacy_recipe(folder: Path, seed: int, alpha: float) -> Path:
    rng = random.Random(seed * 7 + int(alpha * 10))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run_summary.json"
    path.write_text(json.dumps({
        "args": {"task": "csqa", "teacher": "Qwen/Qwen2.5-7B-Instruct", "perturbation": "wrong", "decoding_alpha": 0.5,
                 "student": "google/flan-t5-large", "counterfactual_alpha": alpha, "seed": seed,
                 "output_dir": str(folder)},
        "rationales": {"train": 100, "eval": 50}, "student": str(folder / "student"),
        "metrics": {"n": 50, "accuracy": rng.uniform(0.5, 0.7), "unparseable": 0.0, "las": rng.uniform(0, 0.1),
                    "las_ci_low": -0.1, "n_leaked": 20}}))
    return path


def run(tmp_path: Path, *args: str) -> tuple[dict, str]:
    out = tmp_path / "report"
    assert report_main([*args, "--output_dir", str(out), "--n_resamples", str(N_RESAMPLES)]) == 0
    return json.loads((out / "report.json").read_text()), (out / "report.txt").read_text()


def _per_question(paths, cond, metric):
    return {json.loads(p.read_text())["seed"]: json.loads(p.read_text())["per_question"][cond][metric] for p in paths}


def _row(table: str, *cells: str) -> str:
    """The one line of the table's cell section (two cells given) or differences section (three) with ``cells``."""
    cell_part, _, diff_part = table.partition("Paired differences")
    section = cell_part if len(cells) == 2 else diff_part
    rows = [line for line in section.splitlines()
            if all(re.search(rf"(^|\s){re.escape(c)}(\s|$)", line) for c in cells)]
    assert len(rows) == 1, (cells, rows)
    return rows[0]


def _check_printed(row: str, e) -> None:
    """The table's printed numbers are the estimate's, rounded to 3 decimals."""
    sd = "n/a" if math.isnan(e.sd) else f"{e.sd:.3f}"
    assert f"{e.mean:.3f} ± {sd}".lstrip("+") in row.replace("+", "")
    if e.has_interval:
        assert f"[{e.ci_low:+.3f}, {e.ci_high:+.3f}]" in row
    else:
        assert " none " in row


# -- schema 1 -----------------------------------------------------------------------------------------------------

def test_table_and_json_numbers_are_the_stats_modules(tmp_path):
    paths = [write_v1(tmp_path / "runs" / f"seed_{s}", s) for s in QUESTIONS]
    numbers, table = run(tmp_path, str(tmp_path / "runs"))
    assert len(numbers["runs"]) == 3 and not numbers["aggregates_only"]
    cells = {(c["condition"], c["metric"]): c for c in numbers["cells"]}
    assert set(cells) == {(c, m) for c in (GREEDY, CONTRASTIVE) for m in ("accuracy", "las")}
    for (cond, metric), cell in cells.items():
        kind = "las" if metric == "las" else "mean"
        expected = two_stage_estimate(_per_question(paths, cond, metric), kind, N_RESAMPLES)
        assert (cell["mean"], cell["sd"], cell["ci_low"], cell["ci_high"]) == (
            expected.mean, expected.sd, expected.ci_low, expected.ci_high)
        assert cell["n_seeds"] == 3 and cell["n_questions"] == {"0": 30, "1": 45, "2": 1}
        assert cell["resampling"] == "seeds and questions" and cell["kind"] == kind
        row = _row(table, cond, metric)
        _check_printed(row, expected)
        assert row.split()[-3:] == ["seeds+questions", "3", "1-45"]
    assert len(numbers["comparisons"]) == 2
    for comp in numbers["comparisons"]:
        assert (comp["a"], comp["b"]) == (CONTRASTIVE, GREEDY)
        kind = "las" if comp["metric"] == "las" else "mean"
        expected = paired_difference(_per_question(paths, CONTRASTIVE, comp["metric"]),
                                     _per_question(paths, GREEDY, comp["metric"]), kind, N_RESAMPLES)
        assert (comp["mean"], comp["sd"], comp["ci_low"], comp["ci_high"]) == (
            expected.mean, expected.sd, expected.ci_low, expected.ci_high)
        assert comp["direction"] == describe_direction(expected, CONTRASTIVE, GREEDY)
        row = _row(table, CONTRASTIVE, GREEDY, comp["metric"])
        assert f"{expected.mean:+.3f} ± {expected.sd:.3f}" in row and f"[{expected.ci_low:+.3f}, " in row
        assert row.rstrip().endswith(describe_direction(expected))
    assert FINDING_RULE in table and "Aggregates only" not in table
    found = sum(c["ci_low"] > 0 or c["ci_high"] < 0 for c in numbers["comparisons"])
    assert (f"{found} of 2 difference intervals exclude 0; if no condition differed, about 0.1 would by chance "
            "(the intervals are 95% each, not adjusted for multiple comparisons)") in table


def test_png_is_written_and_not_blank(tmp_path):
    for s in QUESTIONS:
        write_v1(tmp_path / "runs" / f"seed_{s}", s)
    run(tmp_path, str(tmp_path / "runs"))
    png = tmp_path / "report" / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(str(png))
    assert image.shape[0] > 200 and image.shape[1] > 400
    rgb = image[..., :3]
    dark = (rgb.mean(axis=2) < 0.5).mean()  # text, axes, markers
    blue = ((rgb[..., 2] > 0.6) & (rgb[..., 0] < 0.3)).sum()  # the interval bars
    assert 0.005 < dark < 0.5 and blue > 100


def test_per_question_only_metrics_get_their_aggregate_from_the_outcomes(tmp_path):
    paths = [write_v1(tmp_path / f"s{s}", s, state_aggregates=False) for s in (0, 1)]
    run_set = collect_runs([load_run(p) for p in paths])
    values = {s: run_set.conditions[GREEDY].runs[s].metrics[GREEDY]["las"] for s in (0, 1)}
    for s, p in zip((0, 1), paths):
        assert values[s] == two_stage_estimate({s: _per_question([p], GREEDY, "las")[s]}, "las", 10).mean


def test_runs_with_different_teachers_are_named_by_their_labels(tmp_path):
    for teacher in ("qwen-7b", "llama-8b"):
        for s in (0, 1):
            write_v1(tmp_path / teacher / f"seed_{s}", s, labels={"teacher": teacher, "task": "csqa"},
                     conditions=((GREEDY, 0.3 if teacher == "qwen-7b" else 0.5), (CONTRASTIVE, 0.6)))
    numbers, table = run(tmp_path, str(tmp_path / "qwen-7b"), str(tmp_path / "llama-8b"),
                         "--compare", f"{GREEDY} (teacher=llama-8b)", f"{GREEDY} (teacher=qwen-7b)",
                         "--metrics", "accuracy")
    names = {c["condition"] for c in numbers["cells"]}
    assert names == {f"{c} (teacher={t})" for c in (GREEDY, CONTRASTIVE) for t in ("qwen-7b", "llama-8b")}
    assert {c["metric"] for c in numbers["cells"]} == {"accuracy"}  # task=csqa is shared: not in the names
    (comp,) = numbers["comparisons"]
    assert (comp["a"], comp["b"], comp["metric"]) == (f"{GREEDY} (teacher=llama-8b)", f"{GREEDY} (teacher=qwen-7b)",
                                                      "accuracy")
    # without --compare: the files' own comparison, once per teacher
    default = build_report(collect_runs([load_run(p) for p in find_result_files([tmp_path])]), n_resamples=50)
    assert sorted((c.a, c.b) for c in default.comparisons if c.metric == "accuracy") == sorted(
        (f"{CONTRASTIVE} (teacher={t})", f"{GREEDY} (teacher={t})") for t in ("llama-8b", "qwen-7b"))


def test_a_metric_without_per_question_outcomes_is_reported_as_aggregate_only(tmp_path):
    paths = []
    for s in (0, 1, 2):
        p = write_v1(tmp_path / f"s{s}", s)
        data = json.loads(p.read_text())
        for cond in data["metrics"]:
            data["metrics"][cond]["vacuous"] = 0.1 * s
        p.write_text(json.dumps(data))
        paths.append(p)
    report = build_report(collect_runs([load_run(p) for p in paths]), n_resamples=N_RESAMPLES)
    vacuous = [c for c in report.cells if c.metric == "vacuous"]
    assert {c.kind for c in vacuous} == {"aggregate"} and not report.aggregates_only
    assert vacuous[0].estimate == seed_level_estimate({0: 0.0, 1: 0.1, 2: 0.2}, N_RESAMPLES)
    text = format_table(report)
    assert "Metrics ['vacuous'] (rows resampled = 'seeds only')" in text
    assert "seeds only" in _row(text, GREEDY, "vacuous")
    comp = [c for c in report.comparisons if c.metric == "vacuous"][0]
    assert not comp.estimate.has_interval and comp.direction == "not assessed (no interval)"


# -- pre-schema files: aggregates only ---------------------------------------------------------------------------

def test_pre_schema_demo_results_give_the_degraded_table(tmp_path):
    paths = [write_legacy_demo(tmp_path / f"seed_{s}", s) for s in range(3)]
    numbers, table = run(tmp_path, *[str(p.parent) for p in paths])
    assert numbers["aggregates_only"] and AGGREGATES_ONLY_NOTE in table
    assert all(c["kind"] == "aggregate" and c["resampling"] == "seeds" for c in numbers["cells"])
    data = [json.loads(p.read_text()) for p in paths]
    cell = next(c for c in numbers["cells"] if c["condition"] == "greedy/alpha=0.5"
                and c["metric"] == "accuracy_anti_shortcut")
    expected = seed_level_estimate({s: d["students"]["greedy/alpha=0.5"]["accuracy_anti_shortcut"]
                                    for s, d in enumerate(data)}, N_RESAMPLES)
    assert (cell["mean"], cell["sd"], cell["ci_low"], cell["ci_high"]) == (
        expected.mean, expected.sd, expected.ci_low, expected.ci_high)
    _check_printed(_row(table, "greedy/alpha=0.5", "accuracy_anti_shortcut"), expected)
    assert "seeds only" in _row(table, "greedy/alpha=0.5", "accuracy_anti_shortcut")
    assert not any(c["metric"].startswith("las_ci") for c in numbers["cells"])
    teacher = next(c for c in numbers["cells"] if c["condition"] == "teacher:contrastive_wrong")
    assert teacher["metric"] == "supports_gold"
    # the method's comparisons, per seed, without interval or finding
    comp = next(c for c in numbers["comparisons"] if c["a"] == "contrastive_wrong/alpha=0.0"
                and c["b"] == "greedy/alpha=0.0" and c["metric"] == "las")
    expected = seed_level_difference({s: d["students"]["contrastive_wrong/alpha=0.0"]["las"] for s, d in enumerate(data)},
                                     {s: d["students"]["greedy/alpha=0.0"]["las"] for s, d in enumerate(data)})
    assert comp["mean"] == expected.mean and comp["sd"] == expected.sd and math.isnan(comp["ci_low"])
    row = _row(table, "contrastive_wrong/alpha=0.0", "greedy/alpha=0.0", "las")
    assert " none " in row and row.endswith("not assessed (no interval)")
    assert "one seed" not in table


def test_one_pre_schema_demo_file_has_no_interval_at_all(tmp_path):
    path = write_legacy_demo(tmp_path / "demo_output", 0, quick=True)
    numbers, table = run(tmp_path, str(path))
    assert all(math.isnan(c["ci_low"]) and c["n_seeds"] == 1 for c in numbers["cells"])
    assert "One seed only" in table and "a one-seed result is not a finding" in table
    assert " none " in _row(table, "greedy/alpha=0.0", "las")


def test_pre_schema_recipe_runs_compare_across_runs(tmp_path):
    for alpha in (0.0, 0.5):
        for s in (0, 1, 2):
            write_legacy_recipe(tmp_path / f"alpha{alpha}" / f"seed{s}", s, alpha)
    numbers, table = run(tmp_path, str(tmp_path), "--compare", "student (counterfactual_alpha=0.5)",
                         "student (counterfactual_alpha=0.0)")
    assert {c["condition"] for c in numbers["cells"]} == {"student (counterfactual_alpha=0.0)",
                                                          "student (counterfactual_alpha=0.5)"}
    assert {c["metric"] for c in numbers["cells"]} == {"accuracy", "unparseable", "las"}
    assert all(c["n_seeds"] == 3 for c in numbers["cells"]) and AGGREGATES_ONLY_NOTE in table
    assert len(numbers["comparisons"]) == 3


# -- bad input ---------------------------------------------------------------------------------------------------

def test_no_runs(tmp_path):
    with pytest.raises(ValueError, match="`runs` is empty"):
        report_main(["--output_dir", str(tmp_path / "out")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no results.json .* in this folder or below"):
        report_main([str(tmp_path / "empty")])
    with pytest.raises(ValueError, match="no such file or folder"):
        report_main([str(tmp_path / "nowhere")])


def test_mixed_schema_versions_are_refused(tmp_path):
    new = write_v1(tmp_path / "new", 0)
    old = write_legacy_demo(tmp_path / "old", 1)
    with pytest.raises(ValueError, match=rf"mix results schema versions \({re.escape(str(old))} is pre-schema "
                                         rf"\(aggregates only\); {re.escape(str(new))} is schema 1\)"):
        report_main([str(new), str(old), "--output_dir", str(tmp_path / "out")])


def test_unknown_schema_version_and_non_results_files(tmp_path):
    p = write_v1(tmp_path / "a", 0, overrides={"schema_version": 2})
    with pytest.raises(ValueError, match=r"schema version 2 is not one this reader knows \(1,\)"):
        load_run(p)
    (tmp_path / "b.json").write_text('{"accuracy": 0.5}')
    with pytest.raises(ValueError, match="not a results file: it has no `schema_version`"):
        load_run(tmp_path / "b.json")
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(ValueError, match="c.json: not valid JSON"):
        load_run(tmp_path / "c.json")


@pytest.mark.parametrize("overrides, match", [
    ({"seed": "0"}, "`seed` must be an integer"),
    ({"kind": ""}, "`kind` must be a non-empty string"),
    ({"metrics": {}, "per_question": {}}, "`metrics` holds no condition"),
    ({"comparisons": [[CONTRASTIVE, "beam/alpha=0.0"]]}, r"`comparisons` names conditions \['beam/alpha=0.0'\]"),
    ({"comparisons": [CONTRASTIVE]}, "`comparisons` must be a list of"),
    ({"labels": {"teacher": ["a"]}}, "`labels` must map names to strings or numbers"),
])
def test_malformed_schema_1_fields(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        load_run(write_v1(tmp_path, 0, overrides=overrides))


def test_missing_fields_and_bad_outcomes(tmp_path):
    p = write_v1(tmp_path, 0)
    data = json.loads(p.read_text())
    del data["seed"]
    p.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"needs the top-level fields \['seed'\]"):
        load_run(p)
    data = json.loads(write_v1(tmp_path, 0).read_text())
    data["per_question"][GREEDY]["las"]["test-3"] = [1, 0]
    p.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"per_question\['{re.escape(GREEDY)}'\]\['las'\]: .*LAS cells of 0/1"):
        load_run(p)


def test_stated_aggregate_must_match_the_per_question_outcomes(tmp_path):
    p = write_v1(tmp_path, 1)
    data = json.loads(p.read_text())
    data["metrics"][GREEDY]["accuracy"] += 0.01
    p.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"metrics\['{re.escape(GREEDY)}'\]\['accuracy'\] is .* but the mean of "
                                         r".* \(45 questions\) is"):
        load_run(p)


def test_missing_metrics_are_named(tmp_path):
    paths = [write_v1(tmp_path / f"s{s}", s) for s in (0, 1)]
    with pytest.raises(ValueError, match=r"`metrics` names \['bleu'\], which no run holds; the runs hold "
                                         r"\['accuracy', 'las'\]"):
        report_main([str(tmp_path), "--metrics", "accuracy", "bleu", "--output_dir", str(tmp_path / "o")])
    data = json.loads(paths[1].read_text())
    del data["metrics"][GREEDY]["accuracy"], data["per_question"][GREEDY]["accuracy"]
    paths[1].write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"metric 'accuracy' of condition '{re.escape(GREEDY)}' is missing in "
                                         rf"seed\(s\) \[1\] \(.*s1/results.json\); it is present in seed\(s\) \[0\]"):
        report_main([str(tmp_path), "--output_dir", str(tmp_path / "o")])


def test_nan_aggregate_is_refused_with_a_way_out(tmp_path):
    for s in (0, 1):
        p = write_legacy_recipe(tmp_path / f"s{s}", s, 0.5)
        data = json.loads(p.read_text())
        data["metrics"]["las"] = float("nan") if s else 0.1
        p.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"metric 'las' of condition 'student' is NaN \(not measured\) in seed\(s\) "
                                         r"\[1\].*leave the metric out \(--metrics\)"):
        report_main([str(tmp_path), "--output_dir", str(tmp_path / "o")])
    numbers, _ = run(tmp_path, str(tmp_path), "--metrics", "accuracy")
    assert [c["metric"] for c in numbers["cells"]] == ["accuracy"]


def test_duplicate_seed_is_refused(tmp_path):
    a = write_v1(tmp_path / "a", 0)
    b = write_v1(tmp_path / "b", 0)
    with pytest.raises(ValueError, match=rf"has seed 0 twice: {re.escape(str(a))} and {re.escape(str(b))}"):
        report_main([str(a), str(b)])


def test_comparison_with_different_question_sets_names_the_ids(tmp_path):
    paths = [write_v1(tmp_path / f"s{s}", s) for s in (0, 1)]
    data = json.loads(paths[1].read_text())
    for metric in ("accuracy", "las"):
        data["per_question"][GREEDY][metric]["test-99"] = data["per_question"][GREEDY][metric].pop("test-7")
    data["metrics"][GREEDY]["accuracy"] = float(np.mean(list(data["per_question"][GREEDY]["accuracy"].values())))
    paths[1].write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"comparison '{re.escape(CONTRASTIVE)}' - '{re.escape(GREEDY)}' on "
                                         r"'accuracy': .*in seed 1: 1 question id\(s\) of `a` missing from `b`: "
                                         r"'test-7'; 1 question id\(s\) of `b` missing from `a`: 'test-99'"):
        report_main([str(tmp_path), "--output_dir", str(tmp_path / "o")])


def test_las_difference_is_taken_on_the_questions_both_sides_were_measured_on(tmp_path):
    """LAS excludes a student answer outside the choices, so two students' LAS cells can cover different questions
    (the full demo hits this): their paired LAS difference uses the shared questions of each seed, said in a note;
    the paired accuracy difference still refuses different ids."""
    paths = [write_v1(tmp_path / f"s{s}", s) for s in (0, 1)]
    data = json.loads(paths[1].read_text())
    del data["per_question"][GREEDY]["las"]["test-7"], data["per_question"][CONTRASTIVE]["las"]["test-3"]
    paths[1].write_text(json.dumps(data))
    runs = collect_runs([load_run(p) for p in paths])
    report = build_report(runs, metrics=["las"], n_resamples=N_RESAMPLES)
    (row,) = report.comparisons
    a, b = ({s: json.loads(p.read_text())["per_question"][c]["las"] for s, p in enumerate(paths)}
            for c in (CONTRASTIVE, GREEDY))
    shared = {s: set(a[s]) & set(b[s]) for s in a}
    expected = paired_difference({s: {q: a[s][q] for q in shared[s]} for s in a},
                                 {s: {q: b[s][q] for q in shared[s]} for s in b}, "las", N_RESAMPLES)
    assert (row.estimate.mean, row.estimate.ci_low, row.estimate.ci_high) == (
        expected.mean, expected.ci_low, expected.ci_high)
    assert row.estimate.n_questions == {0: QUESTIONS[0], 1: QUESTIONS[1] - 2}
    assert any("seed 1: 1 question(s) of A only, 1 of B only" in n for n in report.notes)
    assert not any("shared" in n for n in build_report(collect_runs([load_run(write_v1(tmp_path / "t0", 0))]),
                                                       metrics=["las"], n_resamples=100).notes)


def test_compare_arguments_are_checked(tmp_path):
    write_v1(tmp_path / "s0", 0)
    with pytest.raises(ValueError, match="`compare` takes pairs of condition names"):
        report_main([str(tmp_path), "--compare", GREEDY])
    with pytest.raises(ValueError, match=r"no condition 'beam'; the runs hold"):
        report_main([str(tmp_path), "--compare", "beam", GREEDY])


def test_conditions_select_cells_and_the_comparisons_between_them(tmp_path):
    """`--conditions` keeps only the named conditions, and only the declared comparisons between two of them."""
    beam = "beam/alpha=0.0"
    for seed in (0, 1):
        write_v1(tmp_path / f"s{seed}", seed, conditions=((GREEDY, 0.3), (CONTRASTIVE, 0.6), (beam, 0.5)))
    out = tmp_path / "out"
    assert report_main([str(tmp_path), "--conditions", beam, CONTRASTIVE, "--output", str(out),
                        "--n_resamples", "200"]) == 0
    numbers = json.loads((out / "report.json").read_text())
    assert {c["condition"] for c in numbers["cells"]} == {beam, CONTRASTIVE}
    assert numbers["comparisons"] == []  # the files declare contrastive - greedy only; greedy is left out
    report_main([str(tmp_path), "--conditions", GREEDY, CONTRASTIVE, "--output", str(out), "--n_resamples", "200"])
    assert {(c["a"], c["b"]) for c in json.loads((out / "report.json").read_text())["comparisons"]} == {
        (CONTRASTIVE, GREEDY)}
    with pytest.raises(ValueError, match=r"no condition 'sampling'"):
        report_main([str(tmp_path), "--conditions", "sampling", "--output", str(out)])


def test_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as exc:
        report_main(["--help"])
    assert exc.value.code == 0 and "--compare" in capsys.readouterr().out


def test_command_line_module(tmp_path):
    """The command as a user runs it (`scott-distill report`, a subprocess), positional run folders first,
    `--output` for the folder."""
    import subprocess
    import sys

    for s in (0, 1):
        write_v1(tmp_path / "runs" / f"seed_{s}", s)
    out = subprocess.run([sys.executable, "-m", "scott_distill", "report", str(tmp_path / "runs"), "--metrics", "las",
                          "--n_resamples", "300", "--output", str(tmp_path / "rep")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Paired differences A - B" in out.stdout and FINDING_RULE in out.stdout
    assert (tmp_path / "rep" / "report.png").stat().st_size > 10_000
    assert {c["metric"] for c in json.loads((tmp_path / "rep" / "report.json").read_text())["cells"]} == {"las"}
