"""``scott-distill train``: counterfactual training of a student on a rationale dataset."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from trl import TrlParser

from ..files import load_table
from ..student.model import load_student
from ..student.trainer import CounterfactualTrainer, CounterfactualTrainingArguments
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
                          "All transformers TrainingArguments are accepted; --config file.yaml too.")


def run(script: TrainScriptArguments, args: CounterfactualTrainingArguments) -> str:
    model, tokenizer = load_student(script.model_name_or_path)
    train = load_table(script.train_file)
    if script.max_train_rows:
        train = train.select(range(min(script.max_train_rows, len(train))))
    dev = load_table(script.eval_file) if script.eval_file else None
    trainer = CounterfactualTrainer(model=model, args=args, train_dataset=train, eval_dataset=dev,
                                    processing_class=tokenizer)
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model(args.output_dir)  # weights, tokenizer and scott_config.json (the student format)
    if trainer.is_world_process_zero():
        logger.info("student saved to %s", args.output_dir)
    return str(args.output_dir)


def main(argv: Sequence[str] | None = None) -> int:
    script, args = make_parser().parse_args_and_config(argv)
    run(script, args)
    return 0
