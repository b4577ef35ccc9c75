"""``scott-distill`` command line: one subcommand per stage of the method.

Each subcommand parses its own arguments with ``trl.TrlParser`` (a ``HfArgumentParser`` that also reads
``--config file.yaml``; flags on the command line override the file).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from . import __version__

# name -> (module with a `main(argv)` function, one-line description)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("scott_distill.recipes", "Run a recipe YAML end to end (rationalize, train, evaluate, push)."),
    "demo": ("scott_distill.demo.cli", "Run the whole method offline on a synthetic reasoning world."),
    "rationalize": ("scott_distill.rationalize_cli", "Teacher: write (counterfactual) rationales for a QA dataset."),
    "train": ("scott_distill.train_cli", "Student: counterfactual training on a rationale dataset."),
    "evaluate": ("scott_distill.evaluate_cli", "Student: accuracy and faithfulness (forced / perturbed rationales)."),
    "las": ("scott_distill.las.cli", "Leakage-adjusted simulatability of a student's explanations."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scott-distill",
        description="SCOTT: faithful chain-of-thought distillation (contrastive teacher decoding, "
        "counterfactual student training, LAS evaluation). Run `scott-distill COMMAND --help` for details.",
    )
    parser.add_argument("--version", action="version", version=f"scott-distill {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    if not argv or argv[0] not in SUBCOMMANDS:
        parser.parse_args(argv or ["--help"])
        return 0
    module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
    result = module.main(argv[1:])
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
