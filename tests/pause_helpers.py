"""Waiting for a child process to reach a test hook's pause point (critmass._testhooks.pause_here)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest


def wait_for_pause(proc, marker: Path, what: str, timeout: float = 300.0, poll: float = 0.01) -> None:
    """Return once ``proc`` has written ``marker`` (it then sleeps at ``what``); fail with its stderr if it exits
    first. ``timeout`` only fails a hung child: the kill point is the pause, not a time."""
    deadline = time.monotonic() + timeout
    while not marker.is_file():
        if proc.poll() is not None:
            err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            pytest.fail(f"the child exited ({proc.returncode}) before it paused {what}: {err}")
        if time.monotonic() > deadline:
            pytest.fail(f"the child did not pause {what} within {timeout:.0f} s")
        time.sleep(poll)
