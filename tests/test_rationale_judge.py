"""The rationale judge (scott_distill.las.judge) and its entry point benchmarks/real_teacher_judge.py.

The judge is the LAS simulator trained on human explanations in the rationale-only view; these tests check that it
learns from the explanation (and only from it), that its folder is reused or refused, that it refuses questions it
was trained on, and that the entry point never trains it on teacher rationales.
"""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from conftest import MINILM, skip_without_bundled

from scott_distill.las.judge import JudgeConfig, RationaleJudge, fit_judge, fit_or_load_judge, judge_rows
from scott_distill.las.simulator import SimulatorFormat, build_training_rows
from scott_distill.teacher.measures import measure_rationale, names_choice

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "real_teacher_judge.py"

# distinct nouns: training rows use the first half as choices, held-out rows the second half, so a judge cannot
# pass by memorising which words tend to be answers
WORDS = ("apple river candle garden hammer pillow rocket violin wallet ladder mirror basket bridge carpet desert "
         "engine forest guitar island jacket kettle lemon magnet needle orange pencil rabbit saddle tomato window "
         "anchor bottle cactus dragon feather glove helmet lantern marble noodle parrot quilt ribbon spoon tunnel "
         "umbrella vessel whistle").split()


def synthetic_rows(n: int, words: list[str], seed: int, named_in: str, prefix: str) -> datasets.Dataset:
    """3-choice questions; the gold answer at a random position and named either in the explanation
    (``named_in="explanation"``) or only in the question (``named_in="question"``, a neutral explanation)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        choices = rng.sample(words, 3)
        answer = choices[rng.randrange(3)]
        if named_in == "explanation":
            question, explanation = "Which thing is meant here?", f"the {answer} is the one meant here"
        else:
            question, explanation = f"The {answer} is meant here: which thing is it?", "that one is meant here"
        rows.append({"id": f"{prefix}{i}", "question": question, "choices": choices, "answer": answer,
                     "rationale": explanation})
    return datasets.Dataset.from_list(rows)


def minilm_config(tmp_path: Path, **kw) -> JudgeConfig:
    skip_without_bundled(MINILM)
    defaults = dict(output_dir=str(tmp_path / "judge"), num_train_epochs=4, per_device_train_batch_size=8,
                    learning_rate=1e-4, report_to=[], disable_tqdm=True, use_cpu=True, seed=0)
    return JudgeConfig(**{**defaults, **kw})


@pytest.mark.slow
def test_judge_learns_the_named_answer_and_beats_chance(tmp_path):
    torch.manual_seed(0)
    half = len(WORDS) // 2
    train = synthetic_rows(48, WORDS[:half], 0, "explanation", "train")
    held_out = synthetic_rows(30, WORDS[half:], 1, "explanation", "held")
    judge = fit_judge(train, minilm_config(tmp_path), dev_rows=held_out)
    # chance is 1/3: P(>= 21 of 30 | 1/3) < 1e-5
    assert judge.record["calibration"]["accuracy"] >= 0.7, judge.record
    assert judge.record["calibration"]["n"] == 30 and judge.record["n_train"] == 48


@pytest.mark.slow
def test_judge_sees_the_rationale_alone_not_the_question(tmp_path):
    """Trained where only the *question* names the answer, a rationale-only judge has nothing to learn from: it stays
    near chance on held-out rows (a judge shown the question would learn to read the answer off it)."""
    torch.manual_seed(0)
    half = len(WORDS) // 2
    train = synthetic_rows(48, WORDS[:half], 0, "question", "train")
    held_out = synthetic_rows(60, WORDS[half:], 1, "question", "held")
    judge = fit_judge(train, minilm_config(tmp_path), dev_rows=held_out)
    # the explanation is the same on every row: the judge can only follow a prior over the choices
    assert judge.record["calibration"]["accuracy"] <= 0.55, judge.record


def test_training_rows_in_the_rationale_view_blank_the_question():
    rows = synthetic_rows(4, WORDS, 0, "question", "q")
    fmt = SimulatorFormat()
    e_view = build_training_rows(rows, fmt, 0.0, 0, "answer", "rationale", condition="e")
    xe_view = build_training_rows(rows, fmt, 0.0, 0, "answer", "rationale")
    for q, src_e, src_xe in zip(rows["question"], e_view["source"], xe_view["source"]):
        assert q not in src_e and q in src_xe
        assert "that one is meant here" in src_e
    with pytest.raises(ValueError, match="condition"):
        build_training_rows(rows, fmt, 0.0, 0, "answer", "rationale", condition="x")


def tiny_judge_folder(tmp_path: Path, tokenizer) -> str:
    from transformers import BertConfig, BertForMultipleChoice

    torch.manual_seed(0)
    folder = tmp_path / "tiny_bert"
    BertForMultipleChoice(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64,
                                     pad_token_id=tokenizer.pad_token_id or 0)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def tiny_config(tmp_path: Path, tokenizer, **kw) -> JudgeConfig:
    defaults = dict(output_dir=str(tmp_path / "judge"), simulator=tiny_judge_folder(tmp_path, tokenizer),
                    num_train_epochs=1, per_device_train_batch_size=4, report_to=[], disable_tqdm=True,
                    use_cpu=True)
    return JudgeConfig(**{**defaults, **kw})


def test_judge_folder_is_reused_and_a_different_one_refused(tmp_path, tokenizer, monkeypatch):
    import scott_distill.las.judge as judge_module

    train = synthetic_rows(8, WORDS, 0, "explanation", "train")
    config = tiny_config(tmp_path, tokenizer)
    first = fit_or_load_judge(train, config)
    assert (Path(config.output_dir) / "judge.json").is_file()
    calls = []
    monkeypatch.setattr(judge_module, "train_simulator", lambda *a, **k: calls.append(1))
    again = fit_or_load_judge(train, config)  # loaded, not trained again
    assert calls == [] and again.trained_on == first.trained_on
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    other = synthetic_rows(8, WORDS, 1, "explanation", "train")
    with pytest.raises(ValueError, match="output_dir.*other data or settings"):
        fit_or_load_judge(other, config)
    config.learning_rate = 1e-3
    with pytest.raises(ValueError, match="other data or settings"):
        fit_or_load_judge(train, config)


def test_judge_refuses_questions_it_was_trained_on(tmp_path, tokenizer):
    train = synthetic_rows(8, WORDS, 0, "explanation", "train")
    judge = fit_judge(train, tiny_config(tmp_path, tokenizer), save=False)
    with pytest.raises(ValueError, match="trained on"):
        judge.pick(train.select([2, 3]))
    with pytest.raises(ValueError, match="`rows` lacks columns \\['id'\\]"):
        judge.pick(train.remove_columns("id"))
    other = synthetic_rows(5, WORDS, 1, "explanation", "other")
    picks = judge.pick(other.map(lambda r, i: {"rationale": None if i == 0 else r["rationale"]}, with_indices=True))
    assert [p in c for p, c in zip(picks, other["choices"])] == [True] * 5  # an empty rationale is judged too
    result = judge_rows(judge, other)
    assert result["n"] == 5 and result["accuracy"] == sum(result["correct"]) / 5


def test_judge_rejects_bad_input(tmp_path, tokenizer):
    train = synthetic_rows(4, WORDS, 0, "explanation", "train")
    config = tiny_config(tmp_path, tokenizer)
    with pytest.raises(ValueError, match="`config` must be a JudgeConfig"):
        fit_judge(train, object())  # type: ignore[arg-type]
    broken = train.map(lambda r: {"answer": "nothing of the choices"})
    with pytest.raises(ValueError, match="`human_rows` row 0: the answer"):
        fit_judge(broken, config)
    empty = train.map(lambda r: {"rationale": " "})
    with pytest.raises(ValueError, match="no row with an explanation"):
        fit_judge(empty, config)
    with pytest.raises(ValueError, match="`max_length`"):
        JudgeConfig(output_dir=str(tmp_path), max_length=2)
    with pytest.raises(ValueError, match="holds no finished judge"):
        RationaleJudge.from_pretrained(tmp_path / "nowhere")


def test_measure_rationale_names_whole_words_only():
    choices = ["get arrested", "headache", "house"]
    m = measure_rationale("Getting arrested gives headaches.", choices, "house")
    assert (m["names_gold"], m["names_wrong_choice"], m["names_no_choice"]) == (False, False, True)
    m = measure_rationale("You GET ARRESTED, not a house.", choices, "get arrested")
    assert (m["names_gold"], m["names_wrong_choice"], m["names_no_choice"], m["words"]) == (True, True, False, 6)
    assert measure_rationale(None, choices, "house")["degenerate"]
    assert names_choice("a c++ compiler", "c++") and not names_choice("a c++x compiler", "c++")
    with pytest.raises(ValueError, match="`answer`"):
        measure_rationale("x", choices, "car")


# -- the entry point -------------------------------------------------------------------------------------------------


def load_script():
    spec = importlib.util.spec_from_file_location("real_teacher_judge", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["real_teacher_judge"] = module
    spec.loader.exec_module(module)
    return module


def test_entry_point_help():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    for flag in ("--stages", "--questions", "--time_budget_min", "--run_dir", "--output_dir", "--simulator"):
        assert flag in out
    assert "human" in out and "rationale" in out


def write_cose_csv(path: Path, rows: datasets.Dataset) -> None:
    import csv

    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "question", "choice_0", "choice_1", "choice_2", "label", "human_exp"])
        for r in rows:
            w.writerow([r["id"], r["question"], *r["choices"], r["choices"].index(r["answer"]), r["rationale"]])


def test_entry_point_never_trains_the_judge_on_teacher_rationales(tmp_path, tokenizer, monkeypatch, capsys):
    """Stages judge + report on finished rationale chunks: the judge trains on exactly the human explanations of
    the train split; no teacher rationale (each carries a marker) and no dev question reaches its training."""
    import scott_distill.las.judge as judge_module

    script = load_script()
    train = synthetic_rows(12, WORDS, 0, "explanation", "train")
    dev = synthetic_rows(6, WORDS, 1, "explanation", "dev")
    write_cose_csv(tmp_path / "train.csv", train)
    write_cose_csv(tmp_path / "dev.csv", dev)
    run_dir = tmp_path / "run"
    for decoding in script.DECODINGS:
        for start, end in ((0, 3), (3, 6)):
            chunk = dev.select(range(start, end)).map(
                lambda r, d=decoding: {"rationale": f"TEACHER-{d} says {r['choices'][0]}",
                                       "human_rationale": r["rationale"]})
            chunk.save_to_disk(str(script._chunk_dir(run_dir, decoding, start, end) / "dataset"))
    seen: list[datasets.Dataset] = []
    real_train = judge_module.train_simulator

    def spy(model, tokenizer, train_dataset, *args, **kwargs):
        seen.append(train_dataset)
        return real_train(model, tokenizer, train_dataset, *args, **kwargs)

    monkeypatch.setattr(judge_module, "train_simulator", spy)
    simulator = tiny_judge_folder(tmp_path, tokenizer)
    script.main(["--stages", "judge", "report", "--run_dir", str(run_dir), "--train_data", str(tmp_path / "train.csv"),
                 "--dev_data", str(tmp_path / "dev.csv"), "--questions", "6", "--chunk", "3", "--simulator", simulator,
                 "--num_train_epochs", "1", "--per_device_train_batch_size", "4", "--use_cpu", "--report_to", "none",
                 "--bootstrap", "200", "--examples", "2"])
    assert len(seen) == 1
    trained = seen[0]
    assert trained["rationale"] == train["rationale"] and trained["id"] == train["id"]
    assert not any("TEACHER" in text for text in trained["rationale"])
    assert not set(trained["id"]) & set(dev["id"])
    records = [json.loads(line) for line in (run_dir / "judged.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == dev["id"]
    assert records[0]["contrastive-wrong"]["rationale"].startswith("TEACHER-contrastive-wrong")
    assert records[0]["human"]["rationale"] == dev[0]["rationale"]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["n"] == 6 and set(results["differences"]) == {"contrastive-wrong - greedy",
                                                                 "contrastive-empty - greedy"}
    out = capsys.readouterr().out
    assert "| contrastive-wrong | 6 |" in out and "judge picks gold" in out
    # a second run loads the judge (no second training)
    script.main(["--stages", "judge", "--run_dir", str(run_dir), "--train_data", str(tmp_path / "train.csv"),
                 "--dev_data", str(tmp_path / "dev.csv"), "--questions", "6", "--chunk", "3", "--simulator", simulator,
                 "--num_train_epochs", "1", "--per_device_train_batch_size", "4", "--use_cpu", "--report_to", "none"])
    assert len(seen) == 1


def test_entry_point_judges_only_questions_done_in_every_decoding(tmp_path):
    script = load_script()
    dev = synthetic_rows(6, WORDS, 1, "explanation", "dev")
    run_dir = tmp_path / "run"
    for decoding in script.DECODINGS:
        chunks = ((0, 3), (3, 6)) if decoding != "contrastive-wrong" else ((0, 3),)
        for start, end in chunks:
            dev.select(range(start, end)).save_to_disk(str(script._chunk_dir(run_dir, decoding, start, end) / "dataset"))
    args = script.RunArgs(run_dir=str(run_dir), questions=6, chunk=3)
    loaded = script.load_rationales(args, len(dev))
    assert {d: len(rows) for d, rows in loaded.items()} == {d: 3 for d in script.DECODINGS}


def test_entry_point_judges_rationales_imported_from_another_run(tmp_path, tokenizer, monkeypatch, capsys):
    """Rationales made elsewhere (a recipe run on a GPU machine: its rationales/eval/dataset) are filed into the
    run's chunks and judged, two decodings only; no teacher is loaded; rows in another order are refused."""
    import scott_distill.checkpoints as checkpoints

    script = load_script()
    train = synthetic_rows(12, WORDS, 0, "explanation", "train")
    dev = synthetic_rows(6, WORDS, 1, "explanation", "dev")
    write_cose_csv(tmp_path / "train.csv", train)
    write_cose_csv(tmp_path / "dev.csv", dev)
    made = {}
    for decoding in ("greedy", "contrastive-wrong"):
        made[decoding] = tmp_path / f"made-{decoding}"
        dev.map(lambda r, d=decoding: {"rationale": f"IMPORTED-{d} {r['choices'][1]}"}).save_to_disk(
            str(made[decoding]))

    def boom(*args, **kwargs):
        raise AssertionError("the teacher was loaded for imported rationales")

    monkeypatch.setattr(checkpoints, "load_teacher", boom)
    run_dir = tmp_path / "run"
    common = ["--run_dir", str(run_dir), "--train_data", str(tmp_path / "train.csv"), "--dev_data",
              str(tmp_path / "dev.csv"), "--questions", "6", "--chunk", "4", "--decodings", "greedy",
              "contrastive-wrong", "--simulator", tiny_judge_folder(tmp_path, tokenizer), "--num_train_epochs", "1",
              "--per_device_train_batch_size", "4", "--use_cpu", "--report_to", "none", "--bootstrap", "200",
              "--examples", "1"]
    script.main(["--stages", "rationales", "judge", "report", *common, "--import_rationales",
                 f"greedy={made['greedy']}", f"contrastive-wrong={made['contrastive-wrong']}"])
    records = [json.loads(line) for line in (run_dir / "judged.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == dev["id"]
    assert all(r["greedy"]["rationale"] == f"IMPORTED-greedy {r['choices'][1]}" for r in records)
    assert "contrastive-empty" not in records[0]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["n"] == 6 and set(results["differences"]) == {"contrastive-wrong - greedy"}
    assert "| contrastive-wrong | 6 |" in capsys.readouterr().out

    shuffled = tmp_path / "shuffled"
    dev.select([1, 0, 2, 3, 4, 5]).save_to_disk(str(shuffled))
    with pytest.raises(SystemExit, match="not the first 6 questions"):
        script.main(["--stages", "rationales", *common, "--run_dir", str(tmp_path / "run2"),
                     "--import_rationales", f"greedy={shuffled}"])
    short = tmp_path / "short"
    dev.select(range(5)).save_to_disk(str(short))
    with pytest.raises(SystemExit, match="holds 5 rows, fewer than the 6 questions"):
        script.main(["--stages", "rationales", *common, "--run_dir", str(tmp_path / "run3"),
                     "--import_rationales", f"greedy={short}"])
    with pytest.raises(SystemExit, match="already holds other greedy rationales"):  # the run above holds greedy's
        script.main(["--stages", "rationales", *common, "--import_rationales", f"greedy={made['contrastive-wrong']}"])
    # a recipe's rationales carry the settings that made them (run_config.json beside dataset/): filed as another
    # decoding, or made with another alpha, they are refused
    for made_with, filed_as in (({"perturbation": "empty", "alpha": 0.5}, "contrastive-wrong"),
                                ({"perturbation": "wrong", "alpha": 0.25}, "contrastive-wrong"),
                                ({"perturbation": "wrong", "alpha": 0.5}, "greedy")):
        recipe_eval = tmp_path / f"recipe-{made_with['perturbation']}-{made_with['alpha']}-{filed_as}"
        dev.save_to_disk(str(recipe_eval / "dataset"))
        (recipe_eval / "run_config.json").write_text(json.dumps({**made_with, "max_new_tokens": 40}))
        with pytest.raises(SystemExit, match=f"was made with .*not the {filed_as} decoding"):
            script.main(["--stages", "rationales", *common, "--run_dir", str(tmp_path / "run4"),
                         "--import_rationales", f"{filed_as}={recipe_eval / 'dataset'}"])
    for bad in (["--decodings", "contrastive-wrong"], ["--import_rationales", f"contrastive-empty={shuffled}"]):
        with pytest.raises(ValueError, match="--decodings|--import_rationales"):
            script.main(["--stages", "rationales", *common, *bad])
