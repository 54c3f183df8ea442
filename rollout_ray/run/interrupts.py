"""Ctrl-C during a run: the first press keeps what is finished, the second stops at once.

On the first press the run stops handing out work and every running piece commits
the rollouts it finished (the rest are redone next run); the run then ends as an
interrupted one, with its summary. Waiting for that is bounded (`STOP_GRACE_S`), and a
second press does not wait at all: from the CLI it exits at once (committed work is
kept; what was in flight is redone), from Python it raises KeyboardInterrupt.

The CLI installs the handler for its whole process (`install_for_process`): a process
started by one that ignores SIGINT (a shell's background job, some supervisors)
inherits SIG_IGN through exec, and would otherwise never see Ctrl-C. `rollout_ray.run`
from Python gets the same behaviour for the length of a run (`graceful`), where it
runs in the main thread.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

#: How long a stopping run may take to commit what its pieces finished before it is
#: stopped at once (as by a second Ctrl-C).
STOP_GRACE_S = 60.0

_runs: list[threading.Event] = []  # the stop events of the runs in progress
_state = {"presses": 0, "exit_at_once": False}


def _on_interrupt(signum: int, frame: Any) -> None:
    _state["presses"] += 1
    running = next((stop for stop in reversed(_runs) if not stop.is_set()), None)
    if running is not None and _state["presses"] == 1:
        running.set()
        os.write(2, b"\nstopping: committing what is finished (Ctrl-C again to stop at once)\n")
        return
    if _state["exit_at_once"] and _state["presses"] > 1:
        os.write(2, b"\ninterrupted again: exiting now (committed work is kept)\n")
        os._exit(130)
    raise KeyboardInterrupt


def install_for_process() -> None:
    """The CLI's Ctrl-C: the first stops a run gracefully (or, outside a run, raises
    KeyboardInterrupt); a second exits the process at once."""
    _state.update(presses=0, exit_at_once=True)
    signal.signal(signal.SIGINT, _on_interrupt)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextlib.contextmanager
def graceful(stop: threading.Event) -> Iterator[None]:
    """For the length of a run: the first Ctrl-C sets `stop` instead of raising.

    Only the main thread receives signals; elsewhere `stop` is still there for the
    caller to set.
    """
    previous = None
    if threading.current_thread() is threading.main_thread():
        current = signal.getsignal(signal.SIGINT)
        if current is not _on_interrupt:
            previous = current
            _state["presses"] = 0
            signal.signal(signal.SIGINT, _on_interrupt)
    _runs.append(stop)
    try:
        yield
    finally:
        _runs.remove(stop)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def stop_at_once() -> bool:
    """What a second Ctrl-C does, for a stop that outlived its grace; False where this
    process's Ctrl-C is not ours to press (a run outside the main thread)."""
    if signal.getsignal(signal.SIGINT) is not _on_interrupt:
        return False
    _state["presses"] = max(_state["presses"], 1)
    signal.raise_signal(signal.SIGINT)
    return True
