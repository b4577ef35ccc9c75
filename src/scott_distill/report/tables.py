"""One table comparing runs: per condition and metric mean ± sd over seeds with an interval, then the paired
differences with their intervals and the finding rule."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .runs import RunSet
from .stats import (
    FINDING_RULE,
    Estimate,
    describe_direction,
    paired_difference,
    seed_level_difference,
    seed_level_estimate,
    two_stage_estimate,
)

__all__ = ["AGGREGATES_ONLY_NOTE", "CellRow", "ComparisonRow", "Report", "build_report", "format_table"]

AGGREGATES_ONLY_NOTE = (
    "Aggregates only: these results hold one number per metric and seed, no per-question outcomes (files written "
    "before results schema 1, or a metric written without `per_question`). Their cells show mean ± sd over seeds "
    "with an interval that resamples seeds only (it leaves out question sampling and is too narrow with few "
    "seeds); their paired differences get no interval and no finding. Question-level intervals need results "
    "schema 1 with per-question outcomes."
)


@dataclass(frozen=True)
class CellRow:
    condition: str
    metric: str
    kind: str  # "mean", "las" (per-question outcomes) or "aggregate"
    estimate: Estimate


@dataclass(frozen=True)
class ComparisonRow:
    a: str
    b: str
    metric: str
    kind: str
    estimate: Estimate

    @property
    def direction(self) -> str:
        return describe_direction(self.estimate, self.a, self.b)


@dataclass
class Report:
    cells: list[CellRow]
    comparisons: list[ComparisonRow]
    confidence_level: float
    n_resamples: int
    aggregates_only: bool  # every cell is aggregate-only (no per-question outcomes at all)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def est(e: Estimate) -> dict[str, Any]:
            return {"mean": e.mean, "sd": e.sd, "ci_low": e.ci_low, "ci_high": e.ci_high, "n_seeds": e.n_seeds,
                    "per_seed": {str(k): v for k, v in e.per_seed.items()},
                    "n_questions": {str(k): v for k, v in e.n_questions.items()}, "resampling": e.resampling,
                    "note": e.note}

        return {
            "confidence_level": self.confidence_level, "n_resamples": self.n_resamples,
            "aggregates_only": self.aggregates_only, "finding_rule": FINDING_RULE, "notes": self.notes,
            "cells": [{"condition": c.condition, "metric": c.metric, "kind": c.kind, **est(c.estimate)}
                      for c in self.cells],
            "comparisons": [{"a": c.a, "b": c.b, "metric": c.metric, "kind": c.kind, "direction": c.direction,
                             **est(c.estimate)} for c in self.comparisons],
        }


def _on_shared_questions(a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]]) -> tuple[
        dict[int, dict[str, Any]], dict[int, dict[str, Any]], list[str]]:
    """LAS outcomes of A and B restricted, per seed, to the question ids both hold, and what was left out.

    LAS is measured only on rows whose student answer is among the choices, so two students' LAS cells can cover
    different questions of the same seed; their paired difference is taken on the shared ones. (Other metrics
    keep the strict rule: different question ids are refused.)
    """
    shared_a, shared_b, dropped = {}, {}, []
    for seed in a:
        if seed not in b:  # different seeds: left to paired_difference's error
            return a, b, []
        ids = set(a[seed]) & set(b[seed])
        only_a, only_b = len(a[seed]) - len(ids), len(b[seed]) - len(ids)
        if only_a or only_b:
            dropped.append(f"seed {seed}: {only_a} question(s) of A only, {only_b} of B only, {len(ids)} shared")
        shared_a[seed] = {q: v for q, v in a[seed].items() if q in ids}
        shared_b[seed] = {q: v for q, v in b[seed].items() if q in ids}
    return shared_a, shared_b, dropped


def _against_the_first_run(run_set: RunSet) -> tuple[list[tuple[str, str]], str]:
    """The comparisons of runs that declare none (recipe runs: one condition each, runs differing by their labels):
    every run's condition minus the first run's, when all are the same condition of the same kind and have the
    same seeds; and a note that says so (or why a run was left out). No pairs when the runs are not of that shape.
    """
    conds = list(run_set.conditions.values())
    if len(conds) < 2 or len({(c.kind, c.condition) for c in conds}) > 1:
        return [], ""
    base, others = conds[0], conds[1:]
    pairs = [(c.name, base.name) for c in others if c.seeds == base.seeds]
    unpaired = [f"{c.name} (seeds {c.seeds})" for c in others if c.seeds != base.seeds]
    note = (f"No comparison was declared or asked for (--compare): each run is compared with the first one given, "
            f"{base.name!r}, as A - B on the same seeds and questions.")
    if unpaired:
        note += (f" Not compared, their seeds differ from the first run's {base.seeds} (a paired difference needs "
                 f"the same seeds): {', '.join(unpaired)}.")
    return pairs, note


def _metrics_to_report(run_set: RunSet, metrics: Sequence[str] | None) -> list[str]:
    found: dict[str, None] = {}
    for c in run_set.conditions.values():
        found.update(dict.fromkeys(c.metric_names()))
    if not metrics:
        return list(found)
    unknown = [m for m in metrics if m not in found]
    if unknown:
        raise ValueError(f"`metrics` names {unknown}, which no run holds; the runs hold {list(found)}.")
    return list(dict.fromkeys(metrics))


def build_report(
    run_set: RunSet,
    metrics: Sequence[str] | None = None,
    comparisons: Sequence[tuple[str, str]] | None = None,
    n_resamples: int = 10000,
    confidence_level: float = 0.95,
    seed: int = 0,
    empty_bin: str = "other",
) -> Report:
    """Every (condition, metric) cell and every paired difference, with the estimators of `report.stats`.

    Args:
        run_set: `collect_runs`' grouping.
        metrics: metrics to report (default: all found). A condition without a metric is left out of its rows;
            a metric present in some seeds of a condition but not others raises.
        comparisons: ``(A, B)`` pairs of condition names (display names, or a file's condition name when
            unambiguous) for the paired differences A - B; default: the pairs the files declare. Each is reported
            for every selected metric both conditions hold.
        n_resamples: bootstrap resamples per interval.
        confidence_level: coverage of each interval.
        seed: seed of the bootstrap.
        empty_bin: the LAS rule for an empty leaked/non-leaked bin (`scott_distill.las.formula.EMPTY_BIN_RULES`).
    """
    selected = _metrics_to_report(run_set, metrics)
    cells: list[CellRow] = []
    for cond in run_set.conditions.values():
        for metric in selected:
            if not cond.has_metric(metric):
                continue
            per_q = cond.per_question(metric)
            if per_q is None:
                estimate = seed_level_estimate(cond.aggregates(metric), n_resamples, confidence_level, seed)
                cells.append(CellRow(cond.name, metric, "aggregate", estimate))
            else:
                kind, outcomes = per_q
                estimate = two_stage_estimate(outcomes, kind, n_resamples, confidence_level, seed, empty_bin)
                cells.append(CellRow(cond.name, metric, kind, estimate))
    pairs = run_set.comparisons if comparisons is None else [
        (run_set.resolve(a), run_set.resolve(b)) for a, b in comparisons]
    notes = []
    if comparisons is None and not pairs:
        pairs, note = _against_the_first_run(run_set)
        notes += [note] if note else []
    rows: list[ComparisonRow] = []
    shared_las: list[str] = []
    for a_name, b_name in pairs:
        a, b = run_set.conditions[a_name], run_set.conditions[b_name]
        shared = [m for m in selected if a.has_metric(m) and b.has_metric(m)]
        if comparisons is not None and metrics and len(shared) < len(selected):
            lacking = [m for m in selected if m not in shared]
            raise ValueError(f"comparison {a_name!r} - {b_name!r}: metrics {lacking} are not held by both.")
        for metric in shared:
            pa, pb = a.per_question(metric), b.per_question(metric)
            try:
                if pa is None or pb is None:
                    estimate = seed_level_difference(a.aggregates(metric), b.aggregates(metric))
                    row_kind = "aggregate"
                else:
                    if pa[0] != pb[0]:
                        raise ValueError(f"one side has {pa[0]!r} outcomes and the other {pb[0]!r}")
                    row_kind = pa[0]
                    outcomes_a, outcomes_b = pa[1], pb[1]
                    if pa[0] == "las":
                        outcomes_a, outcomes_b, dropped = _on_shared_questions(outcomes_a, outcomes_b)
                        if dropped:
                            shared_las.append(f"{a_name} - {b_name} ({', '.join(dropped)})")
                    estimate = paired_difference(outcomes_a, outcomes_b, pa[0], n_resamples, confidence_level,
                                                 seed, empty_bin)
            except ValueError as exc:
                raise ValueError(f"comparison {a_name!r} - {b_name!r} on {metric!r}: {exc}") from None
            rows.append(ComparisonRow(a_name, b_name, metric, row_kind, estimate))
    aggregate_cells = [c for c in cells if c.kind == "aggregate"]
    aggregates_only = bool(cells) and len(aggregate_cells) == len(cells)
    if aggregates_only:
        notes.append(AGGREGATES_ONLY_NOTE)
    elif aggregate_cells:
        which = sorted({c.metric for c in aggregate_cells})
        notes.append(f"Metrics {which} (rows resampled = 'seeds only'): {AGGREGATES_ONLY_NOTE}")
    with_interval = [r for r in rows if r.estimate.has_interval]
    if len(with_interval) > 1:
        by_chance = len(with_interval) * (1 - confidence_level)
        notes.append(f"{sum(r.estimate.excludes_zero for r in with_interval)} of {len(with_interval)} difference "
                     f"intervals exclude 0; if no condition differed, about {by_chance:.1f} would by chance (the "
                     f"intervals are {confidence_level:.0%} each, not adjusted for multiple comparisons).")
    if shared_las:
        notes.append("LAS differences over the questions both sides were measured on (a student answer outside the "
                     "choices is excluded from LAS, so the two students' question sets can differ): "
                     + "; ".join(shared_las) + ".")
    single = sorted({c.condition for c in cells if c.estimate.n_seeds == 1})
    if single:
        notes.append(f"One seed only for {single}: no spread over seeds; a one-seed result is not a finding.")
    return Report(cells=cells, comparisons=rows, confidence_level=confidence_level, n_resamples=n_resamples,
                  aggregates_only=aggregates_only, notes=notes)


# -- text ----------------------------------------------------------------------------------------------------------

def _num(value: float, signed: bool = False) -> str:
    if math.isnan(value):
        return "n/a"
    if value != 0 and abs(value) < 5e-4:  # an interval end that would print as 0.000 although it excludes 0
        return f"{value:+.1e}" if signed else f"{value:.1e}"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _mean_sd(e: Estimate, signed: bool) -> str:
    sd = "n/a" if math.isnan(e.sd) else f"{e.sd:.3f}"
    return f"{_num(e.mean, signed)} ± {sd}"


def _interval(e: Estimate) -> str:
    return f"[{_num(e.ci_low, True)}, {_num(e.ci_high, True)}]" if e.has_interval else "none"


def _questions(e: Estimate) -> str:
    if not e.n_questions:
        return "-"
    low, high = min(e.n_questions.values()), max(e.n_questions.values())
    return str(low) if low == high else f"{low}-{high}"


_RESAMPLED = {"seeds and questions": "seeds+questions", "seeds": "seeds only", "none": "-"}


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: Sequence[int]) -> list[str]:
    """Columns padded to their widest entry; the columns in ``left`` flush left, the others right."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = [(str.ljust if i in left else str.rjust) for i in range(len(header))]
    return ["  ".join(f(str(x), w) for f, x, w in zip(fmt, row, widths)).rstrip() for row in [header, *rows]]


def format_table(report: Report) -> str:
    """The report as plain text: the cells, the paired differences with their finding, the finding rule, notes."""
    level = f"{report.confidence_level:.0%}"
    lines = [f"Cells: mean ± sd over seeds, {level} percentile bootstrap interval of the mean "
             f"({report.n_resamples} resamples)"]
    lines += _table(["condition", "metric", "mean ± sd", f"{level} CI", "resampled", "seeds", "questions/seed"],
                    [[c.condition, c.metric, _mean_sd(c.estimate, c.metric == "las" or c.kind == "las"),
                      _interval(c.estimate), _RESAMPLED[c.estimate.resampling], str(c.estimate.n_seeds),
                      _questions(c.estimate)] for c in report.cells], left=(0, 1))
    if report.comparisons:
        lines += ["", "Paired differences A - B (same seeds; with per-question outcomes the same questions, "
                      "resampled in two stages: seeds, then questions within seeds)"]
        lines += _table(["A", "B", "metric", "A - B mean ± sd", f"{level} CI", "seeds", "questions/seed",
                         "finding"],
                        [[c.a, c.b, c.metric, _mean_sd(c.estimate, True), _interval(c.estimate),
                          str(c.estimate.n_seeds), _questions(c.estimate), describe_direction(c.estimate)]
                         for c in report.comparisons], left=(0, 1, 2, 7))
        lines += ["", FINDING_RULE]
    lines += [f"Note: {n}" for n in report.notes]
    return "\n".join(lines)
