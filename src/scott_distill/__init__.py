"""scott-distill: self-consistent chain-of-thought distillation (SCOTT) for the Hugging Face ecosystem."""

from __future__ import annotations

__version__ = "0.1.0"

from .collator import CounterfactualDataCollator, StudentFormat
from .fused import contrastive_generate
from .las import leakage_adjusted_simulatability, load_las
from .processor import ContrastiveRationaleLogitsProcessor
from .rationalize import generate_rationales
from .student import RationaleStudent
from .trainer import CounterfactualTrainer, CounterfactualTrainingArguments

__all__ = [
    "__version__",
    "ContrastiveRationaleLogitsProcessor",
    "CounterfactualDataCollator",
    "CounterfactualTrainer",
    "CounterfactualTrainingArguments",
    "RationaleStudent",
    "StudentFormat",
    "contrastive_generate",
    "generate_rationales",
    "leakage_adjusted_simulatability",
    "load_las",
]
