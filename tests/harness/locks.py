"""Host-wide locks for what one machine can hold only once at a time (the real node, Kueue's
/etc/kueue), so two pytest processes of one run (hack/test.sh runs the node tier beside the
others) or two runs take turns instead of failing on each other's files."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from pathlib import Path


def hold(path: Path, wait: float, what: str, hint: str) -> int:
    """Hold the flock on `path` (a descriptor: close it to release), waiting at most `wait` s
    while another process holds it; `what` names the holder, `hint` how to stop it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait
    said = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise TimeoutError(
                    f"{what} held {path} for {wait:.0f} s; stop it ({hint}) and retry"
                ) from None
            if not said:
                print(f"# waiting for {path}: {what} runs here", file=sys.stderr)
                said = True
            time.sleep(2)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd


def release(fd: int) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
