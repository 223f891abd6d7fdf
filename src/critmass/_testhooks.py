"""Pause points for the crash tests: stop a process at a named point so a test can kill it exactly there.

A test that kills a process as soon as some file appears and then asserts how far it got depends on the
machine's speed: a fast idle machine may be past the point by the time the kill lands, a loaded one not
there yet. Instead the code under test calls :func:`pause_here` at the points a test may kill it; with the
named environment variable set to that point, the process writes a marker file (after everything before
the point is durable) and sleeps, so the test waits for the marker and kills a process that cannot move
on. Without the variable the call returns at once and does nothing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ._io import atomic_write_bytes

__all__ = ["pause_here"]

#: How long a paused process sleeps unless ``seconds_env`` says otherwise: longer than any test waits.
DEFAULT_PAUSE_S = 600.0


def pause_here(env: str, at: str, directory, *, marker: str | None = None, seconds_env: str | None = None) -> bool:
    """If ``$env == at``: write ``DIRECTORY/.paused-<marker or at>`` holding this pid, then sleep.

    The marker is written atomically, so a test that sees it knows the process reached this point.
    The sleep lasts ``$seconds_env`` seconds (default :data:`DEFAULT_PAUSE_S`); the process goes on
    afterwards. Returns whether it paused.
    """
    if os.environ.get(env) != str(at):
        return False
    path = Path(directory) / f".paused-{marker or at}"
    atomic_write_bytes(path, str(os.getpid()).encode())
    seconds = os.environ.get(seconds_env) if seconds_env else None
    time.sleep(float(seconds) if seconds else DEFAULT_PAUSE_S)
    return True
