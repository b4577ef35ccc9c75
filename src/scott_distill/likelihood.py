"""Log-likelihood of label tokens: how the student's answer scoring and the LAS simulator rank choices."""

from __future__ import annotations

import torch

__all__ = ["sequence_log_likelihood"]


def sequence_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over positions of ``log p(label)``, ignoring ``-100`` labels; ``logits`` already aligned."""
    logp = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (logp * (labels != -100)).sum(-1)
