"""Resumable output of a rationalization run: the settings fingerprint, one shard file per writer, the merge.

``output_dir`` holds ``run_config.json`` (the settings and the fingerprints of everything that decides the
generations), ``shards/rank{k}.jsonl`` (one JSON line per finished batch with a checksum, fsync'ed before the next batch
starts) and, once every batch is written, ``dataset/`` (the merged result, ``save_to_disk`` into a temporary
folder renamed into place). A re-run with the same fingerprint resumes; a re-run with another one is refused,
so old and new generations are never mixed.

A process killed at any moment (``kill -9``, a preempted machine) loses at most the batch it was generating:
a record cut short or damaged is detected (it does not parse, or its checksum fails) and its batch is
generated again; no finished batch is generated twice; ``dataset/`` exists only complete.

Under ``torchrun`` each data-parallel group takes every ``parts``-th batch and its first rank writes its own
shard file; tensor-parallel ranks of one group run the same batches together. Rank 0 merges.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import torch
import torch.distributed as dist

from ..files import write_json
from ..fingerprints import content_hash, model_config_fingerprint, weights_fingerprint
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


def _record(batch: int, texts: list[str]) -> bytes:
    """One shard line: the batch, its texts and a checksum of both (``sha256`` first, so a line cut short
    never parses as a record)."""
    return (json.dumps({"sha256": _checksum(batch, texts), "batch": batch, "texts": texts}) + "\n").encode()


def _checksum(batch: int, texts: list[str]) -> str:
    return hashlib.sha256(json.dumps([batch, texts]).encode()).hexdigest()[:16]


def _parse_record(line: str) -> tuple[int, list[str]] | None:
    """``(batch, texts)`` of an intact shard line, ``None`` for a torn or damaged one (not JSON, wrong fields,
    or a checksum that does not match). Lines written before checksums existed have none and are taken as
    they parse."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(record, dict):
        return None
    batch, texts = record.get("batch"), record.get("texts")
    if not isinstance(batch, int) or not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        return None
    if "sha256" in record and record["sha256"] != _checksum(batch, texts):
        return None
    return batch, texts


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (a power cut could otherwise undo it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _repair(path: Path) -> None:
    """Cut a partial last line (a crash during a write) so that appends start on a fresh line.

    ``os.truncate`` only shortens the file: nothing already written is rewritten, so a crash or a full disk
    during the repair cannot lose a finished batch.
    """
    if path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            os.truncate(path, data.rfind(b"\n") + 1)
            logger.warning("%s: dropped a record cut short by a crash (%d bytes); its batch is generated again.",
                           path, len(data) - data.rfind(b"\n") - 1)


def _append(fd: int, data: bytes) -> None:
    """Write all of ``data`` at the end of ``fd`` and make it durable (fsync)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(root)


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
        """Finished batches (index -> texts) from every shard file.

        A record that is cut short, does not parse or fails its checksum is dropped (with a warning): its batch
        counts as not done and is generated again.
        """
        done: dict[int, list[str]] = {}
        for path in sorted(self.shard_dir.glob("rank*.jsonl")):
            damaged = 0
            for line in path.read_text(errors="replace").splitlines():
                parsed = _parse_record(line)
                if parsed is None:
                    damaged += bool(line.strip())
                    continue
                done[parsed[0]] = parsed[1]
            if damaged:
                logger.warning("%s: %d damaged record(s) dropped (torn or failed checksum); their batches are "
                               "generated again.", path, damaged)
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
        """``write(batch, texts)``: append one finished batch to this process's shard as one checksummed line,
        durably (fsync before it returns).

        A failed write (a full disk) cuts the file back to where the record began, so the file holds only whole
        records, and raises an ``OSError`` that says how to resume. Ranks that do not write (the other ranks of
        a tensor-parallel group) get a no-op.
        """
        if not self.group.writer:
            yield lambda batch, texts: None
            return
        path = self._shard_path
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if created:
            _fsync_dir(path.parent)
        written = 0

        def write(batch: int, texts: list[str]) -> None:
            nonlocal written
            start = os.fstat(fd).st_size
            try:
                _append(fd, _record(batch, texts))
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise type(exc)(exc.errno, (
                    f"Writing batch {batch} to {path} failed ({exc.strerror}). The {written} batch(es) this run "
                    f"wrote before, and every earlier run's, are intact; free space (or fix the folder) and run the "
                    f"same command again to resume from {self.output_dir}.")) from exc
            written += 1

        try:
            yield write
        finally:
            os.close(fd)

    def merge(self, n_batches: int, assemble: Callable[[dict[int, list[str]]], datasets.Dataset]) -> datasets.Dataset:
        """Once every process is done: rank 0 assembles the dataset from all shards and saves it; all load it.

        The dataset is saved to a temporary folder, fsync'ed and renamed to ``dataset/``: ``dataset/`` exists
        only complete, and a crash during the merge leaves the shards to merge again.
        """
        self.group.barrier()
        if self.group.rank == 0:
            texts = self.read()
            missing = [b for b in range(n_batches) if b not in texts]
            if missing:
                raise RuntimeError(f"Shards lack batches {missing[:10]}...; re-run to fill them in.")
            staging = self.output_dir / f".{RATIONALE_DATASET_DIR}.tmp"
            if staging.exists():  # left by a crash during an earlier merge
                shutil.rmtree(staging)
            assemble(texts).save_to_disk(str(staging))
            _fsync_tree(staging)
            if self.dataset_dir.exists():  # incomplete: a complete one would have been loaded, not merged again
                shutil.rmtree(self.dataset_dir)
            os.replace(staging, self.dataset_dir)
            _fsync_dir(self.output_dir)
        self.group.barrier()
        return self.load_dataset()
