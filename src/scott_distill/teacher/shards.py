"""Resumable output of a rationalization run: the settings fingerprint, one shard file per writer, the merge.

``output_dir`` holds ``run_config.json`` (the settings and the fingerprints of everything that decides the
generations), ``shards/rank{k}.jsonl`` (one JSON line per finished batch, flushed and fsync'ed) and, once every
batch is written, ``dataset/`` (the merged result, ``save_to_disk``). A re-run with the same fingerprint
resumes; a re-run with another one is refused, so old and new generations are never mixed.

Under ``torchrun`` each data-parallel group takes every ``parts``-th batch and its first rank writes its own
shard file; tensor-parallel ranks of one group run the same batches together. Rank 0 merges.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import torch
import torch.distributed as dist

from ..files import write_json
from ..formats import RATIONALE_DATASET_DIR, RATIONALE_SHARD_DIR, RATIONALIZE_CONFIG_NAME

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

__all__ = [
    "ProcessGroup",
    "ShardStore",
    "content_hash",
    "model_config_fingerprint",
    "tokenizer_fingerprint",
    "weights_fingerprint",
]


# -- fingerprints -----------------------------------------------------------------------------------------------


def content_hash(*parts: Iterable[Any]) -> str:
    """Short SHA-256 of the JSON of each part (e.g. dataset columns)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(list(part), default=str).encode())
    return h.hexdigest()[:16]


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Hash of everything that decides token ids: the backend's vocabulary, merges, normalizer, pre-tokenizer,
    post-processor and added tokens (not its padding/truncation state, which every call changes)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("padding", None)
        spec.pop("truncation", None)
    else:
        spec = sorted(tokenizer.get_vocab().items())
    return content_hash([type(tokenizer).__name__], [json.dumps(spec, sort_keys=True)])


@torch.no_grad()
def weights_fingerprint(model: PreTrainedModel, samples_per_tensor: int = 256) -> str:
    """Cheap hash of the teacher's weights: name, dtype and shape of every parameter and buffer, and the values
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
        logger.warning("%d teacher tensors are offloaded (meta device): the resume fingerprint covers their names "
                       "and shapes only.", skipped)
    return h.hexdigest()[:16]


def model_config_fingerprint(model: PreTrainedModel) -> str:
    """The teacher's architecture and settings, without where it was loaded from: the same weights read from
    another folder (a moved checkpoint, another HF_HOME's GGUF conversion) resume the same run."""
    config = model.config.to_dict()
    config.pop("_name_or_path", None)
    return f"{model.config.model_type}:{content_hash([json.dumps(config, sort_keys=True, default=str)])}"


# -- processes --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in a ``torchrun`` job (``world == 1`` without one).

    Tensor-parallel ranks (``tp_plan="auto"``) hold slices of one teacher and must run the same batches
    together: batches are split over the data-parallel groups (``part`` of ``parts``), and one rank per
    group (``writer``) writes.
    """

    rank: int = 0
    world: int = 1
    tensor_parallel: int = 1

    @classmethod
    def join(cls, model: PreTrainedModel) -> ProcessGroup:
        """Initialise the default process group when launched with several processes (gloo on CPU)."""
        if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        tp = int(getattr(model, "tp_size", None) or 1)
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), tp)
        return cls(0, 1, tp)

    @property
    def part(self) -> int:
        return self.rank // self.tensor_parallel

    @property
    def parts(self) -> int:
        return self.world // self.tensor_parallel

    @property
    def writer(self) -> bool:
        return self.rank % self.tensor_parallel == 0

    def barrier(self) -> None:
        if dist.is_available() and dist.is_initialized():
            dist.barrier()


# -- the store --------------------------------------------------------------------------------------------------


def _repair(path: Path) -> None:
    """Drop a partial last line (a crash during a write) so that appends start on a fresh line."""
    if path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            path.write_bytes(data[: data.rfind(b"\n") + 1])


class ShardStore:
    """The output folder of one rationalization run, seen from one process of ``group``."""

    def __init__(self, output_dir: str | os.PathLike, group: ProcessGroup) -> None:
        self.output_dir = Path(output_dir)
        self.group = group
        self.shard_dir = self.output_dir / RATIONALE_SHARD_DIR
        self.dataset_dir = self.output_dir / RATIONALE_DATASET_DIR

    def check_settings(self, settings: dict[str, Any]) -> None:
        """Record ``settings`` in a new folder, or refuse a folder that holds a run with other settings.

        Rank 0 checks (and writes) first, so that the other ranks read a complete file.
        """
        if self.group.rank == 0:
            self._check_settings(settings)
        self.group.barrier()
        if self.group.rank != 0:
            self._check_settings(settings)

    def _check_settings(self, settings: dict[str, Any]) -> None:
        path = self.output_dir / RATIONALIZE_CONFIG_NAME
        if path.exists():
            try:
                stored = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ValueError(
                    f"{path} is corrupted ({exc}); its shards cannot be matched to these settings. Delete "
                    f"{self.output_dir} to start over, or restore the file."
                ) from None
            if not isinstance(stored, dict):
                raise ValueError(f"{path} is corrupted (not a JSON object). Delete {self.output_dir} to start over.")
            diff = {k: (stored.get(k), v) for k, v in settings.items() if stored.get(k) != v}
            if diff:
                details = ", ".join(f"{k}: stored {a!r} vs now {b!r}" for k, (a, b) in diff.items())
                raise ValueError(
                    f"{self.output_dir} holds a run with different settings ({details}). Use another output_dir, "
                    "or delete it to start over."
                )
            return
        if any(p.stat().st_size for p in self.shard_dir.glob("rank*.jsonl")):
            raise ValueError(f"{self.output_dir} holds shards but no {RATIONALIZE_CONFIG_NAME}: they cannot be "
                             "matched to these settings. Delete the folder to start over.")
        write_json(settings, path)

    @property
    def finished(self) -> bool:
        """Whether the merged dataset is already written."""
        return (self.dataset_dir / "dataset_info.json").exists()

    def load_dataset(self) -> datasets.Dataset:
        return datasets.load_from_disk(str(self.dataset_dir))

    def read(self) -> dict[int, list[str]]:
        """Finished batches (index -> texts) from every shard file; a line cut short by a crash is ignored."""
        done: dict[int, list[str]] = {}
        for path in sorted(self.shard_dir.glob("rank*.jsonl")):
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                done[record["batch"]] = record["texts"]
        return done

    def resume(self) -> dict[int, list[str]]:
        """Prepare this process's shard file (a torn last line is dropped) and return the finished batches.

        Every rank of a tensor-parallel group reads the same finished batches.
        """
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        if self.group.writer:
            _repair(self._shard_path)
        done = self.read()
        self.group.barrier()
        return done

    @property
    def _shard_path(self) -> Path:
        return self.shard_dir / f"rank{self.group.part}.jsonl"

    @contextlib.contextmanager
    def writer(self) -> Iterator[Callable[[int, list[str]], None]]:
        """``write(batch, texts)``: append one finished batch to this process's shard, durably (flush + fsync).

        Ranks that do not write (the other ranks of a tensor-parallel group) get a no-op.
        """
        if not self.group.writer:
            yield lambda batch, texts: None
            return
        with open(self._shard_path, "a") as sink:

            def write(batch: int, texts: list[str]) -> None:
                sink.write(json.dumps({"batch": batch, "texts": texts}) + "\n")
                sink.flush()
                os.fsync(sink.fileno())

            yield write

    def merge(self, n_batches: int, assemble: Callable[[dict[int, list[str]]], datasets.Dataset]) -> datasets.Dataset:
        """Once every process is done: rank 0 assembles the dataset from all shards and saves it; all load it."""
        self.group.barrier()
        if self.group.rank == 0:
            texts = self.read()
            missing = [b for b in range(n_batches) if b not in texts]
            if missing:
                raise RuntimeError(f"Shards lack batches {missing[:10]}...; re-run to fill them in.")
            assemble(texts).save_to_disk(str(self.dataset_dir))
        self.group.barrier()
        return self.load_dataset()
