"""Tasks of the SCOTT paper in one normalised schema.

Every loader returns a ``datasets.Dataset`` with ``id``, ``question``, ``choices`` (list of strings),
``answer`` (the gold choice string), ``rationale`` (human explanation or ``None``) plus the original
fields that do not clash with these names. The teacher's few-shot prompts per task are in
``scott_distill.teacher.prompts``.
"""

from __future__ import annotations

from .loaders import SCHEMA, TASKS, TaskSpec, get_task, load_task, normalize_rows

__all__ = ["SCHEMA", "TASKS", "TaskSpec", "get_task", "load_task", "normalize_rows"]
