"""Stopping a running run from another thread: its sandbox killed, its HTTP call aborted.

The worker runs a run's steps on one thread; its heartbeat thread (``workflows.runs``)
learns that the run was cancelled (or declared interrupted) and calls ``Control.cancel``.
Whatever blocks the step registers how to abort it for as long as it blocks:

    with cancellation.abortable(lambda: os.killpg(process.pid, signal.SIGKILL)):
        outcome = communicate(process, ...)

Outside a run (``current()`` is None) ``abortable`` does nothing.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Abort = Callable[[], None]

_local = threading.local()


class Control:
    """The cancel switch of one run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._aborts: list[Abort] = []
        self.cancelled = False

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            aborts = list(self._aborts)
        for abort in aborts:
            _call(abort)

    @contextmanager
    def abortable(self, abort: Abort) -> Iterator[None]:
        with self._lock:
            cancelled = self.cancelled
            if not cancelled:
                self._aborts.append(abort)
        if cancelled:
            _call(abort)
        try:
            yield
        finally:
            with self._lock:
                if abort in self._aborts:
                    self._aborts.remove(abort)


def _call(abort: Abort) -> None:
    with contextlib.suppress(OSError):  # already gone: the process exited, the socket closed
        abort()


def current() -> Control | None:
    return getattr(_local, "control", None)


@contextmanager
def controlling(control: Control) -> Iterator[Control]:
    """Make ``control`` the current run's switch on this thread."""
    previous = current()
    _local.control = control
    try:
        yield control
    finally:
        _local.control = previous


@contextmanager
def abortable(abort: Abort) -> Iterator[None]:
    control = current()
    if control is None:
        yield
        return
    with control.abortable(abort):
        yield
