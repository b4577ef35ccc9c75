"""Lexical measures of a teacher rationale against its question's choices (docs/real_run.md).

A choice *is named* when it appears in the rationale as whole words, case-insensitive, and nothing looser:
"headaches" does not name "headache", "getting arrested" does not name "get arrested". These measures say nothing
about whether a rationale supports its answer; `scott_distill.las.judge` is the measure for that.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypedDict

__all__ = ["RationaleMeasures", "is_degenerate", "measure_rationale", "names_choice"]


class RationaleMeasures(TypedDict):
    words: int
    names_gold: bool
    names_wrong_choice: bool
    names_no_choice: bool
    degenerate: bool


def names_choice(text: str, choice: str) -> bool:
    """Whether ``choice`` appears in ``text`` as whole words (case-insensitive).

    Examples:

        >>> names_choice("Tension headaches come from the head.", "headache")
        False
        >>> names_choice("It is likely to be in a House.", "house")
        True
    """
    return re.search(rf"(?<!\w){re.escape(choice.lower().strip())}(?!\w)", text.lower()) is not None


def is_degenerate(text: str) -> bool:
    """Empty, under 3 words, or a word 3-gram repeated 3+ times (a loop)."""
    words = text.lower().split()
    if len(words) < 3:
        return True
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return max(grams.count(g) for g in set(grams)) >= 3


def measure_rationale(rationale: str | None, choices: Sequence[str], answer: str) -> RationaleMeasures:
    """Length in words and which choices ``rationale`` names (``None`` counts as the empty rationale).

    ``answer`` must be one of ``choices`` (a ``ValueError`` says so otherwise): "names a wrong choice" means any
    other choice.

    Examples:

        >>> m = measure_rationale("A lantern lights a house.", ["antique shop", "house", "dark place"], "house")
        >>> m["words"], m["names_gold"], m["names_wrong_choice"], m["names_no_choice"]
        (4, True, False, False)
    """
    if answer not in choices:
        raise ValueError(f"`answer` {answer!r} is not one of the `choices` {list(choices)}.")
    text = rationale or ""
    gold = names_choice(text, answer)
    wrong = any(names_choice(text, c) for c in choices if c != answer)
    return RationaleMeasures(words=len(text.split()), names_gold=gold, names_wrong_choice=wrong,
                             names_no_choice=not (gold or wrong), degenerate=is_degenerate(text))
