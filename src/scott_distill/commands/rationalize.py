"""``scott-distill rationalize``: teacher rationales (factual + counterfactual) for a QA dataset."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from trl import TrlParser

from ..checkpoints import load_teacher
from ..formats import RATIONALIZE_CONFIG_NAME
from ..tasks import load_task
from ..teacher.rationalize import RationalizeConfig, generate_rationales
from ._parser import command_parser

logger = logging.getLogger(__name__)


@dataclass
class RationalizeScriptArguments:
    teacher: str = field(metadata={"help": "Teacher model (decoder-only or seq2seq): Hub id, local folder, .gguf "
                         "file (or a folder holding one) or smollm2-135m-instruct (converted once, cached)."})
    output: str = field(metadata={"help": "Output folder: shards while running (resumable), then dataset/."})
    data: str | None = field(default=None, metadata={"help": "Local file/folder in the task's published format, "
                             "or a Hub dataset id; default: the task's Hub id."})
    split: str = field(default="train")
    max_rows: int | None = field(default=None, metadata={"help": "Only the first N rows."})
    teacher_dtype: str = field(default="auto", metadata={"help": "auto, float32, bfloat16 or float16."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Also push the dataset (with a card) to this "
                                    "Hub dataset repo id; token from HF_TOKEN or the cached login."})
    private: bool = field(default=False, metadata={"help": "Create the Hub dataset repo as private."})


def make_parser() -> TrlParser:
    return command_parser("rationalize", (RationalizeScriptArguments, RationalizeConfig),
                          "Write teacher rationales with SCOTT's contrastive decoding (resumable; "
                          "shard over processes with torchrun). Accepts --config file.yaml.")


def run(script: RationalizeScriptArguments, config: RationalizeConfig) -> datasets.Dataset:
    model, tokenizer = load_teacher(script.teacher, script.teacher_dtype)
    data = load_task(config.task, script.data, split=script.split)
    if script.max_rows:
        data = data.select(range(min(script.max_rows, len(data))))
    result = generate_rationales(data, model, tokenizer, config, output_dir=script.output)
    logger.info("%d rationalized rows in %s/dataset", len(result), script.output)
    if script.push_to_hub:
        from ..hub import push_rationale_dataset

        settings = json.loads((Path(script.output) / RATIONALIZE_CONFIG_NAME).read_text())
        push_rationale_dataset(result, script.push_to_hub, Path(script.output) / "hub", settings,
                               private=script.private)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    script, config = make_parser().parse_args_and_config(argv)
    run(script, config)
    return 0
