"""One PNG of a report: a panel per metric (each condition's mean over seeds with its interval and the per-seed
values) and a panel of the paired differences (interval against zero)."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

from .stats import Estimate
from .tables import Report

__all__ = ["plot_report"]

_FOUND, _NOT_SHOWN = "#1f77b4", "#7f7f7f"
#: characters per line of a row label: longer condition names wrap (a recipe's condition names all its labels)
LABEL_WIDTH = 52
_LINE_HEIGHT = 0.17  # inches per label line at font size 8, with the row's spacing


def row_label(text: str) -> str:
    """``text`` wrapped to `LABEL_WIDTH` characters per line, at spaces only (``alpha=0.5`` stays whole)."""
    return textwrap.fill(text, LABEL_WIDTH, break_long_words=False, break_on_hyphens=False)


def _panel_height(labels: list[str], extra: float) -> float:
    """Room for ``labels``' rows: at least 0.42 in a row, more for a label of several lines."""
    return sum(max(0.42, _LINE_HEIGHT * (label.count("\n") + 1) + 0.12) for label in labels) + extra


def _error(e: Estimate) -> tuple[list[float], list[float]] | None:
    if not e.has_interval:
        return None
    return [max(e.mean - e.ci_low, 0.0)], [max(e.ci_high - e.mean, 0.0)]


def _draw_rows(ax, labels: list[str], estimates: list[Estimate], colors: list[str]) -> None:
    for y, (e, color) in enumerate(zip(estimates, colors)):
        err = _error(e)
        ax.errorbar([e.mean], [y], xerr=err, fmt="o", color=color, capsize=4, markersize=6, zorder=3)
        seeds = [v for v in e.per_seed.values() if not math.isnan(v)]
        ax.scatter(seeds, [y] * len(seeds), s=14, color=color, alpha=0.35, zorder=2, linewidths=0)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylim(-0.7, len(labels) - 0.3)
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)


def plot_report(report: Report, path: str | Path, title: str | None = None) -> Path:
    """Write the report's figure to ``path`` (PNG, matplotlib's Agg backend) and return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(c.metric for c in report.cells))
    if not metrics:
        raise ValueError("the report has no cell to plot.")
    labels = {c.condition: row_label(c.condition) for c in report.cells}
    differences = [row_label(f"{r.metric}: {r.a} - {r.b}") for r in report.comparisons]
    # metric panels two per row when every condition fits one line of LABEL_WIDTH (a long name without spaces
    # does not wrap), else one per row: a second column's labels would run over the first's panel
    ncols = 2 if len(metrics) > 1 and all(len(label) <= LABEL_WIDTH for label in labels.values()) else 1
    metric_rows = math.ceil(len(metrics) / ncols)
    metric_height = max(_panel_height([labels[c.condition] for c in report.cells if c.metric == m], 1.3)
                        for m in metrics)
    heights = [metric_height] * metric_rows + ([_panel_height(differences, 1.4)] if differences else [])
    title_height = 0.9
    fig = plt.figure(figsize=(13, sum(heights) + title_height))
    grid = fig.add_gridspec(len(heights), ncols, height_ratios=heights)
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(grid[k // ncols, k % ncols])
        cells = [c for c in report.cells if c.metric == metric]
        _draw_rows(ax, [labels[c.condition] for c in cells], [c.estimate for c in cells], [_FOUND] * len(cells))
        ax.set_title(metric, fontsize=10)
        if any(c.estimate.mean < 0 or c.estimate.ci_low < 0 for c in cells):
            ax.axvline(0, color="black", linewidth=0.6)
    if report.comparisons:
        ax = fig.add_subplot(grid[-1, :])
        rows = report.comparisons
        _draw_rows(ax, differences, [r.estimate for r in rows],
                   [_FOUND if r.estimate.is_finding else _NOT_SHOWN for r in rows])
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title("paired differences A - B (blue: a finding, interval excludes 0 over >= 5 seeds; grey: not shown)", fontsize=10)
    level = f"{report.confidence_level:.0%}"
    if report.aggregates_only:
        what = "seed-only intervals: aggregates only, no per-question outcomes"
    elif any(c.kind == "aggregate" for c in report.cells):
        what = "two-stage bootstrap over seeds and questions; seeds only where a metric has aggregates only"
    else:
        what = "two-stage bootstrap over seeds and questions"
    fig.suptitle((title + "\n" if title else "") + f"mean over seeds with {level} interval ({what})\n"
                 "faint dots: single seeds", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - title_height / fig.get_figheight()))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
