"""``scott-distill report RUN...``: one table and one PNG comparing any set of ``results.json`` files.

Until the `report` subcommand is registered in the command dispatcher: `python -m scott_distill.report.cli RUN...`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trl import TrlParser

from ..io import write_json
from ..las.formula import EMPTY_BIN_RULES
from .plots import plot_report
from .runs import collect_runs, find_result_files, load_run
from .tables import Report, build_report, format_table

logger = logging.getLogger(__name__)

__all__ = ["ReportArguments", "main", "report_runs"]


@dataclass
class ReportArguments:
    runs: list[str] = field(default_factory=list, metadata={
        "help": "results.json files or run folders (a folder without results.json is searched recursively; a "
                "recipe folder's run_summary.json is read as aggregates only). Positional arguments go here too."})
    output_dir: str = field(default="scott_report", metadata={
        "help": "Where report.txt (the table), report.png and report.json go."})
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(argv or [])
    # `scott-distill report RUN_DIR...`: leading positional arguments are the runs
    positional = []
    while argv and not argv[0].startswith("-"):
        positional.append(argv.pop(0))
    if positional:
        argv = ["--runs", *positional, *argv]
    parser = TrlParser(ReportArguments, prog="scott-distill report",
                       description="Compare runs: one table (mean ± sd over seeds, bootstrap intervals, n seeds, "
                       "n questions, paired differences with the finding rule) and one PNG. Usage: scott-distill "
                       "report RUN [RUN ...] [--compare A B] [--metrics M ...] [--output_dir DIR]")
    (args,) = parser.parse_args_and_config(argv)
    _, table, files = report_runs(args)
    print(table)  # the report's table goes to stdout
    print(f"\nwrote {files['table']}, {files['figure']} and {files['numbers']}")
    return 0


if __name__ == "__main__":
    import sys

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main(sys.argv[1:]))
