"""The texts and file names that more than one part of the method reads or writes: one source of truth.

* `StudentFormat`: what a student reads and writes (tags, answer prefix, choice layout); saved next to a
  student's weights as ``scott_config.json``.
* `format_choices` (``(a) c1 (b) c2``): the student's source and the teacher's few-shot prompts.
* `join_choices` (``c1, c2 and c3``): the LAS simulator's input.
* `answer_sentence` (``The answer is X.``): the teacher's prompts, which the demo's teacher is trained on.
* The file and folder names that one stage writes and another reads.

Nothing here tokenizes: token ids are the student's business (``scott_distill.student.encoding``), so the
teacher's prompts depend on these strings only.
"""

from __future__ import annotations

import json
import logging
import os
import string
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "DECODER_PROMPT_SEPARATOR",
    "RATIONALE_DATASET_DIR",
    "RATIONALE_SHARD_DIR",
    "RATIONALIZE_CONFIG_NAME",
    "STUDENT_CONFIG_NAME",
    "StudentFormat",
    "TargetText",
    "answer_sentence",
    "format_choices",
    "join_choices",
]

# Saved with every student (weights folder, checkpoints, Hub repo): its StudentFormat.
STUDENT_CONFIG_NAME = "scott_config.json"
# A rationalization output folder: its settings and fingerprints, the finished batches, the merged dataset.
RATIONALIZE_CONFIG_NAME = "run_config.json"
RATIONALE_SHARD_DIR = "shards"
RATIONALE_DATASET_DIR = "dataset"
# A decoder-only student reads ``source + DECODER_PROMPT_SEPARATOR`` and continues with its target.
DECODER_PROMPT_SEPARATOR = "\n"


def format_choices(choices: Sequence[str]) -> str:
    """``(a) c1 (b) c2 ...``"""
    if len(choices) > len(string.ascii_lowercase):
        raise ValueError(f"At most 26 choices are supported, got {len(choices)}.")
    return " ".join(f"({string.ascii_lowercase[i]}) {c}" for i, c in enumerate(choices))


def join_choices(choices: Sequence[str]) -> str:
    """``c1, c2 and c3`` (Hase et al.'s simulator input lists the choices this way)."""
    if len(choices) == 1:
        return choices[0]
    return ", ".join(choices[:-1]) + " and " + choices[-1]


def answer_sentence(answer: str | None) -> str:
    """``The answer is X.``, or ``""`` for no answer (the teacher's empty perturbation)."""
    return f"The answer is {answer}." if answer else ""


@dataclass(frozen=True)
class TargetText:
    """A target string with the character spans of its parts."""

    text: str
    rationale_start: int
    rationale_end: int
    answer_start: int


@dataclass(frozen=True)
class StudentFormat:
    """The student's input/output text format (saved with a student as ``scott_config.json``).

    Its field defaults are the defaults everywhere a format can be set (``CounterfactualTrainingArguments``
    reads them from this class).
    """

    factual_tag: str = "[factual]"
    counterfactual_tag: str = "[counterfactual]"
    answer_prefix: str = "So the answer is"
    without_rationale: bool = False

    def source(self, question: str, choices: Sequence[str], counterfactual: bool = False) -> str:
        tag = self.counterfactual_tag if counterfactual else self.factual_tag
        return f"{tag} {question} \n {format_choices(choices)}"

    def choice_end(self, question: str, choices: Sequence[str], answer: str, counterfactual: bool = False) -> int:
        """Character offset in ``source(...)`` where ``answer``'s ``(x) answer`` entry ends; -1 if not a choice."""
        if answer not in choices:
            return -1
        k = list(choices).index(answer)
        return len(self.source(question, list(choices[: k + 1]), counterfactual))

    def target_parts(self, rationale: str | None, answer: str, counterfactual: bool = False) -> TargetText:
        """``{tag} {rationale} {answer_prefix} {answer}`` with the rationale's and the answer's spans."""
        if self.without_rationale:
            return TargetText(answer, 0, 0, 0)
        tag = self.counterfactual_tag if counterfactual else self.factual_tag
        head = f"{tag} "
        rationale = (rationale or "").strip()
        r_start = len(head)
        if rationale:
            head += rationale + " "
        head += f"{self.answer_prefix} "
        return TargetText(head + answer, r_start, r_start + len(rationale), len(head))

    def target(self, rationale: str | None, answer: str, counterfactual: bool = False) -> tuple[str, int]:
        """Target text and the character offset where the answer starts."""
        parts = self.target_parts(rationale, answer, counterfactual)
        return parts.text, parts.answer_start

    def parse(self, text: str, choices: Sequence[str] | None = None) -> tuple[str, str | None]:
        """Split a generated target into (rationale, answer); answer is ``None`` when unparseable.

        With ``choices``, the text after the answer prefix is first matched against them as written, then
        without a sentence-final ``"."`` (so ``"U.S.A."`` stays ``"U.S.A."`` and ``"fridge."`` becomes
        ``"fridge"``); an answer that matches no choice falls back to the stripped text.
        """
        text = text.strip()
        for tag in (self.factual_tag, self.counterfactual_tag):
            if text.startswith(tag):
                text = text[len(tag) :].strip()
        if self.without_rationale:
            rationale, raw = "", text
        else:
            idx = text.rfind(self.answer_prefix)
            if idx < 0:
                return text, None
            rationale, raw = text[:idx].strip(), text[idx + len(self.answer_prefix) :].strip()
        stripped = raw.rstrip(".").strip()
        if choices is not None:
            for candidate in (raw, stripped):
                if candidate in choices:
                    return rationale, candidate
        return rationale, stripped or None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudentFormat:
        """The format's fields from ``data`` (other keys, such as the templates a saved file adds, are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``scott_config.json`` to ``directory``: the fields plus, for readers, the rendered templates."""
        path = Path(directory) / STUDENT_CONFIG_NAME
        payload = {**self.to_dict(), "choice_format": format_choices(["{c1}", "{c2}"]),
                   "source_template": self.source("{question}", ["{c1}", "{c2}"]),
                   "target_template": self.target("{rationale}", "{answer}")[0]}
        path.write_text(json.dumps(payload, indent=2))
        return path

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, required: bool = False) -> StudentFormat:
        """The format saved in ``directory``.

        Without a ``scott_config.json`` there: ``required=True`` raises ``FileNotFoundError``; otherwise the
        default format is returned with a warning (right for an untrained base model, wrong for a student
        trained with another answer prefix or tags).
        """
        path = Path(directory) / STUDENT_CONFIG_NAME
        if not path.exists():
            if required:
                raise FileNotFoundError(
                    f"{path} does not exist: {directory} holds no student format. Save students with "
                    "CounterfactualTrainer.save_model / RationaleStudent.save_pretrained, or pass the format "
                    "explicitly (e.g. RationaleStudent.from_pretrained(path, fmt=StudentFormat(...)))."
                )
            logger.warning("%s has no %s; using the default student format %s.", directory, STUDENT_CONFIG_NAME,
                           cls())
            return cls()
        return cls.from_dict(json.loads(path.read_text()))
