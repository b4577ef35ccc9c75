"""``scott-distill report RUN...``: one table and one PNG comparing any set of ``results.json`` files.

The demo writes its multi-seed summary through `report_runs` too: one code path for every report.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trl import TrlParser

from ..files import write_json
from ..las.formula import EMPTY_BIN_RULES
from ..report.plots import plot_report
from ..report.runs import collect_runs, find_result_files, load_run
from ..report.tables import Report, build_report, format_table
from ._parser import command_parser

logger = logging.getLogger(__name__)

__all__ = ["ReportArguments", "main", "make_parser", "report_runs"]


@dataclass
class ReportArguments:
    runs: list[str] = field(default_factory=list, metadata={
        "help": "results.json files or run folders (a folder without results.json is searched recursively; a "
                "recipe folder's run_summary.json is read as aggregates only). Positional arguments go here too."})
    output_dir: str = field(default="scott_report", metadata={
        "aliases": ["--output"], "help": "Where report.txt (the table), report.png and report.json go."})
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


def report_runs(args: ReportArguments) -> tuple[Report, str, dict[str, Path]]:
    """Load, group and compare the runs; write the table, the figure and the numbers to ``args.output_dir``."""
    if len(args.compare) % 2:
        raise ValueError(f"`compare` takes pairs of condition names (A B [A B ...]), got {len(args.compare)} "
                         f"names: {args.compare}.")
    pairs = [(args.compare[i], args.compare[i + 1]) for i in range(0, len(args.compare), 2)] or None
    run_set = collect_runs([load_run(p, args.empty_bin) for p in find_result_files(args.runs)])
    report = build_report(run_set, metrics=args.metrics or None, comparisons=pairs, n_resamples=args.n_resamples,
                          confidence_level=args.confidence_level, seed=args.seed, empty_bin=args.empty_bin)
    table = format_table(report)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"table": out / "report.txt", "figure": out / "report.png", "numbers": out / "report.json"}
    files["table"].write_text(table + "\n")
    plot_report(report, files["figure"], title=args.title)
    write_json({**report.to_dict(), "runs": [str(r.path) for r in run_set.runs]}, files["numbers"])
    return report, table, files


def make_parser() -> TrlParser:
    return command_parser(
        "report", (ReportArguments,),
        "Compare runs: one table (mean ± sd over seeds, bootstrap intervals, n seeds, n questions, paired "
        "differences with the finding rule) and one PNG. Usage: scott-distill report RUN [RUN ...] "
        "[--compare A B] [--metrics M ...] [--output DIR]")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(argv or [])
    # `scott-distill report RUN_DIR... [flags]`: leading positional arguments are the runs
    positional = []
    while argv and not argv[0].startswith("-"):
        positional.append(argv.pop(0))
    if positional:
        argv = ["--runs", *positional, *argv]
    (args,) = make_parser().parse_args_and_config(argv)
    _, table, files = report_runs(args)
    print(table)  # the report's table goes to stdout
    print(f"\nwrote {files['table']}, {files['figure']} and {files['numbers']}")
    return 0
