"""Student seeds of a recipe (`scott-distill run RECIPE --seeds 0 1`): rationales generated once and shared, one
student per seed in ``seed_<s>/``, resumable per seed, every seed's ``results.json`` (results schema 1) and the
report over the seeds; and `scott-distill report` comparing recipe run folders (synthetic files)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from safetensors.torch import load_file
from test_recipes import write_recipe

import scott_distill.recipes as recipes
import scott_distill.teacher.rationalize as rationalize_module
from scott_distill.commands.report import main as report_main
from scott_distill.commands.run import main as run_main
from scott_distill.commands.run import make_parser
from scott_distill.recipes import RECIPE_CONDITION, Recipe, RecipeConfig
from scott_distill.report.runs import find_result_files, load_run, seed_folder, write_results

N_RESAMPLES = 500


# -- synthetic recipe runs -------------------------------------------------------------------------------------

def write_recipe_run(folder: Path, alpha: float, seeds=(0, 1, 2), p: float = 0.5, n: int = 40) -> Path:
    """A recipe run folder as `Recipe.run` lays it out with seeds: ``seed_<s>/results.json`` and, next to them,
    the run's own ``run_summary.json``."""
    for seed in seeds:
        rng = random.Random(seed * 1000 + int(alpha * 10))
        outcomes = {"accuracy": {f"q{i}": int(rng.random() < p) for i in range(n)},
                    "las": {f"q{i}": [int(rng.random() < 0.4), int(rng.random() < p), int(rng.random() < 0.5)]
                            for i in range(n)}}
        write_results(seed_folder(folder, seed) / "results.json", kind="recipe", seed=seed,
                      per_question={RECIPE_CONDITION: outcomes},
                      labels={"run": folder.name, "task": "cose", "counterfactual_alpha": alpha})
    (folder / "run_summary.json").write_text(json.dumps({"config": {"run": {"seeds": list(seeds)}}}))
    return folder


def report(tmp_path: Path, *args: str) -> tuple[dict, str]:
    out = tmp_path / "report"
    assert report_main([*args, "--output_dir", str(out), "--n_resamples", str(N_RESAMPLES)]) == 0
    return json.loads((out / "report.json").read_text()), (out / "report.txt").read_text()


def test_report_compares_recipe_run_folders_paired_by_seed(tmp_path):
    """Before: a recipe folder's own run_summary.json was taken instead of its seeds' results.json (and refused as
    not a results file), and runs declaring no comparison got no paired difference at all."""
    base = write_recipe_run(tmp_path / "alpha0", 0.0, p=0.3)
    cf = write_recipe_run(tmp_path / "alpha05", 0.5, p=0.8)
    assert find_result_files([base]) == [seed_folder(base, s).resolve() / "results.json" for s in (0, 1, 2)]
    numbers, table = report(tmp_path, str(base), str(cf))
    names = {c["condition"] for c in numbers["cells"]}
    first = "student (counterfactual_alpha=0.0, run=alpha0)"
    second = "student (counterfactual_alpha=0.5, run=alpha05)"
    assert names == {first, second}
    assert all(c["n_seeds"] == 3 and c["resampling"] == "seeds and questions" for c in numbers["cells"])
    # the later run minus the first one given, paired by seed and question, on every metric
    assert {(c["a"], c["b"], c["metric"]) for c in numbers["comparisons"]} == {
        (second, first, "accuracy"), (second, first, "las")}
    acc = next(c for c in numbers["comparisons"] if c["metric"] == "accuracy")
    assert acc["n_seeds"] == 3 and acc["ci_low"] > 0 and acc["resampling"] == "seeds and questions"
    cells = {c["condition"]: c for c in numbers["cells"] if c["metric"] == "accuracy"}
    assert acc["mean"] == pytest.approx(cells[second]["mean"] - cells[first]["mean"])
    assert "compared with the first one given" in table
    # the order given decides the baseline
    numbers, _ = report(tmp_path, str(cf), str(base))
    assert {(c["a"], c["b"]) for c in numbers["comparisons"]} == {(first, second)}


def test_report_does_not_pair_recipe_runs_with_different_seeds(tmp_path):
    base = write_recipe_run(tmp_path / "alpha0", 0.0, seeds=(0, 1, 2))
    other = write_recipe_run(tmp_path / "alpha05", 0.5, seeds=(3, 4))
    numbers, table = report(tmp_path, str(base), str(other))
    assert numbers["comparisons"] == []
    assert "their seeds differ from the first run's [0, 1, 2]" in table and "seeds [3, 4]" in table


def test_one_seed_recipe_report_says_it_is_no_finding(tmp_path):
    run = write_recipe_run(tmp_path / "one", 0.5, seeds=(7,))
    numbers, table = report(tmp_path, str(run))
    assert all(c["n_seeds"] == 1 for c in numbers["cells"]) and numbers["comparisons"] == []
    assert "a one-seed result is not a finding" in table


def test_report_reads_the_run_summary_of_a_recipe_run_made_before_results_json(tmp_path):
    """A recipe run made before recipes wrote results.json has only run_summary.json with the stage sections under
    `config`: read as aggregates only (before: refused as not a results file)."""
    for alpha in (0.0, 0.5):
        for seed in (0, 1):
            folder = tmp_path / f"alpha{alpha}-seed{seed}"
            folder.mkdir()
            (folder / "run_summary.json").write_text(json.dumps({
                "config": {"run": {"task": "cose", "teacher": "t", "student": "s", "seeds": None},
                           "rationalize": {"perturbation": "wrong", "alpha": 0.5},
                           "train": {"counterfactual_alpha": alpha, "seed": seed}, "evaluate": {}, "las": {}},
                "rationales": {"train": 8, "eval": 4}, "student": str(folder / "student"),
                "metrics": {"n": 4, "accuracy": 0.25 + alpha / 2 + seed / 10, "las": float("nan")}}))
    numbers, table = report(tmp_path, str(tmp_path), "--metrics", "accuracy")  # LAS NaN: not measured
    assert {(c["condition"], c["n_seeds"], c["resampling"]) for c in numbers["cells"]} == {
        ("student (counterfactual_alpha=0.0)", 2, "seeds"), ("student (counterfactual_alpha=0.5)", 2, "seeds")}
    (diff,) = numbers["comparisons"]  # alpha=0.5 - alpha=0.0 on accuracy, aggregates only: no interval
    assert diff["metric"] == "accuracy" and diff["mean"] == pytest.approx(0.25)
    summary = tmp_path / "many.json"
    summary.write_text(json.dumps({"config": {"run": {"task": "cose", "seeds": [0, 1]}}, "seeds": {}}))
    with pytest.raises(ValueError, match="several student seeds: give its folder"):
        load_run(summary)


def test_write_results_refuses_what_the_reader_would_refuse(tmp_path):
    path = tmp_path / "results.json"
    with pytest.raises(ValueError, match=r"metrics\['student'\]\['accuracy'\] is 0.9 but the mean"):
        write_results(path, kind="recipe", seed=0, per_question={"student": {"accuracy": {"a": 1, "b": 0}}},
                      metrics={"student": {"accuracy": 0.9}})
    with pytest.raises(ValueError, match="`seed` must be an integer"):
        write_results(path, kind="recipe", seed="0", per_question={"student": {"accuracy": {"a": 1}}})
    assert not path.exists()
    written = write_results(path, kind="recipe", seed=0, per_question={"student": {"accuracy": {"a": 1, "b": 0}}})
    assert written["metrics"] == {"student": {"accuracy": 0.5}} and load_run(path).metrics == written["metrics"]


# -- seeds in the recipe's configuration -------------------------------------------------------------------------

def test_each_seed_gets_its_own_folder_training_and_simulator_seed():
    config = RecipeConfig.from_dict({"task": "cose", "output_dir": "runs/x", "seeds": [3, 5],
                                     "train": {"seed": 1, "report_to": "none"}, "las": {"seed": 2},
                                     "evaluate": {"seed": 9}})
    recipe = Recipe(config)
    assert list(recipe.students) == [3, 5]
    for seed, student in recipe.students.items():
        assert student.folder == Path("runs/x") / f"seed_{seed}"
        assert (student.train.seed, student.las.seed) == (seed, seed)
        assert student.train.output_dir == f"runs/x/seed_{seed}/checkpoints"
        assert student.las.output_dir == f"runs/x/seed_{seed}/simulator"
    # the recipe's own sections are left as they were; the evaluation's perturbation seed is the same for all
    assert (config.train.seed, config.las.seed, config.evaluate.seed) == (1, 2, 9)
    assert config.train.output_dir == "runs/x/checkpoints"
    # without seeds: one student with the train section's seed, in output_dir itself (the layout before seeds)
    plain = Recipe(RecipeConfig.from_dict({"task": "cose", "output_dir": "runs/x", "train": {"seed": 1}}))
    (student,) = plain.students.values()
    assert (student.seed, student.folder, student.train) == (1, Path("runs/x"), plain.config.train)
    assert plain.student_dir == Path("runs/x/student") and plain.metrics_path == Path("runs/x/eval/metrics.json")


@pytest.mark.parametrize("seeds", [[], [1, 1], [True]])
def test_bad_seeds_are_refused(seeds):
    with pytest.raises(ValueError, match="--seeds must be distinct integers"):
        RecipeConfig.from_dict({"task": "cose", "seeds": seeds})


def test_push_needs_one_seed():
    recipe = Recipe(RecipeConfig.from_dict({"task": "cose", "seeds": [0, 1], "student_repo": "o/s",
                                            "dataset_repo": "o/d"}))
    with pytest.raises(ValueError, match=r"push takes one student.*--seeds S"):
        recipe.push()


def test_seeds_flag_and_yaml_key(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("task: cose\nseeds: [4, 2]\n")
    assert make_parser().parse_recipe([str(path)]).run.seeds == [4, 2]
    assert make_parser().parse_recipe([str(path), "--seeds", "0", "1", "2"]).run.seeds == [0, 1, 2]


def test_recipe_summary_leaves_out_a_metric_some_seeds_lack(tmp_path, caplog):
    """LAS is not measured in a seed whose student never answered with a choice: the summary over the seeds leaves
    it out with a note instead of failing the run after every seed was trained."""
    recipe = Recipe(RecipeConfig.from_dict({"task": "cose", "output_dir": str(tmp_path / "run"), "seeds": [0, 1]}))
    for seed, student in recipe.students.items():
        outcomes = {"accuracy": {"a": 1, "b": seed % 2}}
        if seed == 0:
            outcomes["las"] = {"a": [1, 1, 0], "b": [0, 1, 1]}
        write_results(student.results_path, kind="recipe", seed=seed, per_question={RECIPE_CONDITION: outcomes},
                      labels=recipe.labels())
    table, files = recipe.summarize()
    numbers = json.loads(files["numbers"].read_text())
    assert {c["metric"] for c in numbers["cells"]} == {"accuracy"} and numbers["cells"][0]["n_seeds"] == 2
    assert "['las'] left out of this summary" in table and "['las'] left out" in files["table"].read_text()
    assert "not measured in every seed" in caplog.text


# -- a whole recipe over two seeds, with a crash in seed 1 --------------------------------------------------------

def test_recipe_seeds_share_rationales_differ_in_training_and_resume_per_seed(tmp_path, tokenizer, monkeypatch):
    recipe = write_recipe(tmp_path, tokenizer)
    run = tmp_path / "run"
    generated: list[str] = []
    real_generate = rationalize_module.generate_rationales

    def counting_generate(rows, *args, **kwargs):
        generated.append(str(kwargs["output_dir"]))
        return real_generate(rows, *args, **kwargs)

    monkeypatch.setattr(rationalize_module, "generate_rationales", counting_generate)
    trained: list[tuple[str, int]] = []  # (the seed folder trained in, the training seed it got)
    real_train = recipes.CounterfactualTrainer.train

    def train_or_crash_in_seed_1(self, *args, **kwargs):
        folder = Path(self.args.output_dir).parent.name
        trained.append((folder, self.args.seed))
        if folder == "seed_1" and crash:
            raise RuntimeError("killed in seed 1's training")
        return real_train(self, *args, **kwargs)

    monkeypatch.setattr(recipes.CounterfactualTrainer, "train", train_or_crash_in_seed_1)
    crash = True
    with pytest.raises(RuntimeError, match="killed in seed 1"):
        run_main([str(recipe), "--seeds", "0", "1"])
    assert sorted(generated) == [str(run / "rationales" / "eval"), str(run / "rationales" / "train")]
    assert [folder for folder, _ in trained] == ["seed_0", "seed_1"]
    seed0, seed1 = seed_folder(run, 0), seed_folder(run, 1)
    assert (seed0 / "results.json").exists() and not (seed1 / "student").exists()
    kept = {p: p.stat().st_mtime_ns for p in (seed0 / "student" / "model.safetensors", seed0 / "results.json",
                                              seed0 / "eval" / "metrics.json")}

    crash = False
    assert run_main([str(recipe), "--seeds", "0", "1"]) == 0
    assert len(generated) == 2, "the shared rationales were generated again"
    assert [folder for folder, _ in trained] == ["seed_0", "seed_1", "seed_1"], "seed 0 was trained again"
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert not (run / "student").exists() and not (run / "results.json").exists()

    # the seeds' students differ (the training seed reaches the Trainer), from one start and the same rationales
    w0, w1 = (load_file(str(f / "student" / "model.safetensors")) for f in (seed0, seed1))
    assert w0.keys() == w1.keys() and any(not w0[k].equal(w1[k]) for k in w0), "the seeds trained the same student"
    assert trained == [("seed_0", 0), ("seed_1", 1), ("seed_1", 1)]
    for seed, folder in ((0, seed0), (1, seed1)):
        result = load_run(folder / "results.json")
        assert (result.kind, result.seed, result.schema_version) == ("recipe", seed, 1)
        assert result.labels["run"] == "run" and result.labels["task"] == "cose"
        outcomes = result.per_question[RECIPE_CONDITION]
        assert len(outcomes["accuracy"]) == 4 and set(outcomes["accuracy"]) == set(outcomes["unparseable"])
        metrics = json.loads((folder / "eval" / "metrics.json").read_text())
        for metric, value in result.metrics[RECIPE_CONDITION].items():
            assert metrics[metric] == pytest.approx(value)
        written = json.loads((folder / "results.json").read_text())
        assert written["seeds"] == {"train": seed, "las": seed, "evaluate": 0, "rationalize": 0}

    # the recipe's own report over its seeds, and the run summary naming each seed's outputs
    numbers = json.loads((run / "report.json").read_text())
    assert (run / "report.png").stat().st_size > 0 and (run / "report.txt").exists()
    assert {c["n_seeds"] for c in numbers["cells"]} == {2}
    summary = json.loads((run / "run_summary.json").read_text())
    assert set(summary["seeds"]) == {"0", "1"} and summary["config"]["run"]["seeds"] == [0, 1]
    same = json.dumps(summary["seeds"]["1"]["metrics"], sort_keys=True)  # as text: a NaN LAS is not == itself
    assert same == json.dumps(json.loads((seed1 / "eval" / "metrics.json").read_text()), sort_keys=True)
    # `scott-distill report RUN` on the recipe folder finds the seeds (not run_summary.json)
    numbers, _ = report(tmp_path, str(run))
    assert {c["n_seeds"] for c in numbers["cells"]} == {2}


def test_recipe_results_name_questions_by_the_task_ids_and_keep_the_las_cells(tmp_path, tokenizer, monkeypatch):
    """results.json's question ids are the eval split's ``id`` column (so runs on the same questions pair up), and
    the LAS cells `simulator_las` returns per measured row land under those ids. (The tiny random student never
    answers with a choice, so the simulator's result is replaced here by one with cells for rows 0 and 2.)"""
    import datasets

    from scott_distill.report.stats import outcome_metric

    recipe = write_recipe(tmp_path, tokenizer)
    cells = {0: [1, 1, 0], 2: [0, 1, 1]}
    las = outcome_metric({str(i): c for i, c in cells.items()}, "las")

    def fake_las(simulator, tokenizer, train_rows, measured_rows, args, *rest, **kwargs):
        assert args.seed == 3  # the seed's simulator seed reaches the simulator
        return {"las": las, "las_ci_low": las - 0.1, "las_ci_high": las + 0.1, "n_leaked": 1, "n_nonleaked": 1,
                "n_excluded": 2, "cells": cells}

    monkeypatch.setattr(recipes, "simulator_las", fake_las)
    assert run_main([str(recipe), "--seeds", "3"]) == 0
    folder = seed_folder(tmp_path / "run", 3)
    eval_ids = datasets.load_from_disk(str(tmp_path / "run" / "rationales" / "eval" / "dataset"))["id"]
    results = json.loads((folder / "results.json").read_text())
    student = results["per_question"][RECIPE_CONDITION]
    assert list(student["accuracy"]) == eval_ids and len(set(eval_ids)) == 4
    assert student["las"] == {eval_ids[0]: [1, 1, 0], eval_ids[2]: [0, 1, 1]}
    assert results["metrics"][RECIPE_CONDITION]["las"] == pytest.approx(las)
    assert json.loads((folder / "eval" / "metrics.json").read_text())["las"] == pytest.approx(las)

