"""What decided a recipe stage's cached result, written beside it, so that a re-run with other settings is refused.

A recipe reads a finished stage back from disk instead of running it again (the rationales, each seed's student,
each seed's metrics). Read back on the folder's existence alone, a re-run into the same ``output_dir`` with other
settings -- the full run after a smoke run with ``--max_train_rows 4``, another ``--teacher``, another
``--train.counterfactual_alpha`` -- would report the old results as the new run's. Each stage therefore writes
``recipe_stage.json`` before its result: the settings that decide it, including those of the stages it is made
from, keyed by the recipe flag that sets each, and a cached result is used only when its record equals what the run
would make now. A result without a record cannot be checked and is refused too: a record written later from the flags of
that later run would vouch for settings that never made it.

Checked without loading any model (a 7B teacher is not loaded to find that its rationales are cached): the record
names the models as the recipe names them (a local folder by its absolute path) and fingerprints the data rows and
the prompt text; the rationalization and training folders' own run records (``run_config.json``,
``train_run.json``) check the weights when a stage resumes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .files import write_json

logger = logging.getLogger(__name__)

__all__ = ["STAGE_RECORD_NAME", "check_stage_record", "model_name", "settings_of", "write_stage_record"]

STAGE_RECORD_NAME = "recipe_stage.json"
_ABSENT = object()


def settings_of(config: Any, names: Sequence[str] | None = None, *, leave_out: Sequence[str] = (),
                prefix: str = "") -> dict[str, Any]:
    """The fields ``names`` (default: every field but ``leave_out``) of the dataclass ``config``, keyed
    ``prefix + name`` (the recipe flag, e.g. ``train.learning_rate``) and as JSON reads them back (enums as their
    values, tuples as lists), so that a record read from disk compares equal."""
    fields = [f.name for f in dataclasses.fields(config)]
    chosen = [n for n in (names if names is not None else fields) if n not in leave_out]
    missing = sorted(set(chosen) - set(fields))
    if missing:
        raise ValueError(f"{type(config).__name__} has no fields {missing}.")
    return _as_json({f"{prefix}{n}": getattr(config, n) for n in chosen})


def model_name(name: str) -> str:
    """A model as a record names it: a local path by its absolute form (``./student`` and ``/abs/student`` are one
    model), anything else (a Hub id, a bundled short name) as given."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def _as_json(record: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(record, default=str))


def _differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``key: stored -> now`` for every key where the two flat records differ."""
    out = []
    for key in sorted({*stored, *current}):
        if key not in current:
            out.append(f"{key}: {stored[key]!r} -> (not a setting now)")
        elif key not in stored:
            out.append(f"{key}: (not recorded) -> {current[key]!r}")
        elif stored[key] != current[key]:
            out.append(f"{key}: {stored[key]!r} -> {current[key]!r}")
    return out


def check_stage_record(folder: str | Path, record: Mapping[str, Any], stage: str,
                       remake: Callable[[set[str] | None], str]) -> None:
    """Refuse the cached ``stage`` result in ``folder`` unless the record written beside it equals ``record``
    (what this run would make). ``remake(keys)`` says what to delete to make the result again, given the keys that
    differ (``None``: there is no record)."""
    path = Path(folder) / STAGE_RECORD_NAME
    if not path.exists():
        raise ValueError(
            f"{folder} holds a {stage} result without {STAGE_RECORD_NAME} (made before stage records existed, or "
            "the file was removed): which settings made it cannot be checked. Use another output_dir, or "
            f"{remake(None)} to make it again with this run's settings.")
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is unreadable ({exc}); it says which settings made the cached {stage} result "
                         f"in {folder}. Restore it, or {remake(None)} to make the result again.") from exc
    current = _as_json(record)
    differ = _differences(stored, current)
    if differ:
        keys = {k for k in {*stored, *current} if stored.get(k, _ABSENT) != current.get(k, _ABSENT)}
        shown = "; ".join(differ[:8]) + (f"; and {len(differ) - 8} more" if len(differ) > 8 else "")
        raise ValueError(
            f"{folder} holds the {stage} stage's result, made with other settings ({shown}): not what this run "
            "would make. Run with the settings it was made with, use another output_dir, or "
            f"{remake(keys)} to make it again.")


def write_stage_record(folder: str | Path, record: Mapping[str, Any]) -> None:
    """Record what makes the stage result in ``folder`` (written before the result: a crash then leaves no
    complete result without its record)."""
    write_json(_as_json(record), Path(folder) / STAGE_RECORD_NAME)
