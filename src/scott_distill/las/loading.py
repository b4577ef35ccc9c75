"""Locate and load the LAS `evaluate` module shipped with the package (works offline, from any cwd)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import evaluate

__all__ = ["las_module_path", "load_las"]


def las_module_path() -> str:
    """Absolute path of the LAS metric script ``las.py`` (``metrics/las/las.py`` in the repository).

    ``evaluate.load`` takes it from any working directory; the script's own name (``las``) names the module.
    """
    # `scott_distill.las.evaluate_module` is the repository's metrics/las (pyproject package-dir): an editable
    # install points at the source, a wheel carries a copy (in a folder not named `las`, hence the script path).
    return str((Path(str(resources.files("scott_distill.las.evaluate_module"))) / "las.py").resolve())


def load_las(**kwargs: Any) -> evaluate.EvaluationModule:
    """``evaluate.load`` of the LAS metric module; keyword arguments go to ``evaluate.load``."""
    import evaluate

    return evaluate.load(las_module_path(), **kwargs)
