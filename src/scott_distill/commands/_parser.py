"""The one way a command builds its parser: ``TrlParser`` over its dataclasses (flags, or ``--config`` YAML)."""

from __future__ import annotations

from typing import Any, cast

from trl import TrlParser

__all__ = ["command_parser"]


def command_parser(name: str, dataclass_types: tuple[type, ...], description: str) -> TrlParser:
    """``TrlParser`` for ``scott-distill NAME`` over ``dataclass_types`` (flags override ``--config file.yaml``)."""
    # transformers types the dataclass argument as a NewType of Any, which no class is: hence the cast
    return TrlParser(cast(Any, dataclass_types), prog=f"scott-distill {name}", description=description)
