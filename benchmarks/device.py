"""Where a benchmark runs: ``--device`` and ``--dtype`` flags, and the peak memory of a measured call there.

On CPU the peak is the resident-set growth (``peak_memory``); on CUDA it is ``torch.cuda.max_memory_allocated``
above what was allocated when the window started. Timings need no explicit synchronisation: every timed call
ends by copying its tokens to Python lists, which waits for the GPU.
"""

from __future__ import annotations

import argparse

import torch
from peak_memory import peak_since, start_window

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_device_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda[:N] (default: cuda when available)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                        help="weights and activations (bfloat16/float16 on a GPU)")


def describe(device: str) -> str:
    """The hardware a figure came from, for the printed header."""
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, CUDA {torch.version.cuda}"
    return f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"


def memory_window(device: str) -> int:
    """Start measuring peak memory on ``device``; returns the starting point for `memory_peak_kib`."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    return start_window()


def memory_peak_kib(device: str, start: int) -> int:
    """KiB of peak memory above ``start`` since `memory_window`."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - start) // 1024
    return peak_since(start)
