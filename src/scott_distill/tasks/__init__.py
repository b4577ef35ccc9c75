"""Tasks of the SCOTT paper in one normalised schema, with few-shot rationalization prompts.

Every loader returns a ``datasets.Dataset`` with ``id``, ``question``, ``choices`` (list of strings),
``answer`` (the gold choice string), ``rationale`` (human explanation or ``None``) plus the original
fields that do not clash with these names.
"""

from __future__ import annotations

from .loaders import TASKS, TaskSpec, get_task, load_task, normalize_rows
from .prompts import RationalePrompt, load_prompt

__all__ = ["TASKS", "RationalePrompt", "TaskSpec", "get_task", "load_prompt", "load_task", "normalize_rows"]
