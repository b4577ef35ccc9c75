"""Out-of-memory errors: the one test of whether an error means "try again with fewer rows at a time"."""

from __future__ import annotations

import torch
from accelerate.utils.memory import should_reduce_batch_size

__all__ = ["is_out_of_memory"]


def is_out_of_memory(exc: BaseException) -> bool:
    """An accelerator (or CPU allocator) out-of-memory error: ``torch.OutOfMemoryError`` or a message that
    ``accelerate``'s batch-size finder recognises (``should_reduce_batch_size``)."""
    return isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, Exception) and should_reduce_batch_size(exc))
