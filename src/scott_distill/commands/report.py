"""``scott-distill report RUN...``: one table and one PNG comparing any set of ``results.json`` files."""

from __future__ import annotations

from collections.abc import Sequence

from trl import TrlParser

from ..report.compare import ReportConfig, report_runs
from ._parser import command_parser

__all__ = ["main", "make_parser"]


def make_parser() -> TrlParser:
    return command_parser(
        "report", (ReportConfig,),
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
    (config,) = make_parser().parse_args_and_config(argv)
    _, table, files = report_runs(config)
    print(table)  # the report's table goes to stdout
    print(f"\nwrote {files['table']}, {files['figure']} and {files['numbers']}")
    return 0
