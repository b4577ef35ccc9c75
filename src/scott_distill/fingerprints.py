"""Fingerprints of what decides a long job's result (data, model weights, model config), for resume checks.

Shared by rationalization (``teacher/shards.py``: ``run_config.json``) and training (``student/run_record.py``:
``train_run.json``), which do not import each other.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import datasets
import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

__all__ = ["content_hash", "dataset_fingerprint", "model_config_fingerprint", "weights_fingerprint"]


def content_hash(*parts: Iterable[Any]) -> str:
    """Short SHA-256 of the JSON of each part (e.g. dataset columns)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(list(part), default=str).encode())
    return h.hexdigest()[:16]


def dataset_fingerprint(dataset: Any) -> str | None:
    """Hash of every column of a ``datasets.Dataset`` (``None`` for a stream, which cannot be read twice)."""
    if not isinstance(dataset, datasets.Dataset):
        return None
    return content_hash([len(dataset)], *(dataset[c] for c in sorted(dataset.column_names)))


@torch.no_grad()
def weights_fingerprint(model: PreTrainedModel, samples_per_tensor: int = 256) -> str:
    """Cheap hash of a model's weights: name, dtype and shape of every parameter and buffer, and the values
    at ``samples_per_tensor`` evenly spaced positions of each. The cost grows with the number of tensors, not
    their size (a 20B model reads a few hundred thousand values); a changed checkpoint is caught unless it
    differs only at positions no sample touches."""
    h = hashlib.sha256()
    skipped = 0
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        if tensor.device.type == "meta" or tensor.numel() == 0:  # offloaded: no values to read
            skipped += tensor.device.type == "meta"
            continue
        if hasattr(tensor, "full_tensor"):  # a tensor-parallel DTensor: every rank must hash the same values
            tensor = tensor.full_tensor()
        flat = tensor.detach().reshape(-1)
        n = min(samples_per_tensor, flat.numel())
        idx = torch.arange(n, device=flat.device) * (flat.numel() - 1) // max(n - 1, 1)
        h.update(flat[idx].double().cpu().numpy().tobytes())
    if skipped:
        logger.warning("%d tensors are offloaded (meta device): the resume fingerprint covers their names "
                       "and shapes only.", skipped)
    return h.hexdigest()[:16]


def model_config_fingerprint(model: PreTrainedModel) -> str:
    """The model's architecture and settings, without where it was loaded from: the same weights read from
    another folder (a moved checkpoint, another HF_HOME's GGUF conversion) resume the same run."""
    config = model.config.to_dict()
    config.pop("_name_or_path", None)
    return f"{model.config.model_type}:{content_hash([json.dumps(config, sort_keys=True, default=str)])}"
