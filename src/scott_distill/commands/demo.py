"""``scott-distill demo``: the whole method offline on a synthetic world, in minutes on a CPU, over seeds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from trl import TrlParser

from ..demo.pipeline import run_demo
from ._parser import command_parser


@dataclass
class DemoArguments:
    output_dir: str = field(default="demo_output", metadata={
        "aliases": ["--output"],
        "help": "Where seed_<seed>/results.json and the report over seeds (report.txt, report.png, report.json) go."})
    quick: bool = field(default=False, metadata={
        "help": "Small setting (about 3 minutes per seed on 2 CPU cores): a smoke run, too small to compare students."})
    seeds: list[int] = field(default_factory=lambda: [0], metadata={
        "aliases": ["--seed"],
        "help": "Seeds to run (each: its own world, teacher, students, simulators), e.g. --seeds 0 1 2 3 4. A seed "
                "whose results.json exists in output_dir is reused."})
    n_resamples: int = field(default=10000, metadata={"help": "Bootstrap resamples of the report's intervals."})


def make_parser() -> TrlParser:
    return command_parser("demo", (DemoArguments,),
                          "Train a teacher LM from scratch on a synthetic world, decode rationales "
                          "greedily and contrastively, train four students (with and without counterfactual "
                          "training), measure accuracy, counterfactual consistency and LAS, for every seed; then "
                          "compare the seeds (the table and PNG of `scott-distill report`).")


def main(argv: Sequence[str] | None = None) -> int:
    (args,) = make_parser().parse_args_and_config(argv)
    results = run_demo(args.output_dir, quick=args.quick, seeds=args.seeds, n_resamples=args.n_resamples)
    print(results["table"])  # the demo's result tables go to stdout
    files = results["files"]
    print(f"\nwrote {args.output_dir}/seed_*/results.json, {files['table']}, {files['figure']} and "
          f"{files['numbers']} ({results['seconds']:.0f} s)")
    return 0
