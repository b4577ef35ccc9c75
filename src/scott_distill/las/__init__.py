"""Leakage-adjusted simulatability: the formula, the `evaluate` module loader, and simulators."""

from __future__ import annotations

from .formula import las_from_correctness, leakage_adjusted_simulatability
from .loading import las_module_path, load_las

__all__ = ["las_from_correctness", "leakage_adjusted_simulatability", "las_module_path", "load_las"]
