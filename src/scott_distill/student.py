"""``RationaleStudent``: a trained student that explains, loaded from the Hub or a local folder."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
from huggingface_hub import snapshot_download
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .checkpoints import resolve_checkpoint
from .evaluation import predict
from .student_format import StudentFormat
from .student_io import load_student, read_student_format

__all__ = ["RationaleStudent"]


class RationaleStudent:
    """A student with its text format: ``explain(question, choices) -> (rationale, answer)``.

    The format (tags, answer prefix, choice layout) comes from the ``scott_config.json`` saved next to the
    weights, so callers never re-implement it. Works for seq2seq and decoder-only students.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 fmt: StudentFormat | None = None, max_new_tokens: int = 128) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.format = fmt or StudentFormat()
        self.max_new_tokens = max_new_tokens

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, revision: str | None = None,
                        token: str | bool | None = None, fmt: StudentFormat | None = None,
                        **kwargs: Any) -> RationaleStudent:
        """Load from a local folder, or download a Hub repo (``org/name``) with ``snapshot_download``.

        The format comes from the folder's ``scott_config.json``; a folder without one is refused
        (``FileNotFoundError``) unless ``fmt`` says what the student was trained with.
        """
        path = Path(resolve_checkpoint(name_or_path))  # a GGUF file or bundled short name: its converted folder
        if not path.is_dir():
            path = Path(snapshot_download(str(name_or_path), revision=revision, token=token))
        if fmt is None:
            fmt = read_student_format(path, required=True)
        model, tokenizer = load_student(str(path))
        return cls(model, tokenizer, fmt, **kwargs)

    def explain(self, question: str, choices: Sequence[str]) -> tuple[str, str | None]:
        """``(rationale, answer)``; ``answer`` is ``None`` if the output has no answer prefix."""
        return self.explain_batch([question], [choices])[0]

    def explain_batch(self, questions: Sequence[str], choices: Sequence[Sequence[str]],
                      batch_size: int = 16) -> list[tuple[str, str | None]]:
        if len(questions) != len(choices):
            raise ValueError(f"`questions` has {len(questions)} items but `choices` has {len(choices)}.")
        rows = datasets.Dataset.from_dict({"question": list(questions), "choices": [list(c) for c in choices]})
        preds = predict(self.model, self.tokenizer, rows, self.format, batch_size, self.max_new_tokens,
                        show_progress=False)
        return [(p["rationale"], p["answer"]) for p in preds]
