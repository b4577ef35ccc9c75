"""Peak resident memory of one measured call, for the benchmarks (Linux only: /proc/self).

The call runs in a fresh spawned process, after a warm-up the caller does there; freed memory is returned to the OS
(``malloc_trim``) and the kernel's peak-RSS mark is reset (``/proc/self/clear_refs``), so the figure is what the
measured call added on top of the warm process, not what earlier work left behind.
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing as mp
from collections.abc import Callable
from typing import Any


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def start_window() -> int:
    """Return freed memory to the OS, reset the peak mark, and give the resident size the window starts from."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM (peak RSS) to the current RSS
    return status_kib("VmRSS")


def peak_since(start: int) -> int:
    """KiB of the peak resident size above ``start`` (from `start_window`)."""
    return status_kib("VmHWM") - start


def in_fresh_process(worker: Callable[..., None], *args: Any) -> Any:
    """Run ``worker(*args, queue)`` in a spawned process and return what it puts on ``queue``."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=worker, args=(*args, queue))
    proc.start()
    value = queue.get()
    proc.join()
    return value
