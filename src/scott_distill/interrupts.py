"""Stopping a long job cleanly on SIGTERM / SIGINT (a preempted machine, a scheduler's time limit, Ctrl-C).

The first signal asks the job to stop at its next safe point (after the batch in progress is written); a second
one stops it at once. Either way the job raises `RunInterrupted`, a ``KeyboardInterrupt`` (code that handles
Ctrl-C keeps working); the ``scott-distill`` command turns it into the exit status ``128 + signal``.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["RunInterrupted", "StopRequest", "stop_on_signals"]

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunInterrupted(KeyboardInterrupt):
    """A job stopped by a signal; ``signum`` is the signal, the message says what was kept and how to resume;
    ``checkpoint`` is the folder a training job saved before stopping (``None`` for other jobs).

    ``resume_argv``: the ``scott-distill`` arguments that resume the job, set by a command whose resume differs
    from the command that ran (``None``: the same command resumes).
    """

    def __init__(self, signum: int, message: str, checkpoint: str | None = None) -> None:
        super().__init__(message)
        self.signum = signum
        self.checkpoint = checkpoint
        self.resume_argv: list[str] | None = None

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal (143 for SIGTERM, 130 for SIGINT)."""
        return 128 + self.signum


class StopRequest:
    """Set by the first stop signal; the job polls `signum` at its safe points."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def stop_on_signals(what: str, resume_hint: str,
                    safe_point: str = "after the batch in progress is written") -> Iterator[StopRequest]:
    """Within the block, SIGTERM and SIGINT set the yielded `StopRequest` instead of killing the process; a
    second signal raises `RunInterrupted` at once. The previous handlers are restored on exit.

    Signal handlers can only be installed in the main thread: elsewhere the block changes nothing (the request
    is never set).

    Args:
        what: the job, for the log ("rationalize").
        resume_hint: how to resume, appended to the message of the `RunInterrupted` raised by a second signal.
        safe_point: where the job stops after a first signal, for the log.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if request:
            raise RunInterrupted(signum, f"{what}: stopped at once by a second {name}; the batch in progress is "
                                         f"discarded. {resume_hint}")
        request.signum = signum
        logger.warning("%s: %s received; stopping %s (send it again to stop at once).", what, name, safe_point)

    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        signal.signal(s, handle)
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
