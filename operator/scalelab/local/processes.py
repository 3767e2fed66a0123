"""Running a trainer under supervision and stopping it with everything it started (horovodrun
spawns ranks in their own groups).

psutil finds every descendant, so no rank outlives a killed trial. `Supervisor` is
used by the executor for each trainer launch; it stops the tree on a deadline, on Ctrl-C and on
a results-write failure.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (children first, breadth-first); [] once it is gone."""
    try:
        parent = psutil.Process(pid)
        tree = parent.children(recursive=True)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []
    return [child.pid for child in tree]


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


class Supervisor:
    """One trainer process under supervision, as a context manager.

    Started in its own session (Ctrl-C reaches scalelab only, which stops the tree itself), with
    stderr and stray stdout lines in a log file, stdout read line by line on a thread so the
    caller can keep time, and the whole tree stopped when the caller says so or leaves the block
    with an exception (a deadline, Ctrl-C, a full disk never orphan a rank).
    """

    def __init__(self, command: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.command = command
        self.log_path = log_path
        self.env = env
        self.returncode: int | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()

    def __enter__(self) -> Supervisor:
        self._log = open(self.log_path, "a", encoding="utf-8")
        self._log.write(f"$ {' '.join(self.command)}\n")
        self._log.flush()
        self.process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            env=self.env,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()
        return self

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def lines(self, poll_seconds: float) -> Iterator[str | None]:
        """stdout line by line until it closes; None when no line came within `poll_seconds`."""
        while True:
            try:
                line = self._lines.get(timeout=poll_seconds)
            except queue.Empty:
                yield None
                continue
            if line is None:
                return
            yield line

    def log(self, line: str) -> None:
        """Keep a stdout line that is not an event (a library printing) in the log."""
        self._log.write(line if line.endswith("\n") else line + "\n")
        self._log.flush()

    def stop(self) -> None:
        """Stop the whole tree now (SIGTERM, then SIGKILL after the grace)."""
        self.returncode = stop(self.process)

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        try:
            if kind is not None:
                self.stop()
            self.returncode = self.process.wait()
            self._reader.join(timeout=5)
        finally:
            self._log.close()
