"""Locate and load the LAS `evaluate` module shipped with the package (works offline, from any cwd)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import evaluate

__all__ = ["las_module_path", "load_las"]


def las_module_path() -> str:
    """Absolute path of the folder holding ``las.py`` (``metrics/las`` in the repository)."""
    # `scott_distill.metrics.las` is mapped onto the repository's metrics/las (pyproject package-dir),
    # so an editable install points at the source and a wheel carries a copy.
    return str(Path(str(resources.files("scott_distill.metrics.las"))).resolve())


def load_las(**kwargs) -> evaluate.EvaluationModule:
    """``evaluate.load`` of the LAS metric module; keyword arguments go to ``evaluate.load``."""
    return evaluate.load(las_module_path(), **kwargs)
