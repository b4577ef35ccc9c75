"""Keyword overrides of a stage's config dataclass: ``f(..., config, alpha=0.3)`` is ``f(..., replace(config, alpha=0.3))``."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import numpy as np

__all__ = ["check_switches", "with_overrides"]

Config = TypeVar("Config")


def with_overrides(config_class: type[Config], config: Config | None, overrides: dict[str, Any], caller: str) -> Config:
    """``config`` (default: ``config_class()``) with ``overrides`` replacing its fields; unknown names are refused."""
    known = {f.name for f in dataclasses.fields(config_class)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"{caller}() got unknown settings {unknown}; {config_class.__name__} has {sorted(known)}.")
    if config is None:
        return config_class(**overrides)
    if not isinstance(config, config_class):
        raise TypeError(f"{caller}(): `config` must be a {config_class.__name__}, got {type(config).__name__}.")
    return dataclasses.replace(config, **overrides) if overrides else config  # type: ignore[type-var]


def check_switches(config: Any) -> None:
    """Every switch of the dataclass ``config`` (a field declared ``bool`` with a bool default) holds True or False
    (NumPy bools become Python ones).

    Anything else is refused, naming the field: a quoted YAML ``"false"`` or an environment variable's ``"0"`` is a
    non-empty string, truthy, and would leave the switch on without a word (``bool(value)`` would too). Command-line
    flags are parsed to bools by ``HfArgumentParser`` before a config is built from them.
    """
    for f in dataclasses.fields(config):
        # the default too: HfArgumentParser rewrites a union field's type in place (TrainingArguments'
        # ``include_num_input_tokens_seen: str | bool = "no"`` reads as ``bool`` once a parser was built)
        if f.type not in ("bool", bool) or not isinstance(f.default, bool):
            continue
        value = getattr(config, f.name)
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"`{f.name}` must be True or False, got {value!r} ({type(value).__name__}).")
        setattr(config, f.name, bool(value))
