"""One LAS pipeline: `scott-distill evaluate` + `scott-distill las`, the recipe's evaluate stage and the demo give
the same numbers on the same student outputs, including unparseable answers and answers outside the choices.

The student is a tiny T5 whose `generate` is replaced by a table of outputs (per question), so that the outputs
are known, hold every kind of answer, and are identical for the three paths; everything after generation (parsing,
the rows the simulator sees, simulator training, scoring, LAS) is the real code of each path.
"""

from __future__ import annotations

import json

import datasets
import pytest
import torch
from transformers import T5ForConditionalGeneration

from scott_distill.commands.evaluate import main as evaluate_main
from scott_distill.commands.las import main as las_main
from scott_distill.demo import pipeline as demo
from scott_distill.demo.world import make_world
from scott_distill.formats import StudentFormat
from scott_distill.las.pipeline import answer_in_choices
from scott_distill.recipes import Recipe, RecipeConfig
from scott_distill.student.model import RationaleStudent

KEYS = ("las", "las_ci_low", "las_ci_high", "n_leaked", "n_nonleaked")


def canned_output(i: int, row: dict) -> str:
    choices = row["choices"]
    answer = choices[(3 * i) % len(choices)]
    if i % 5 == 0:
        return "it is kept somewhere dry"  # no answer: unparseable
    if i % 7 == 3:
        return "it is kept on a ship So the answer is the moon"  # an answer outside the choices
    if i % 3 == 0:
        return f"such things belong in the {answer} So the answer is {answer}"  # leaks the answer
    return f"it is made of {row['material'] if 'material' in row else 'something'} So the answer is {answer}"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("las_paths")
    world = make_world(0, n_objects=24, n_train=72, n_test=36, n_teacher_corpus=100)
    tok = demo._tokenizer(world)
    s = demo.DemoSettings(seed=0, quick=True, n_objects=24, n_train=72, n_test=36, simulator_epochs=2.0, width=32)
    train, test = datasets.Dataset.from_list(world.train), datasets.Dataset.from_list(world.test)
    outputs = {}
    for i, row in enumerate([*world.train, *world.test]):
        outputs[row["question"]] = canned_output(i, row)
    student = demo._student(tok, s, 0)
    RationaleStudent(student, tok, StudentFormat()).save_pretrained(tmp / "student")
    for name, rows in (("train", train), ("test", test)):
        rows.to_json(tmp / f"{name}.jsonl")
    return {"tmp": tmp, "world": world, "tok": tok, "s": s, "train": train, "test": test, "outputs": outputs,
            "student": student}


@pytest.fixture
def canned_student(setup, monkeypatch):
    """Every T5 `generate` call (the student's, whichever path loaded it) returns the table's output."""
    tok, outputs = setup["tok"], setup["outputs"]
    questions = sorted(outputs, key=len, reverse=True)  # longest first: no question is matched by a prefix

    def generate(self, input_ids=None, attention_mask=None, **kwargs):
        rows = []
        for text in tok.batch_decode(input_ids, skip_special_tokens=True):
            question = next(q for q in questions if q in text)
            ids = tok(outputs[question], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            rows.append([self.config.decoder_start_token_id, *ids])
        width = max(len(r) for r in rows)
        return torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])

    monkeypatch.setattr(T5ForConditionalGeneration, "generate", generate)


@pytest.fixture(scope="module")
def cli_predictions(setup):
    """`scott-distill evaluate --predictions_output` for the train and test rows (run once, canned)."""
    return {}


def _cli_outputs(setup, cache):
    if not cache:
        tmp = setup["tmp"]
        for name in ("train", "test"):
            evaluate_main(["--model_name_or_path", str(tmp / "student"), "--data", str(tmp / f"{name}.jsonl"),
                           "--output", str(tmp / f"{name}_metrics.json"), "--batch_size", "64",
                           "--max_new_tokens", "48", "--predictions_output", str(tmp / f"{name}_preds.jsonl")])
            cache[name] = tmp / f"{name}_preds.jsonl"
    return cache


def _las_cli(setup, cache, simulator_dir, out_name, *flags):
    files = _cli_outputs(setup, cache)
    out = setup["tmp"] / f"{out_name}.json"
    las_main(["--student-predictions", str(files["test"]), "--train", str(files["train"]), "--simulator",
              str(simulator_dir), "--output", str(out), "--output_dir", str(setup["tmp"] / out_name),
              "--seed", "0", "--bootstrap", "1000", *flags])
    return json.loads(out.read_text())


def _expected_exclusions(setup, split):
    from scott_distill.las.pipeline import answer_in_choices

    rows = setup[split]
    return sum(not answer_in_choices(StudentFormat().parse(setup["outputs"][q])[1], cs)
               for q, cs in zip(rows["question"], rows["choices"]))


def test_cli_and_demo_paths_give_the_same_las(setup, canned_student, cli_predictions):
    s, tok = setup["s"], setup["tok"]
    sim_dir = setup["tmp"] / "demo_simulator_init"
    demo._student(tok, s, s.seed + 7).save_pretrained(sim_dir)  # the demo's own simulator initialisation
    tok.save_pretrained(sim_dir)
    from_demo = demo._las(setup["student"], tok, setup["world"], setup["train"], setup["test"], s,
                          setup["tmp"] / "demo_sim")
    from_cli = _las_cli(setup, cli_predictions, sim_dir, "cli_as_demo", "--num_train_epochs", str(s.simulator_epochs),
                        "--learning_rate", "3e-3", "--per_device_train_batch_size", "32",
                        "--per_device_eval_batch_size", "64")
    assert {k: from_cli[k] for k in KEYS} == {k: from_demo[k] for k in KEYS}
    excluded = _expected_exclusions(setup, "test")
    assert 0 < excluded < len(setup["test"])
    assert from_cli["n_excluded"] == from_demo["n_excluded"] == excluded
    assert from_demo["n_leaked"] + from_demo["n_nonleaked"] == len(setup["test"]) - excluded
    # the per-row cells (results schema 1's LAS outcomes): one per measured row, by its index, the same on both
    # paths, and the authors' formula on them gives the reported LAS
    cells = from_demo["cells"]
    assert {int(k): v for k, v in from_cli["cells"].items()} == cells
    kept = [i for i, (q, cs) in enumerate(zip(setup["test"]["question"], setup["test"]["choices"]))
            if answer_in_choices(StudentFormat().parse(setup["outputs"][q])[1], cs)]
    assert sorted(cells) == kept and sum(c[0] for c in cells.values()) == from_demo["n_leaked"]
    diffs = []
    for leaked in (1, 0):
        bin_ = [c for c in cells.values() if c[0] == leaked]
        if bin_:
            diffs.append(sum(c[1] for c in bin_) / len(bin_) - sum(c[2] for c in bin_) / len(bin_))
    assert from_demo["las"] == pytest.approx(sum(diffs) / len(diffs), abs=1e-12)


def test_cli_and_recipe_paths_give_the_same_las(setup, canned_student, cli_predictions, tmp_path):
    s, tok = setup["s"], setup["tok"]
    sim_dir = tmp_path / "simulator"
    demo._student(tok, s, 11).save_pretrained(sim_dir)
    tok.save_pretrained(sim_dir)
    recipe = Recipe(RecipeConfig.from_dict({"task": "csqa", "output_dir": str(tmp_path / "run"),
                                            "simulator": str(sim_dir), "evaluate": {"max_new_tokens": 48},
                                            "las": {"num_train_epochs": 2.0, "seed": 0, "bootstrap": 1000}}))
    from_recipe = recipe._las(setup["student"], tok, StudentFormat(), {"train": setup["train"], "eval": setup["test"]})
    # the recipe's simulator settings are LASConfig's, the las command's defaults (lr 1e-4, batch 8, scoring 32)
    from_cli = _las_cli(setup, cli_predictions, sim_dir, "cli_as_recipe", "--num_train_epochs", "2")
    assert {k: from_cli[k] for k in KEYS} == {k: from_recipe[k] for k in KEYS}
    assert from_recipe["n_excluded"] == _expected_exclusions(setup, "test")


def test_student_output_rows_keep_unparseable_answers_as_none(setup):
    from scott_distill.las.pipeline import answer_in_choices, student_output_rows

    rows = setup["test"].select(range(3))
    preds = [{"rationale": "r", "answer": None}, {"rationale": "s", "answer": "the moon"},
             {"rationale": "t", "answer": rows[2]["choices"][0]}]
    out = student_output_rows(rows, preds)
    assert out["prediction"] == [None, "the moon", rows[2]["choices"][0]] and out["explanation"] == ["r", "s", "t"]
    assert [answer_in_choices(p, r["choices"]) for p, r in zip(out["prediction"], rows)] == [False, False, True]
    with pytest.raises(ValueError, match="`predictions` has 2 rows"):
        student_output_rows(rows, preds[:2])


def test_no_usable_row_gives_nan_not_a_crash(setup, tmp_path):
    """A student with no answer among the choices cannot be simulated: NaN LAS and the counts, so that a recipe's
    evaluation keeps its other metrics (before, recipe/demo mapped every such answer to the first choice)."""
    import math

    from scott_distill.las.pipeline import LASConfig, simulator_las, student_output_rows

    rows = setup["test"].select(range(6))
    train = student_output_rows(rows, [{"rationale": "r", "answer": c[0]} for c in rows["choices"]])
    measured = student_output_rows(rows, [{"rationale": "r", "answer": None}] * 6)
    args = LASConfig(output_dir=str(tmp_path), report_to=[], save_strategy="no", bootstrap=50)
    out = simulator_las(demo._student(setup["tok"], setup["s"], 0), setup["tok"], train, measured, args)
    assert math.isnan(out["las"]) and math.isnan(out["las_ci_low"]) and out["n"] == 0 and out["n_excluded"] == 6
    assert out["n_train_excluded"] == 0 and out["n_leaked"] + out["n_nonleaked"] == 0
