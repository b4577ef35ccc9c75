"""Worker for tests/test_student_objective.py's torchrun tests: evaluate, then train, through the Python API.

    torchrun --nproc_per_node 2 tests/ddp_objective_worker.py STUDENT_DIR TRAIN.json EVAL.json OUT_DIR \
        --average_tokens_across_devices false --gradient_accumulation_steps 2

TRAIN and EVAL hold JSON lists of rows with every key on every row (read with ``Dataset.from_list``, no cache
files two processes could race on). Evaluates the initial student on EVAL (per-process eval batches of 2 rows) and writes the metrics to
``OUT_DIR/eval.json``, then trains on TRAIN with plain SGD, one row per process and micro-batch, in order, and saves
the student to ``OUT_DIR``. The test compares both with one-process references.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
from pathlib import Path

import datasets
import torch.distributed as dist
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from scott_distill import CounterfactualTrainer, CounterfactualTrainingArguments


def _rows(path: str) -> datasets.Dataset:
    return datasets.Dataset.from_list(json.loads(Path(path).read_text()))


def main() -> None:
    p = argparse.ArgumentParser()
    for name in ("student", "train", "eval", "out"):
        p.add_argument(name)
    p.add_argument("--average_tokens_across_devices", choices=["true", "false"], required=True)
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    p.add_argument("--counterfactual_alpha", type=float, default=0.5)
    p.add_argument("--torch_compile", action="store_true", help="torch.compile with the eager backend")
    args = p.parse_args()
    logging.disable(logging.WARNING)
    tokenizer = AutoTokenizer.from_pretrained(args.student)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.student)
    training_args = CounterfactualTrainingArguments(
        output_dir=args.out, per_device_train_batch_size=1, per_device_eval_batch_size=2,
        gradient_accumulation_steps=args.gradient_accumulation_steps, num_train_epochs=1,
        counterfactual_alpha=args.counterfactual_alpha,
        average_tokens_across_devices=args.average_tokens_across_devices == "true",
        optim="sgd", learning_rate=0.5, lr_scheduler_type="constant", max_grad_norm=0.0, weight_decay=0.0,
        train_sampling_strategy="sequential", seed=0, report_to=[], save_strategy="no", disable_tqdm=True,
        use_cpu=True, dataloader_drop_last=False, torch_compile=args.torch_compile,
        torch_compile_backend="eager" if args.torch_compile else None)
    trainer = CounterfactualTrainer(model=model, args=training_args, processing_class=tokenizer,
                                    train_dataset=_rows(args.train))
    metrics = trainer.evaluate(_rows(args.eval))
    trainer.train()
    trainer.save_model(args.out)
    if training_args.process_index == 0:
        (Path(args.out) / "eval.json").write_text(json.dumps(metrics))
    # the DistributedDataParallel model goes before its process group: destroyed while it was alive, the group hung
    # a finished rank at exit in 2 of 12 runs here (0 of 16 with this order; docs/training.md)
    del trainer, model
    gc.collect()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
