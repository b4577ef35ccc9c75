"""Load and save a student together with its text format (``scott_config.json``)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .checkpoints import generative_model_class, resolve_checkpoint
from .student_format import StudentFormat, format_choices

logger = logging.getLogger(__name__)

__all__ = ["SCOTT_CONFIG_NAME", "load_generative_model", "load_student", "read_student_format",
           "write_student_format"]

SCOTT_CONFIG_NAME = "scott_config.json"


def write_student_format(fmt: StudentFormat, directory: str | os.PathLike) -> Path:
    path = Path(directory) / SCOTT_CONFIG_NAME
    payload = {**fmt.to_dict(), "choice_format": format_choices(["{c1}", "{c2}"]), "source_template":
               fmt.source("{question}", ["{c1}", "{c2}"]), "target_template": fmt.target("{rationale}", "{answer}")[0]}
    path.write_text(json.dumps(payload, indent=2))
    return path


def read_student_format(directory: str | os.PathLike, required: bool = False) -> StudentFormat:
    """The student format saved in ``directory``.

    Without a ``scott_config.json`` there: ``required=True`` raises ``FileNotFoundError``; otherwise the
    default format is returned with a warning (right for an untrained base model, wrong for a student
    trained with another answer prefix or tags).
    """
    path = Path(directory) / SCOTT_CONFIG_NAME
    if not path.exists():
        if required:
            raise FileNotFoundError(
                f"{path} does not exist: {directory} holds no student format. Save students with "
                "CounterfactualTrainer.save_model / scott_distill.hub.save_student, or pass the format "
                "explicitly (e.g. RationaleStudent.from_pretrained(path, fmt=StudentFormat(...)))."
            )
        logger.warning("%s has no %s; using the default student format %s.", directory, SCOTT_CONFIG_NAME,
                       StudentFormat())
        return StudentFormat()
    data = json.loads(path.read_text())
    return StudentFormat(data.get("factual_tag", "[factual]"), data.get("counterfactual_tag", "[counterfactual]"),
                         data.get("answer_prefix", "So the answer is"), bool(data.get("without_rationale", False)))


def load_generative_model(name_or_path: str, **kwargs) -> PreTrainedModel:
    """A seq2seq or causal LM, the class chosen from the checkpoint's config.

    ``name_or_path``: anything ``scott_distill.checkpoints.resolve_checkpoint`` accepts (Hub id, folder, GGUF
    file or folder, bundled short name such as ``smollm2-135m-instruct``).
    """
    name_or_path = resolve_checkpoint(name_or_path)
    return generative_model_class(AutoConfig.from_pretrained(name_or_path)).from_pretrained(name_or_path, **kwargs)


def load_student(name_or_path: str, **kwargs) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (seq2seq or causal LM, chosen from its config) and tokenizer of a student or base model."""
    name_or_path = resolve_checkpoint(name_or_path)
    model = load_generative_model(name_or_path, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
