"""Stopping a trainer and everything it started (horovodrun spawns ranks in their own groups).

Linux /proc is read to find descendants, so no rank outlives a killed trial. Called by the
executor on a deadline, on Ctrl-C and on a results-write failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (children first), from /proc; [] where /proc is absent."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    queue = [pid]
    while queue:
        children = parents.get(queue.pop(0), [])
        found += children
        queue += children
    return found


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop(process: subprocess.Popen[str], grace_seconds: float = 10.0) -> int:
    """SIGTERM the process tree (the trainer writes a partial result), SIGKILL after the grace."""
    tree = [process.pid, *descendants(process.pid)]
    _signal_all(tree, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    _signal_all([process.pid, *descendants(process.pid), *tree], signal.SIGKILL)
    return process.wait()
