"""``scott-distill demo``: the whole method offline on a synthetic world, in minutes on a CPU."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from trl import TrlParser

from ..demo.pipeline import run_demo
from ._parser import command_parser


@dataclass
class DemoArguments:
    output_dir: str = field(default="demo_output", metadata={"help": "Where results.json / results.png go."})
    quick: bool = field(default=False, metadata={"help": "Small setting (under 3 minutes on 2 CPU cores)."})
    seed: int = field(default=0)


def make_parser() -> TrlParser:
    return command_parser("demo", (DemoArguments,),
                          "Train a teacher LM from scratch on a synthetic world, decode rationales "
                          "greedily and contrastively, train four students (with and without counterfactual "
                          "training) and report accuracy, counterfactual consistency and LAS.")


def main(argv: Sequence[str] | None = None) -> int:
    (args,) = make_parser().parse_args_and_config(argv)
    results = run_demo(args.output_dir, quick=args.quick, seed=args.seed)
    print(results["table"])  # the demo's result tables go to stdout
    print(f"\nwrote {args.output_dir}/results.json and {args.output_dir}/results.png "
          f"({results['seconds']:.0f} s)")
    return 0
