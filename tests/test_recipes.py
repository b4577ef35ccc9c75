"""`scott-distill run`: the whole recipe on tiny models and a CoS-E slice, stage caching, and the Hub push."""

from __future__ import annotations

import json
import math
import re
import shutil

import pytest
import yaml
from conftest import make_gpt2, make_t5, shared_data_or_skip
from hub_server import FakeHub
from huggingface_hub import ModelCard
from test_hub import run_client

import scott_distill.recipes as recipes
from scott_distill.commands.run import main as run_main
from scott_distill.commands.run import make_parser
from scott_distill.recipes import RecipeConfig

RECIPES = ["csqa", "strategyqa", "creak", "qasc", "cose"]


@pytest.mark.parametrize("name", RECIPES)
def test_shipped_recipes_parse(name):
    from pathlib import Path

    path = Path(__file__).parents[1] / "recipes" / f"{name}.yaml"
    assert yaml.safe_load(path.read_text())["train"]["bf16"]  # the recipes are for a GPU ...
    # ... which transformers checks when the arguments are built: turn it off on this CPU machine
    config = make_parser().parse_recipe(["--config", str(path), "--train.bf16", "false"])
    run = config.run
    assert run.task == name and run.teacher and run.student and run.simulator
    assert run.student_repo and run.dataset_repo and 0 <= config.train.counterfactual_alpha <= 1
    assert config.rationalize.task == name


def write_recipe(tmp_path, tokenizer):
    cose = shared_data_or_skip("cose_v1")
    for name, model in (("teacher", make_gpt2(len(tokenizer))), ("student", make_t5(len(tokenizer))),
                        ("simulator", make_t5(len(tokenizer), seed=5))):
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    base = yaml.safe_load(open(__file__.replace("tests/test_recipes.py", "recipes/cose.yaml")))
    config = {**base, "teacher": str(tmp_path / "teacher"), "student": str(tmp_path / "student"),
              "simulator": str(tmp_path / "simulator"), "data": str(cose / "train.csv"),
              "eval_data": str(cose / "dev.csv"), "max_train_rows": 8, "max_eval_rows": 4, "teacher_dtype": "auto",
              "output_dir": str(tmp_path / "run"), "student_repo": "org/scott-t5-cose",
              "dataset_repo": "org/cose-rationales"}
    config["rationalize"] = {**base["rationalize"], "max_new_tokens": 5, "batch_size": 8}
    config["train"] = {**base["train"], "num_train_epochs": 1, "per_device_train_batch_size": 4, "bf16": False}
    config["evaluate"] = {**base["evaluate"], "max_new_tokens": 6}
    config["las"] = {**base["las"], "num_train_epochs": 1, "bootstrap": 100}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_run_all_caches_stages_and_pushes(tmp_path, tokenizer, monkeypatch):
    recipe = write_recipe(tmp_path, tokenizer)
    assert run_main([str(recipe)]) == 0
    run = tmp_path / "run"
    assert (run / "rationales" / "train" / "dataset" / "dataset_info.json").exists()
    assert (run / "student" / "scott_config.json").exists()
    metrics = __import__("json").loads((run / "eval" / "metrics.json").read_text())
    for key in ("accuracy", "counterfactual_consistency", "las", "las_ci_low", "las_ci_high"):
        assert key in metrics
    # no --seeds: one student in the run folder itself (the layout before seeds), its per-question results and
    # a report that says one seed is no finding
    results = __import__("json").loads((run / "results.json").read_text())
    assert results["seed"] == 0 and results["kind"] == "recipe" and len(results["per_question"]["student"]["accuracy"]) == 4
    assert not list(run.glob("seed_*")) and "a one-seed result is not a finding" in (run / "report.txt").read_text()

    def boom(*a, **k):
        raise AssertionError("a cached stage ran again")

    monkeypatch.setattr("scott_distill.teacher.rationalize.generate_rationales", boom)
    monkeypatch.setattr(recipes.CounterfactualTrainer, "train", boom)
    monkeypatch.setattr(recipes, "student_outcomes", boom)
    assert run_main([str(recipe), "--stage", "all"]) == 0  # every stage is read back from disk

    # a re-run into the same folder with other settings is refused instead of answered with the old results
    # (stage_records.py): the full run after a smoke run, another alpha, other evaluation settings
    on_train = recipes.RATIONALIZE_SPLIT.format("train")
    for flags, stage, first in (
            (["--max_train_rows", "6"], on_train, recipes.TRAIN_ROWS),
            (["--teacher", str(tmp_path / "student")], on_train, "teacher"),
            (["--rationalize.alpha", "0.25"], on_train, "rationalize.alpha"),
            (["--train.counterfactual_alpha", "0.25"], "train", "train.counterfactual_alpha"),
            (["--train.num_train_epochs", "2"], "train", "train.num_train_epochs"),
            (["--stage", "evaluate", "--train.learning_rate", "0.5"], "evaluate", "train.learning_rate"),
            (["--evaluate.perturb_fraction", "0.25"], "evaluate", "evaluate.perturb_fraction"),
            (["--las.bootstrap", "50"], "evaluate", "las.bootstrap")):
        with pytest.raises(ValueError, match=rf"holds the {re.escape(stage)} stage's result, made with other "
                                             rf"settings \({re.escape(first)}:") as refused:
            run_main([str(recipe), *flags])
        # what to delete: the earliest result the setting decides and what was made from it, a student's
        # checkpoints too (after deleting the student alone a resume would continue them)
        trained = f"{run / 'student'}, {run / 'checkpoints'}, {run / 'eval'}, {run / 'results.json'} to make it"
        remake = {"teacher": f"delete {run / 'rationales'}, {trained}", "train.learning_rate": f"delete {trained}",
                  "train.counterfactual_alpha": f"delete {trained}", "las.bootstrap":
                  f"delete {run / 'eval'}, {run / 'results.json'} to make it"}.get(first)
        assert remake is None or remake in str(refused.value)
    # the same settings, spelled otherwise, are the same run: the batch size does not change results, a model
    # folder is one folder however it is written
    assert run_main([str(recipe), "--evaluate.batch_size", "3", "--teacher", f"{tmp_path / 'teacher'}/"]) == 0

    # a run from before the records (or with one removed) is refused: which settings made it cannot be told
    old = tmp_path / "old"
    shutil.copytree(run, old)
    for record in old.glob("**/recipe_stage.json"):
        record.unlink()
    with pytest.raises(ValueError, match=r"rationales/train holds a rationalize \(train split\) result without "
                                         r"recipe_stage.json"):
        run_main([str(recipe), "--output_dir", str(old)])

    # other eval rows: the rationales of the eval split and the metrics are made again, not the student
    monkeypatch.undo()
    monkeypatch.setattr(recipes.CounterfactualTrainer, "train", boom)
    more = tmp_path / "more"
    shutil.copytree(run, more)
    with pytest.raises(ValueError, match=re.escape(f"({recipes.EVAL_ROWS}:")) as refused:
        run_main([str(recipe), "--output_dir", str(more), "--max_eval_rows", "3"])
    assert f"delete {more / 'rationales' / 'eval'}, {more / 'eval'}, {more / 'results.json'} to make" in str(
        refused.value)
    for path in (more / "rationales" / "eval", more / "eval"):  # as the message says
        shutil.rmtree(path)
    (more / "results.json").unlink()
    assert run_main([str(recipe), "--output_dir", str(more), "--max_eval_rows", "3"]) == 0
    assert len(json.loads((more / "results.json").read_text())["per_question"]["student"]["accuracy"]) == 3

    with FakeHub() as hub:
        out = run_client(hub, "recipe", tmp_path)
        assert ("dataset", "org/cose-rationales") in hub.state.repos
    assert out["pulled"] == out["local"]
    card = ModelCard.load(out["card"])
    values = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert values["accuracy"] == pytest.approx(metrics["accuracy"])
    if math.isnan(metrics["las"]):  # the random tiny student gave no answer among the choices: nothing to simulate
        assert metrics["n_leaked"] + metrics["n_nonleaked"] == 0 and metrics["n_excluded"] == 4
        assert "las" not in values
    else:
        assert values["las"] == pytest.approx(metrics["las"])


def test_bad_stage_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--stage"):
        recipes.Recipe(RecipeConfig.from_dict({"task": "cose", "stage": "deploy"}))


def test_the_rationalize_stage_reads_each_split_once(tmp_path, tokenizer, monkeypatch):
    """The split's rows are read once for both its stage record (their fingerprint) and the teacher's generation;
    before, each split was loaded and sliced twice."""
    path = write_recipe(tmp_path, tokenizer)
    config = make_parser().parse_recipe(["--config", str(path)])
    loaded: list[str] = []
    real = recipes.load_task
    monkeypatch.setattr(recipes, "load_task", lambda task, data, **kw: loaded.append(data) or real(task, data, **kw))
    recipe = recipes.Recipe(config)
    rationales = recipe.rationalize()
    assert sorted(loaded) == sorted([config.run.data, config.run.eval_data])
    assert [len(rationales[s]) for s in ("train", "eval")] == [8, 4]
