"""``RationaleStudent``: a trained student with its text format, loaded, saved, pushed and used in one class."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
from huggingface_hub import snapshot_download
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase, set_seed

from ..checkpoints import load_generative_model, resolve_checkpoint, to_inference_device
from ..formats import StudentFormat
from ..hub import upload_folder
from .evaluation import predict

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

__all__ = ["RationaleStudent", "load_student", "load_student_for_inference"]


def load_student(name_or_path: str, seed: int | None = None,
                 **kwargs: Any) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (seq2seq or causal LM, chosen from its config) and tokenizer of a student or of a base model.

    ``name_or_path``: anything ``scott_distill.checkpoints.resolve_checkpoint`` accepts. A tokenizer without a
    pad token pads with its eos token. ``seed``: the training seed, set before loading (as transformers' example
    scripts do), so that weights the checkpoint lacks (newly initialised) come from it, not from whatever ran
    before in the process.
    """
    if seed is not None:
        set_seed(seed)
    name_or_path = resolve_checkpoint(name_or_path)
    model = load_generative_model(name_or_path, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_student_for_inference(name_or_path: str, device: str | None = None,
                               **kwargs: Any) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """`load_student` for evaluation: in eval mode, on ``device`` when given, else on this process's GPU if there
    is one (`to_inference_device`; a ``device_map=`` in ``kwargs`` places it instead). What
    ``scott-distill evaluate`` and a recipe's ``evaluate`` stage load the trained student with."""
    model, tokenizer = load_student(name_or_path, **kwargs)
    if "device_map" in kwargs and device is None:  # placed by from_pretrained (transformers records one device only
        return model.eval(), tokenizer             # in hf_device_map when it splits the model)
    return to_inference_device(model.eval(), device), tokenizer


class RationaleStudent:
    """A student with its text format: ``explain(question, choices) -> (rationale, answer)``.

    The format (tags, answer prefix, choice layout) travels with the weights as ``scott_config.json``
    (`save_pretrained`, `push_to_hub`, and every save of ``CounterfactualTrainer``) and comes back with
    `from_pretrained`, so callers never re-implement it. Works for seq2seq and decoder-only students.

    Args:
        model: the student model.
        tokenizer: its tokenizer.
        fmt: the format it was trained with (default: ``StudentFormat()``).
        max_new_tokens: generation budget of `explain`.

    Examples:

    ```python
    >>> from scott_distill import RationaleStudent
    >>> student = RationaleStudent.from_pretrained("your-org/scott-flan-t5-base-csqa")  # doctest: +SKIP
    >>> student.explain("Where would you keep milk cold?", ["fridge", "oven", "shelf"])  # doctest: +SKIP
    ('A fridge keeps food cold.', 'fridge')

    ```
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
                        device: str | None = None, **kwargs: Any) -> RationaleStudent:
        """Load from a local folder, or download a Hub repo (``org/name``) with ``snapshot_download``.

        The format comes from the folder's ``scott_config.json``; a folder without one is refused
        (``FileNotFoundError``) unless ``fmt`` says what the student was trained with. The model is in eval mode,
        on ``device`` when given (``"cpu"``, ``"cuda:1"``), else on this process's GPU if there is one
        (`load_student_for_inference`). Other keyword arguments go to the constructor (``max_new_tokens``).
        """
        path = Path(resolve_checkpoint(name_or_path))  # a GGUF file or bundled short name: its converted folder
        if not path.is_dir():
            path = Path(snapshot_download(str(name_or_path), revision=revision, token=token))
        if fmt is None:
            fmt = StudentFormat.from_pretrained(path, required=True)
        model, tokenizer = load_student_for_inference(str(path), device=device)
        return cls(model, tokenizer, fmt, **kwargs)

    def save_pretrained(self, directory: str | os.PathLike, card: ModelCard | None = None) -> Path:
        """Weights, tokenizer, ``scott_config.json`` and (optionally) the model card ``README.md`` in one folder."""
        directory = Path(directory)
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        self.format.save_pretrained(directory)
        if card is not None:
            card.save(directory / "README.md")
        return directory

    def push_to_hub(self, repo_id: str, local_dir: str | os.PathLike, card: ModelCard | None = None,
                    private: bool = False, revision: str | None = None, token: str | None = None) -> str:
        """`save_pretrained` to ``local_dir``, then upload that folder; returns the commit URL.

        ``token`` defaults to ``HF_TOKEN`` / the cached login, as everywhere in ``huggingface_hub``. A failed
        upload raises ``HubPushError`` and leaves ``local_dir`` intact, with the command that retries it.
        """
        folder = self.save_pretrained(local_dir, card)
        return upload_folder(folder, repo_id, "model", private, revision, token, "Upload SCOTT student")

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
