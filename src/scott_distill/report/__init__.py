"""Compare runs: statistics across seeds and questions, ``results.json`` loading, tables and plots."""

from __future__ import annotations

from .stats import (
    FINDING_RULE,
    Estimate,
    describe_direction,
    paired_difference,
    seed_level_difference,
    seed_level_estimate,
    two_stage_estimate,
)

__all__ = [
    "FINDING_RULE",
    "Estimate",
    "describe_direction",
    "paired_difference",
    "seed_level_difference",
    "seed_level_estimate",
    "two_stage_estimate",
]
