"""The documentation names only code that exists: every `from scott_distill... import` in a Markdown file imports,
and every dotted `scott_distill.x.y` it mentions (in backticks or after `python -m`) resolves."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(p for folder in ("", "docs", "recipes", "metrics/las", "benchmarks", "model_cards")
               for p in (ROOT / folder).glob("*.md"))
IMPORT = re.compile(r"^\s*from (scott_distill[\w.]*) import \(?([\w, ]+)", re.M)
DOTTED = re.compile(r"(?:python -m |`)(scott_distill(?:\.\w+)+)")


def _resolves(dotted: str) -> bool:
    try:
        importlib.import_module(dotted)
        return True
    except ImportError:
        parent, _, attr = dotted.rpartition(".")
        try:
            return hasattr(importlib.import_module(parent), attr)
        except ImportError:
            return False


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_documented_imports_and_module_paths_exist(page: Path):
    text = page.read_text()
    missing = []
    for match in IMPORT.finditer(text):
        for name in filter(None, (n.strip() for n in match.group(2).split(","))):
            if not _resolves(f"{match.group(1)}.{name}"):
                missing.append(f"from {match.group(1)} import {name}")
    missing += [m for m in DOTTED.findall(text) if not _resolves(m)]
    assert not missing, f"{page.name} names code that does not exist: {missing}"


def test_the_pages_are_found():
    assert {"README.md", "architecture.md", "training.md", "hub.md"} <= {p.name for p in PAGES}
