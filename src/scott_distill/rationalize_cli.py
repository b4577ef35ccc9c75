"""``scott-distill rationalize``: teacher rationales (factual + counterfactual) for a QA dataset."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import AutoTokenizer
from trl import TrlParser

from .checkpoints import resolve_checkpoint
from .rationalize import PERTURBATIONS, generate_rationales
from .student_io import load_generative_model
from .tasks import TASKS, load_task

logger = logging.getLogger(__name__)


@dataclass
class RationalizeArguments:
    teacher: str = field(metadata={"help": "Teacher model (decoder-only or seq2seq): Hub id, local folder, .gguf "
                         "file (or a folder holding one) or smollm2-135m-instruct (converted once, cached)."})
    task: str = field(metadata={"help": f"One of {sorted(TASKS)}."})
    output: str = field(metadata={"help": "Output folder: shards while running (resumable), then dataset/."})
    data: str | None = field(default=None, metadata={"help": "Local file/folder in the task's published format, "
                             "or a Hub dataset id; default: the task's Hub id."})
    split: str = field(default="train")
    perturbation: str = field(default="wrong", metadata={"help": f"Contrast prompts: one of {PERTURBATIONS}."})
    alpha: float = field(default=0.5, metadata={"help": "Weight of the contrast branch."})
    counterfactual: bool = field(default=True, metadata={"help": "Also rationalize a random wrong answer."})
    batch_size: int = field(default=16)
    max_new_tokens: int = field(default=128)
    max_rows: int | None = field(default=None, metadata={"help": "Only the first N rows."})
    prompt: str | None = field(default=None, metadata={"help": "Prompt file or template string (default: task's)."})
    use_chat_template: bool = field(default=False)
    plausibility_threshold: float | None = field(default=None)
    seed: int = field(default=0)
    torch_dtype: str = field(default="auto", metadata={"help": "auto, float32, bfloat16 or float16."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Also push the dataset (with a card) to this "
                                    "Hub dataset repo id; token from HF_TOKEN or the cached login."})
    private: bool = field(default=False, metadata={"help": "Create the Hub dataset repo as private."})


def load_teacher(name: str, dtype: str):
    name = resolve_checkpoint(name)  # GGUF files and bundled short names become a converted folder
    kwargs = {} if dtype == "auto" else {"dtype": getattr(torch, dtype)}
    model = load_generative_model(name, **kwargs).eval()
    if torch.cuda.is_available():
        model = model.to(f"cuda:{torch.cuda.current_device()}")
    return model, AutoTokenizer.from_pretrained(name)


def run(args: RationalizeArguments):
    model, tokenizer = load_teacher(args.teacher, args.torch_dtype)
    data = load_task(args.task, args.data, split=args.split)
    if args.max_rows:
        data = data.select(range(min(args.max_rows, len(data))))
    result = generate_rationales(
        data, model, tokenizer, task=args.task, perturbation=args.perturbation, alpha=args.alpha,
        counterfactual=args.counterfactual, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
        output_dir=args.output, prompt=args.prompt, use_chat_template=args.use_chat_template,
        plausibility_threshold=args.plausibility_threshold, seed=args.seed,
    )
    logger.info("%d rationalized rows in %s/dataset", len(result), args.output)
    if args.push_to_hub:
        import json
        from pathlib import Path

        from .hub import push_rationale_dataset

        settings = json.loads((Path(args.output) / "run_config.json").read_text())
        push_rationale_dataset(result, args.push_to_hub, Path(args.output) / "hub", settings, private=args.private)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = TrlParser(RationalizeArguments, prog="scott-distill rationalize",
                       description="Write teacher rationales with SCOTT's contrastive decoding (resumable; "
                       "shard over processes with torchrun). Accepts --config file.yaml.")
    (args,) = parser.parse_args_and_config(argv)
    run(args)
    return 0
