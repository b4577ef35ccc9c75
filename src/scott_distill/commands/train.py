"""``scott-distill train``: counterfactual training of a student on a rationale dataset."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from trl import TrlParser

from ..files import load_table
from ..interrupts import RunInterrupted
from ..student.model import load_student
from ..student.trainer import CounterfactualTrainer, CounterfactualTrainingArguments, resume_checkpoint
from ._parser import command_parser

logger = logging.getLogger(__name__)


@dataclass
class TrainScriptArguments:
    model_name_or_path: str = field(metadata={"help": "Student to start from: Hub id, local folder, .gguf file "
                                   "or smollm2-135m-instruct."})
    train_file: str = field(metadata={"help": "Rationale dataset (file, saved folder or Hub id) to train on."})
    eval_file: str | None = field(default=None, metadata={"help": "Optional dev set (same schema)."})
    max_train_rows: int | None = field(default=None, metadata={"help": "Use only the first N rows."})


def make_parser() -> TrlParser:
    return command_parser("train", (TrainScriptArguments, CounterfactualTrainingArguments),
                          "Counterfactual training (SCOTT) of a seq2seq or decoder-only student. "
                          "All transformers TrainingArguments are accepted; --config file.yaml too. "
                          "Resumes from the newest complete checkpoint in --output_dir (after a crash, kill or "
                          "preemption: run the same command again); --resume_from_checkpoint PATH picks one, "
                          "false starts over. SIGTERM / SIGINT: a checkpoint after the optimizer step in "
                          "progress, then exit 143 / 130 with the command that resumes.")


def run(script: TrainScriptArguments, args: CounterfactualTrainingArguments) -> str:
    model, tokenizer = load_student(script.model_name_or_path, seed=args.seed)
    train = load_table(script.train_file)
    if script.max_train_rows:
        train = train.select(range(min(script.max_train_rows, len(train))))
    dev = load_table(script.eval_file) if script.eval_file else None
    trainer = CounterfactualTrainer(model=model, args=args, train_dataset=train, eval_dataset=dev,
                                    processing_class=tokenizer)
    trainer.train(resume_from_checkpoint=resume_checkpoint(args))
    trainer.save_model(args.output_dir)  # weights, tokenizer and scott_config.json (the student format)
    if trainer.is_world_process_zero():
        logger.info("student saved to %s", args.output_dir)
    return str(args.output_dir)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    script, args = make_parser().parse_args_and_config(argv)
    try:
        run(script, args)
    except RunInterrupted as exc:
        # from exactly the checkpoint this stop saved; without one (a second signal), the newest complete one
        exc.resume_argv = ["train", *_without_flag(argv, "--resume_from_checkpoint"),
                           *(["--resume_from_checkpoint", exc.checkpoint] if exc.checkpoint else [])]
        raise
    return 0


def _without_flag(argv: list[str], flag: str) -> list[str]:
    """``argv`` without ``flag`` and its value (``--flag value`` or ``--flag=value``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        elif not arg.startswith(f"{flag}="):
            out.append(arg)
    return out
