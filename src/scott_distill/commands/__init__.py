"""``scott-distill``: one subcommand per stage of the method, one module per subcommand.

Every module ``scott_distill.commands.<name>`` has ``make_parser()`` (a ``TrlParser``: flags, or
``--config file.yaml`` with flags overriding the file) and ``main(argv) -> int``. This dispatcher imports a
command's module only when that command runs, so ``scott-distill --help`` and ``--version`` load no torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shlex
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["COMMANDS", "main", "make_parser"]

# name (= module name under scott_distill.commands) -> one-line description
COMMANDS: dict[str, str] = {
    "run": "Run a recipe YAML end to end (rationalize, train, evaluate, push).",
    "demo": "Run the whole method offline on a synthetic reasoning world.",
    "rationalize": "Teacher: write (counterfactual) rationales for a QA dataset.",
    "train": "Student: counterfactual training on a rationale dataset.",
    "evaluate": "Student: accuracy and faithfulness (forced / perturbed rationales).",
    "las": "Leakage-adjusted simulatability of a student's explanations.",
    "report": "Compare runs (seeds, recipes, teachers): one table and one PNG with intervals.",
}


def make_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="scott-distill",
        description="SCOTT: faithful chain-of-thought distillation (contrastive teacher decoding, "
        "counterfactual student training, LAS evaluation). Run `scott-distill COMMAND --help` for details.",
    )
    parser.add_argument("--version", action="version", version=f"scott-distill {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not argv or argv[0] not in COMMANDS:
        make_parser().parse_args(argv or ["--help"])
        return 0
    module = importlib.import_module(f"{__name__}.{argv[0]}")
    from ..interrupts import RunInterrupted

    group_before = _process_group() is not None
    try:
        code = int(module.main(argv[1:]) or 0)
    except RunInterrupted as exc:
        logging.getLogger(__name__).error("%s\nResume with: scott-distill %s", exc,
                                          shlex.join(exc.resume_argv or argv))
        return exc.exit_code
    # Only after a normal end, and only a group the command created. After an error or a stop on a signal a peer may
    # still wait in a collective (a tensor-parallel peer one batch behind), and destroying an NCCL group then can
    # hang this rank instead of letting it exit with its error.
    if not group_before:
        _leave_process_group()
    return code


def _process_group() -> Any:
    """``torch.distributed`` when a default process group exists, else ``None``. Looked up in ``sys.modules`` so
    that a command that never imported torch does not import it here (``--help`` stays light)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist
    return None


def _leave_process_group() -> None:
    """Destroy the ``torch.distributed`` group a command ran in (``torchrun``), if any.

    A gloo group left alive until interpreter shutdown can abort its rank after the work is done
    (SIGABRT, "terminate called without an active exception"), and torchrun then fails the whole job.
    """
    dist = _process_group()
    if dist is None:
        return
    try:
        dist.destroy_process_group()
    except Exception as exc:  # the work is done and saved: a failed teardown must not turn success into failure
        logging.getLogger(__name__).warning("could not destroy the torch.distributed process group: %s", exc)
