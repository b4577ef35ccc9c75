"""`report_runs`: load, group and compare runs, and write the table, the figure and the numbers.

The one path behind ``scott-distill report`` and the demo's multi-seed summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..files import write_json
from ..las.formula import EMPTY_BIN_RULES
from .plots import plot_report
from .runs import collect_runs, find_result_files, load_run
from .tables import Report, build_report, format_table

__all__ = ["ReportConfig", "report_runs"]


@dataclass
class ReportConfig:
    """What to compare and how (the fields of ``scott-distill report``)."""

    runs: list[str] = field(default_factory=list, metadata={
        "help": "results.json files or run folders (a folder without results.json is searched recursively; a "
                "recipe folder's run_summary.json is read as aggregates only). Positional arguments go here too."})
    output_dir: str = field(default="scott_report", metadata={
        "aliases": ["--output"], "help": "Where report.txt (the table), report.png and report.json go."})
    conditions: list[str] = field(default_factory=list, metadata={
        "help": "Conditions to report (default: all found); declared comparisons between two of them are kept."})
    metrics: list[str] = field(default_factory=list, metadata={"help": "Metrics to report (default: all found)."})
    compare: list[str] = field(default_factory=list, metadata={
        "help": "Pairs A B [A B ...] of condition names for paired differences A - B (default: the pairs the "
                "results files declare)."})
    n_resamples: int = field(default=10000, metadata={"help": "Bootstrap resamples per interval."})
    confidence_level: float = field(default=0.95)
    seed: int = field(default=0, metadata={"help": "Seed of the bootstrap."})
    empty_bin: str = field(default="other", metadata={
        "help": f"LAS rule for an empty leaked/non-leaked bin, one of {EMPTY_BIN_RULES}."})
    title: str | None = field(default=None, metadata={"help": "Title of the figure."})


def report_runs(config: ReportConfig) -> tuple[Report, str, dict[str, Path]]:
    """Load, group and compare ``config.runs``; write ``report.txt`` (the table), ``report.png`` and
    ``report.json`` (every number, per seed too) to ``config.output_dir``.

    Returns:
        The `Report`, its table as text, and the written files by role (``table``, ``figure``, ``numbers``).
    """
    if len(config.compare) % 2:
        raise ValueError(f"`compare` takes pairs of condition names (A B [A B ...]), got {len(config.compare)} "
                         f"names: {config.compare}.")
    pairs = [(config.compare[i], config.compare[i + 1]) for i in range(0, len(config.compare), 2)] or None
    run_set = collect_runs([load_run(p, config.empty_bin) for p in find_result_files(config.runs)])
    if config.conditions:
        run_set = run_set.select(config.conditions)
    report = build_report(run_set, metrics=config.metrics or None, comparisons=pairs,
                          n_resamples=config.n_resamples, confidence_level=config.confidence_level,
                          seed=config.seed, empty_bin=config.empty_bin)
    table = format_table(report)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"table": out / "report.txt", "figure": out / "report.png", "numbers": out / "report.json"}
    files["table"].write_text(table + "\n")
    plot_report(report, files["figure"], title=config.title)
    write_json({**report.to_dict(), "runs": [str(r.path) for r in run_set.runs]}, files["numbers"])
    return report, table, files
