"""What decided a recipe stage's cached result, written beside it, so that a re-run with other settings is refused.

A recipe reads a finished stage back from disk instead of running it again (the rationales, each seed's student,
each seed's metrics). Read back on the folder's existence alone, a re-run into the same ``output_dir`` with other
settings -- the full run after a smoke run with ``--max_train_rows 4``, another ``--teacher``, another
``--train.counterfactual_alpha`` -- would report the old results as the new run's. Each finished stage therefore
writes ``recipe_stage.json``: the settings that decided it, including those of the stages it was made from, and a
cached result is used only when its record equals what the run would make now.

Checked without loading any model (a 7B teacher is not loaded to find that its rationales are cached): the record
names the models as the recipe names them and fingerprints the data rows; the rationalization and training
folders' own run records (``run_config.json``, ``train_run.json``) check the weights when a stage resumes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .files import write_json

logger = logging.getLogger(__name__)

__all__ = ["STAGE_RECORD_NAME", "check_stage_record", "settings_of", "write_stage_record"]

STAGE_RECORD_NAME = "recipe_stage.json"


def settings_of(config: Any, names: Sequence[str] | None = None, *, leave_out: Sequence[str] = ()) -> dict[str, Any]:
    """The fields ``names`` (default: every field but ``leave_out``) of the dataclass ``config``, as JSON reads
    them back (enums as their values, tuples as lists), so that a record read from disk compares equal."""
    fields = [f.name for f in dataclasses.fields(config)]
    chosen = [n for n in (names if names is not None else fields) if n not in leave_out]
    missing = sorted(set(chosen) - set(fields))
    if missing:
        raise ValueError(f"{type(config).__name__} has no fields {missing}.")
    return json.loads(json.dumps({n: getattr(config, n) for n in chosen}, default=str))


def _differences(stored: Any, current: Any, where: str = "") -> list[str]:
    """``key: stored -> now`` for every leaf where the two records differ (dotted keys)."""
    if isinstance(stored, Mapping) and isinstance(current, Mapping):
        out: list[str] = []
        for key in sorted({*stored, *current}):
            name = f"{where}.{key}" if where else str(key)
            if key not in current:
                out.append(f"{name}: {stored[key]!r} -> (not a setting now)")
            elif key not in stored:
                out.append(f"{name}: (not recorded) -> {current[key]!r}")
            else:
                out.extend(_differences(stored[key], current[key], name))
        return out
    return [] if stored == current else [f"{where or 'record'}: {stored!r} -> {current!r}"]


def check_stage_record(folder: str | Path, record: Mapping[str, Any], stage: str) -> None:
    """Refuse the cached ``stage`` result in ``folder`` when the record written beside it differs from
    ``record`` (what this run would make); a result from before records existed is used with a warning."""
    path = Path(folder) / STAGE_RECORD_NAME
    if not path.exists():
        logger.warning("%s: the cached result in %s has no %s (made before stage records): using it without "
                       "checking that this run's settings made it.", stage, folder, STAGE_RECORD_NAME)
        return
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is unreadable ({exc}); it says which settings made the cached {stage} result "
                         f"in {folder}. Restore it, or delete {folder} to run the stage again.") from exc
    differ = _differences(stored, json.loads(json.dumps(record, default=str)))
    if differ:
        shown = "; ".join(differ[:8]) + (f"; and {len(differ) - 8} more" if len(differ) > 8 else "")
        raise ValueError(
            f"{folder} holds the {stage} stage's result, made with other settings ({shown}): not what this run would "
            f"make. Use another output_dir, or delete {folder} (and what was made from it) to run the stage again.")


def write_stage_record(folder: str | Path, record: Mapping[str, Any]) -> None:
    """Record what made the finished stage result in ``folder``."""
    write_json(json.loads(json.dumps(record, default=str)), Path(folder) / STAGE_RECORD_NAME)
