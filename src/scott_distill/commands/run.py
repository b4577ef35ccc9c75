"""``scott-distill run RECIPE.yaml``: a recipe end to end (rationalize -> train -> evaluate -> push).

The recipe's top level holds the run fields (``RecipeArguments``); each stage's section holds exactly that
stage's config (``rationalize:`` ``RationalizeConfig``, ``train:`` ``CounterfactualTrainingArguments``,
``evaluate:`` ``EvaluationConfig``, ``las:`` ``LASConfig``). Every field can be overridden on the command line,
sections with a dotted prefix: ``--stage train --rationalize.alpha 0.3 --train.learning_rate 1e-4``.
The flags are ``HfArgumentParser``'s for each dataclass, so types, choices and help are the dataclasses' own.
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import yaml
from transformers import HfArgumentParser

from ..recipes import SECTIONS, Recipe, RecipeArguments, RecipeConfig

__all__ = ["RecipeParser", "main", "make_parser"]


def _add_fields(parser: argparse.ArgumentParser, dataclass_type: type, prefix: str, title: str) -> None:
    """Add ``dataclass_type``'s ``HfArgumentParser`` flags to ``parser`` as ``--{prefix}{name}`` in a group.

    Unset flags leave no attribute (``SUPPRESS``), so that the recipe file decides what the command line
    does not.
    """
    group = parser.add_argument_group(title)
    for action in HfArgumentParser(cast(Any, dataclass_type))._actions:
        if not action.option_strings or action.dest == "help":
            continue
        flag = copy.copy(action)
        flag.option_strings = [f"--{prefix}{s[2:]}" for s in action.option_strings]
        flag.dest = f"{prefix}{action.dest}"
        flag.default = argparse.SUPPRESS
        flag.required = False
        group._add_action(flag)


class RecipeParser(argparse.ArgumentParser):
    """The command line of ``scott-distill run``: a recipe file, run fields and dotted section fields."""

    def __init__(self) -> None:
        super().__init__(
            prog="scott-distill run", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
            description="Run a SCOTT recipe: rationalize -> train -> evaluate (-> push). Each stage's output is "
            "cached under output_dir, so a re-run skips finished stages.\n\n"
            "  scott-distill run recipes/csqa.yaml [--stage STAGE] [--seeds S ...] [--push_to_hub] [--FIELD VALUE] "
            "[--SECTION.FIELD VALUE]\n\n"
            "--seeds 0 1 2: one set of teacher rationales, one student per seed in output_dir/seed_<s>/ (resumable "
            "per seed), then a report over the seeds (report.txt, report.png). Compare recipe runs with "
            "`scott-distill report RUN_A RUN_B`.\n\n"
            "Sections: " + ", ".join(f"{name} ({cls.__name__})" for name, cls in SECTIONS.items()) + ".",
        )
        self.add_argument("recipe", nargs="?", help="The recipe YAML.")
        self.add_argument("--config", help="The recipe YAML (the same as the positional argument).")
        _add_fields(self, RecipeArguments, "", "run fields (the recipe's top level)")
        for name, config_class in SECTIONS.items():
            _add_fields(self, config_class, f"{name}.", f"`{name}:` section ({config_class.__name__})")

    def parse_recipe(self, argv: Sequence[str] | None = None) -> RecipeConfig:
        """The recipe file named in ``argv``, with the command line's fields replacing the file's."""
        argv = list(argv or [])
        path = _recipe_path(argv)
        if path is not None and not Path(path).is_file():
            self.error(f"recipe file {path!r} does not exist")
        values = _flatten(yaml.safe_load(Path(path).read_text()) or {}) if path else {}
        flags = {action.dest for action in self._actions}
        if any(key not in flags for key in values):
            RecipeConfig.from_dict(_nest(values))  # raises, naming the unknown keys
        # the file's values become defaults: a string value goes through its flag's type, as on the command line
        self.set_defaults(**values)
        parsed = vars(self.parse_args(argv))
        if parsed.pop("recipe", None) not in (None, path) or parsed.pop("config", None) not in (None, path):
            self.error("give the recipe once: `scott-distill run RECIPE.yaml [flags]` or `--config RECIPE.yaml`")
        return RecipeConfig.from_dict(_nest(parsed))


def _recipe_path(argv: list[str]) -> str | None:
    """The recipe file: the first argument, or ``--config``'s value."""
    if argv and not argv[0].startswith("-"):
        return argv[0]
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def _flatten(data: dict[str, Any]) -> dict[str, Any]:
    """``{"rationalize": {"alpha": 0.3}, "task": "cose"}`` -> ``{"rationalize.alpha": 0.3, "task": "cose"}``."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS and isinstance(value, dict):
            flat.update({f"{key}.{name}": v for name, v in value.items()})
        else:
            flat[key] = value
    return flat


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        section, dot, name = key.partition(".")
        if dot:
            nested.setdefault(section, {})[name] = value
        else:
            nested[key] = value
    return nested


def make_parser() -> RecipeParser:
    return RecipeParser()


def main(argv: Sequence[str] | None = None) -> int:
    config = make_parser().parse_recipe(argv)
    result = Recipe(config).run()
    table = result.pop("table", None)
    print(json.dumps(result, indent=2, default=str))  # the run's summary goes to stdout
    if table is not None:
        print(f"\n{table}")  # the report over the student seeds
    return 0
