"""Leakage-adjusted simulatability: the formula, the `evaluate` module loader, and simulators."""

from __future__ import annotations

from .formula import (
    EMPTY_BIN_RULES,
    calibrate_leakage_probabilities,
    las_from_correctness,
    leakage_adjusted_simulatability,
    validate_labels,
)
from .loading import las_module_path, load_las

__all__ = [
    "EMPTY_BIN_RULES",
    "calibrate_leakage_probabilities",
    "las_from_correctness",
    "las_module_path",
    "leakage_adjusted_simulatability",
    "load_las",
    "validate_labels",
]
