"""scott-distill: self-consistent chain-of-thought distillation (SCOTT) for the Hugging Face ecosystem.

The public API is exported here lazily (PEP 562): ``import scott_distill`` loads no torch, transformers or
datasets; each name imports its module on first use.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("scott-distill")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0.0.0+unknown"

# public name -> module that defines it (relative: a copy of the package under another name imports its own)
_EXPORTS: dict[str, str] = {
    "StudentFormat": ".formats",
    "ContrastiveRationaleLogitsProcessor": ".teacher.processor",
    "contrastive_generate": ".teacher.fused",
    "SharedPrefix": ".teacher._branch",
    "RationalizeConfig": ".teacher.rationalize",
    "generate_rationales": ".teacher.rationalize",
    "load_prompt": ".teacher.prompts",
    "load_task": ".tasks.loaders",
    "CounterfactualDataCollator": ".student.collator",
    "CounterfactualTrainer": ".student.trainer",
    "CounterfactualTrainingArguments": ".student.trainer",
    "RationaleStudent": ".student.model",
    "EvaluationConfig": ".student.evaluation",
    "evaluate_student": ".student.evaluation",
    "LASConfig": ".las.pipeline",
    "simulator_las": ".las.pipeline",
    "leakage_adjusted_simulatability": ".las.formula",
    "load_las": ".las.loading",
    "RunInterrupted": ".interrupts",
}

__all__ = [
    "__version__",
    "ContrastiveRationaleLogitsProcessor",
    "CounterfactualDataCollator",
    "CounterfactualTrainer",
    "CounterfactualTrainingArguments",
    "EvaluationConfig",
    "LASConfig",
    "RationaleStudent",
    "RationalizeConfig",
    "RunInterrupted",
    "SharedPrefix",
    "StudentFormat",
    "contrastive_generate",
    "evaluate_student",
    "generate_rationales",
    "leakage_adjusted_simulatability",
    "load_las",
    "load_prompt",
    "load_task",
    "simulator_las",
]

if TYPE_CHECKING:
    from .formats import StudentFormat
    from .interrupts import RunInterrupted
    from .las.formula import leakage_adjusted_simulatability
    from .las.loading import load_las
    from .las.pipeline import LASConfig, simulator_las
    from .student.collator import CounterfactualDataCollator
    from .student.evaluation import EvaluationConfig, evaluate_student
    from .student.model import RationaleStudent
    from .student.trainer import CounterfactualTrainer, CounterfactualTrainingArguments
    from .tasks.loaders import load_task
    from .teacher._branch import SharedPrefix
    from .teacher.fused import contrastive_generate
    from .teacher.processor import ContrastiveRationaleLogitsProcessor
    from .teacher.prompts import load_prompt
    from .teacher.rationalize import RationalizeConfig, generate_rationales


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
