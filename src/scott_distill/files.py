"""Data I/O through ``datasets``: local files by extension, otherwise a Hub dataset id."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import datasets

__all__ = ["ensure_writable_dir", "load_table", "write_json"]

_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}


def load_table(path_or_id: str, split: str = "train", **kwargs: Any) -> datasets.Dataset:
    """Load a table as a ``datasets.Dataset``.

    A local file is read with the builder its extension names (json/jsonl/csv/tsv/parquet), a local folder
    saved with ``save_to_disk`` with ``load_from_disk``, anything else is passed to ``load_dataset`` as a Hub id.
    """
    path = Path(path_or_id)
    if path.is_file():
        builder = _BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"Unsupported file type {path.suffix!r} for {path}; use one of {sorted(_BUILDERS)}.")
        if path.suffix.lower() == ".tsv":
            kwargs.setdefault("delimiter", "\t")
        with open(path, "rb") as f:
            if not f.read(1 << 16).strip():
                raise ValueError(f"{path} is empty: there are no rows to load.")
        try:
            table = datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
        except StopIteration:  # the json builder on a file without records
            raise ValueError(f"{path} holds no rows.") from None
        except ValueError as exc:
            if "corresponds to no data" in str(exc):  # a csv with a header and nothing else
                raise ValueError(f"{path} holds no rows (a header at most).") from None
            raise
        if len(table) == 0:
            raise ValueError(f"{path} holds no rows.")
        return table
    if path.is_dir() and (path / "dataset_info.json").exists():
        loaded = datasets.load_from_disk(str(path))
        return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    if path.exists() or os.sep in path_or_id and path_or_id.startswith((".", "/")):
        raise ValueError(f"{path_or_id!r} is neither a json/jsonl/csv/tsv/parquet file nor a saved dataset folder.")
    return datasets.load_dataset(path_or_id, split=split, **kwargs)


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON, atomically and durably: a temporary file, fsync'ed, renamed over ``path``
    (a crash leaves the old file or the new one, never half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(obj, indent=2, default=float))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_writable_dir(path: str | os.PathLike, argument: str) -> Path:
    """Check, before any long work starts, that the folder ``path`` can be created (if missing) and written in.

    The check writes in a uniquely named scratch folder inside the nearest folder that exists (``path`` itself
    when it exists) and removes it again: a run refused later for another reason leaves nothing behind, and
    processes checking the same folder at once (one per rank under ``torchrun``) never create or remove a
    folder another one is using. An ``OSError`` of the same kind names ``argument``, the folder and the reason.
    """
    path = Path(path)
    nearest = next(p for p in (path, *path.parents) if p.exists() or p.is_symlink())
    try:
        if nearest == path:
            path.mkdir(exist_ok=True)  # an existing file raises FileExistsError: the error users recognise
        scratch = tempfile.mkdtemp(prefix=".write-test-", dir=nearest)
        try:
            fd, _ = tempfile.mkstemp(dir=scratch)
            try:
                os.write(fd, b"0")
                os.fsync(fd)
            finally:
                os.close(fd)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    except OSError as exc:
        raise type(exc)(exc.errno, f"`{argument}` {str(path)!r} is not a writable folder ({exc.strerror}); "
                        "choose another folder or fix its permissions or free space.") from exc
    return path
