"""Stopping long jobs cleanly on SIGINT (Ctrl-C) or SIGTERM (a preempted cluster or TPU job).

Inside `stop_on_signals()` the first signal only raises a flag: the training loop sees it at
the next step, writes a checkpoint when that fits in the time SIGTERM leaves, and raises
`Interrupted`; a study marks its trials in flight for retry. A second signal raises at once.
Outside the block signals behave as usual.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# seconds a preempted job may spend on its last checkpoint: SLURM and Kubernetes send SIGKILL
# 30 s after SIGTERM by default, so leave room for the rest of the shutdown
STOP_SECONDS = float(os.environ.get("CODEMIX_STOP_SECONDS", "20"))

_requested: str | None = None


class Interrupted(KeyboardInterrupt):
    """A job stopped by a signal; `signal` is its name (SIGINT, SIGTERM)."""

    def __init__(self, signal_name: str = "SIGINT", detail: str = ""):
        super().__init__(signal_name, detail)
        self.signal, self.detail = signal_name, detail

    @property
    def exit_code(self) -> int:
        return 128 + int(getattr(signal, self.signal, signal.SIGINT))


def _handler(signum, frame) -> None:
    global _requested
    name = signal.Signals(signum).name
    if _requested is not None:  # a second signal: the user does not want to wait
        raise Interrupted(name)
    _requested = name


def requested() -> str | None:
    """The name of the signal received inside `stop_on_signals()`, or None."""
    return _requested


def check() -> None:
    """Raise `Interrupted` if a signal arrived; call where stopping leaves nothing half done."""
    if _requested is not None:
        raise Interrupted(_requested)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into a flag for the duration (main thread only; nests)."""
    global _requested
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    if all(h is _handler for h in old.values()):  # already inside one
        yield
        return
    for s in old:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _requested = None
