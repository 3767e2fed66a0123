"""Free loopback ports, readiness polling, resident memory of started processes and the wait of a
harness started by hand, shared by the harnesses."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import Callable

import psutil


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listenable(port: int) -> bool:
    """Whether a server could listen on `port` on every address now (as a trainer's /metrics)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> int:
    """The first of `count` consecutive ports nothing listens on (a trainer's rank r serves
    /metrics on its --metrics-port + r)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("", 0))
            first = int(s.getsockname()[1])
        if first + count <= 65536 and all(listenable(first + i) for i in range(count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports")


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2
) -> float:
    """Poll `check` until it returns True; return the seconds it took or raise TimeoutError."""
    start = time.monotonic()
    last: BaseException | None = None
    while time.monotonic() - start < timeout:
        try:
            if check():
                return time.monotonic() - start
        except Exception as e:  # readiness probes fail in many ways while a server starts
            last = e
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s (last error: {last!r})")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve_until_interrupted() -> None:
    """Block until Ctrl-C or SIGTERM (`timeout` and CI runners stop with SIGTERM), so that a
    harness started by hand tears down the same way either way."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def rss_mib(procs: dict[str, subprocess.Popen[bytes]]) -> dict[str, float]:
    """Resident memory of each still-running process, MiB."""
    out: dict[str, float] = {}
    for name, p in procs.items():
        with contextlib.suppress(psutil.Error):
            out[name] = psutil.Process(p.pid).memory_info().rss / 2**20
    return out
