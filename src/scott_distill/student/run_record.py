"""What a training run is, written beside its checkpoints, so that a resume never continues another run.

``scott-distill train`` and recipes resume from the newest complete checkpoint in ``output_dir`` by themselves.
Run again into the same folder with another objective, data or starting student, that checkpoint belongs to a
different run: continuing it would hand back the other run's weights as this one's. ``train_run.json`` records
what decides the trained weights when a run starts fresh, and which checkpoints were already in the folder then;
a resume whose run differs, or that would take one of those earlier checkpoints, is refused, naming why.

Left out on purpose, so that a resume may change them: the length of training (``num_train_epochs``,
``max_steps``: extending a run), the batch split (``per_device_train_batch_size``,
``gradient_accumulation_steps``: the usual answer to running out of memory), logging, saving and evaluation.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..files import write_json
from ..fingerprints import dataset_fingerprint, model_config_fingerprint, weights_fingerprint

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from .trainer import CounterfactualTrainer

logger = logging.getLogger(__name__)

__all__ = ["LENGTH_SETTINGS", "OPTIMIZATION_SETTINGS", "RUN_SETTINGS", "TRAIN_RUN_NAME", "check_train_run",
           "train_run"]

TRAIN_RUN_NAME = "train_run.json"

#: `TrainingArguments` fields that decide the trained weights of any trainer (the student's, the simulator's)
OPTIMIZATION_SETTINGS = (
    "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay", "optim", "adam_beta1", "adam_beta2",
    "adam_epsilon", "max_grad_norm", "label_smoothing_factor", "seed", "data_seed", "bf16", "fp16",
    "lr_scheduler_kwargs", "optim_args", "neftune_noise_alpha", "dataloader_drop_last", "train_sampling_strategy",
    "auto_find_batch_size",
)
#: the length of training and the batch split: a resume may change them (see above), a finished run is made by them
LENGTH_SETTINGS = ("num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps")
#: training arguments that decide the trained weights (besides the student, its tokenizer and the data)
RUN_SETTINGS = (
    "counterfactual_alpha", "counterfactual_token_share", "factual_tag", "counterfactual_tag", "answer_prefix",
    "without_rationale", "max_source_length", "max_target_length", *OPTIMIZATION_SETTINGS,
)


def train_run(trainer: CounterfactualTrainer) -> dict[str, Any]:
    """The record of the run ``trainer`` is about to train: settings, student and data fingerprints."""
    args = {f.name: getattr(trainer.args, f.name) for f in dataclasses.fields(trainer.args)
            if f.name in RUN_SETTINGS}
    args["counterfactual_token_share"] = trainer.counterfactual_token_share
    model = cast("PreTrainedModel", trainer.model)
    return {"settings": json.loads(json.dumps(args, default=str)),
            "student_config": model_config_fingerprint(model), "student_weights": weights_fingerprint(model),
            "train_dataset": dataset_fingerprint(trainer.train_dataset)}


def _differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    # a setting the record lacks was added to RUN_SETTINGS after that run started: it cannot tell, so not compared
    settings = recorded.get("settings", {})
    out = [f"{k}: {settings[k]!r} -> {v!r}" for k, v in current["settings"].items() if k in settings and settings[k] != v]
    return out + [f"{k} ({recorded.get(k)} -> {current[k]})" for k in ("student_config", "student_weights",
                                                                        "train_dataset")
                  if recorded.get(k) != current[k]]


def check_train_run(trainer: CounterfactualTrainer, resume_from: str | None) -> None:
    """Refuse to resume ``resume_from`` when ``output_dir``'s recorded run differs from this one, or when that
    checkpoint was already there when the recorded run started fresh; write the record when the run starts fresh
    (main process only)."""
    output_dir = Path(trainer.args.output_dir or ".")
    path = output_dir / TRAIN_RUN_NAME
    current = train_run(trainer)
    if resume_from is None:
        # checkpoints of an earlier run left in the folder: a later automatic resume must not take them
        current["earlier_checkpoints"] = sorted(p.name for p in output_dir.glob("checkpoint-*") if p.is_dir())
        if trainer.args.should_save:
            write_json(current, path)
        return
    if not path.exists():
        logger.warning("%s has no %s (a run from before run records): resuming %s without checking that it is "
                       "the same run.", output_dir, TRAIN_RUN_NAME, resume_from)
        return
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is unreadable ({exc}); it says which run the checkpoints in {output_dir} "
                         "belong to. Restore it, or train into a new output_dir.") from exc
    differ = _differences(recorded, current)
    if Path(resume_from).name in recorded.get("earlier_checkpoints", []):
        differ.append(f"{Path(resume_from).name} was in the folder before this run started fresh")
    if differ:
        raise ValueError(
            f"Not resuming {resume_from}: the checkpoints in output_dir={str(output_dir)!r} belong to another "
            f"run ({'; '.join(differ)}). Train into a new output_dir, or delete its checkpoints and "
            f"{TRAIN_RUN_NAME} to start over there.")
