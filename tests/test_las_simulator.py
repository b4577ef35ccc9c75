"""Simulator + CLI end-to-end on real CoS-E rows (human explanations as e, gold labels as references)."""

from __future__ import annotations

import csv
import json

import datasets
import pytest
from conftest import make_t5, shared_data_or_skip

from scott_distill.las.cli import main as las_main
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
            "--eval", str(tmp_path / "dev.jsonl"), "--simulator", str(sim_dir), "--epochs", "1",
            "--batch_size", "16", "--bootstrap", "500", "--output", str(out), "--learning_rate", "1e-3",
            "--simulator_output_dir", str(tmp_path / f"ckpt_{out.stem}"),
        ])
        return json.loads(out.read_text())

    a = run(tmp_path / "a.json")
    b = run(tmp_path / "b.json")
    assert a == b  # seeded: same simulator, same predictions, same bootstrap
    assert a["n"] == 48 and a["n_leaked"] + a["n_nonleaked"] == 48
    assert a["n_leaked"] == round(a["acc_e"] * 48)
    assert -1 <= a["las"] <= 1 and a["las_ci_low"] <= a["las"] <= a["las_ci_high"]


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
