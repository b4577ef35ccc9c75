"""End-to-end student training: DDP via torchrun (2 CPU processes), the CLIs, and the direction of SCOTT's effect."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import datasets
import pytest
import torch
import yaml
from conftest import make_t5
from transformers import AutoModelForSeq2SeqLM, T5Config, T5ForConditionalGeneration

from scott_distill import CounterfactualTrainer, CounterfactualTrainingArguments
from scott_distill.commands.evaluate import main as evaluate_main
from scott_distill.commands.train import main as train_main
from scott_distill.student.evaluation import evaluate_student

OBJECTS = ["apple", "ball", "cup", "pen", "book", "key", "hat", "shoe"]


def shortcut_world(n: int, seed: int, informative_every: int = 4) -> datasets.Dataset:
    """Each object sits on a fixed side (the shortcut: question -> answer). Only every
    `informative_every`-th factual rationale states the side; the others are vacuous, as many teacher
    rationales are. Counterfactual rationales always state the other side."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        obj = rng.choice(OBJECTS)
        side = "left" if OBJECTS.index(obj) % 2 == 0 else "right"
        other = "right" if side == "left" else "left"
        informative = i % informative_every == 0
        rows.append({
            "question": f"Where is the {obj}?", "choices": ["left", "right"], "answer": side,
            "rationale": f"The {obj} was put on the {side}." if informative else f"The {obj} is somewhere in the room.",
            "counterfactual_answer": other, "counterfactual_rationale": f"The {obj} was put on the {other}.",
        })
    return datasets.Dataset.from_list(rows)


def small_t5(vocab: int, seed: int) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(T5Config(
        vocab_size=vocab, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, bos_token_id=3, dropout_rate=0.0))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_counterfactual_student_follows_forced_rationale_more(tokenizer, tmp_path, seed):
    train, test = shortcut_world(160, seed), shortcut_world(40, seed + 100)
    consistency = {}
    for alpha in (0.0, 0.5):
        model = small_t5(len(tokenizer), seed)
        args = CounterfactualTrainingArguments(
            output_dir=str(tmp_path / f"a{alpha}"), per_device_train_batch_size=16, num_train_epochs=10,
            learning_rate=3e-3, report_to=[], save_strategy="no", counterfactual_alpha=alpha, seed=seed,
            disable_tqdm=True,
        )
        CounterfactualTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer).train()
        consistency[alpha] = evaluate_student(model, tokenizer, test, max_new_tokens=48)["counterfactual_consistency"]
    # seeds 0-4 gave margins from 0.475 (seed 4: 0.525 vs 1.0) to 1.0 when this test was written
    assert consistency[0.5] >= consistency[0.0] + 0.4, consistency


def _save_student(tmp_path, tokenizer):
    d = tmp_path / "init"
    make_t5(len(tokenizer), dropout_rate=0.0).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


@pytest.mark.distributed
def test_torchrun_two_processes_equals_one_process_step(tokenizer, tmp_path):
    """One SGD step with 2 processes x 1 row == 1 process x 2 rows (token-normalised across devices)."""
    init = _save_student(tmp_path, tokenizer)
    data = tmp_path / "train.jsonl"
    shortcut_world(2, 0, informative_every=2).to_json(str(data))
    common = {"model_name_or_path": str(init), "train_file": str(data), "max_steps": 1, "optim": "sgd",
              "learning_rate": 1.0, "lr_scheduler_type": "constant", "max_grad_norm": 0.0, "report_to": [],
              "save_strategy": "no", "counterfactual_alpha": 0.5, "seed": 0, "use_cpu": True,
              "dataloader_drop_last": True}
    ddp_cfg = tmp_path / "ddp.yaml"
    ddp_cfg.write_text(yaml.safe_dump({**common, "output_dir": str(tmp_path / "ddp"),
                                       "per_device_train_batch_size": 1}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
         "-m", "scott_distill", "train", "--config", str(ddp_cfg)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    single_cfg = tmp_path / "single.yaml"
    single_cfg.write_text(yaml.safe_dump({**common, "output_dir": str(tmp_path / "single"),
                                          "per_device_train_batch_size": 2}))
    assert train_main(["--config", str(single_cfg)]) == 0
    ddp = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "ddp")
    single = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "single")
    start = AutoModelForSeq2SeqLM.from_pretrained(init)
    moved = 0
    for (name, a), b, s in zip(ddp.named_parameters(), single.parameters(), start.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
        moved += int(not torch.equal(a, s))
    assert moved > 0
    assert json.loads((tmp_path / "ddp" / "scott_config.json").read_text())["answer_prefix"] == "So the answer is"


def test_evaluate_cli_writes_metrics_and_predictions(tokenizer, tmp_path, capsys):
    init = _save_student(tmp_path, tokenizer)
    data = tmp_path / "test.jsonl"
    shortcut_world(6, 3).to_json(str(data))
    out, preds = tmp_path / "m.json", tmp_path / "p.jsonl"
    evaluate_main(["--model_name_or_path", str(init), "--data", str(data), "--output", str(out),
                   "--predictions_output", str(preds), "--max_new_tokens", "8"])
    metrics = json.loads(out.read_text())
    for key in ("accuracy", "accuracy_gold_rationale", "accuracy_perturbed_rationale", "counterfactual_consistency"):
        assert 0 <= metrics[key] <= 1
    assert metrics["n"] == 6 and "accuracy" in capsys.readouterr().out
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert len(rows) == 6 and {"explanation", "prediction"} <= set(rows[0])
