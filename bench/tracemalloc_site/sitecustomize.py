"""A memory profile of a Python process started with this directory first on PYTHONPATH and
SCALELAB_TRACEMALLOC_OUT set (bench/operator_1000_points.py --tracemalloc FILE does both for the
operator): Python imports `sitecustomize` at start, and this installs two signal handlers.

SIGUSR1 starts tracing (not at start: tracing the imports made the operator take minutes to
start on a busy machine, and what they allocate does not grow); a thread then samples the traced
memory every SAMPLE_SECONDS and keeps a snapshot of the largest. On SIGUSR2 the process writes, to
SCALELAB_TRACEMALLOC_OUT, the allocations live at that peak and now, by package, by source line
and by call stack. Tracing slows the process and costs memory of its own: compare resident
sizes only from runs without it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from types import FrameType

OUT = os.environ.get("SCALELAB_TRACEMALLOC_OUT", "")
FRAMES = 8
#: A snapshot holds the GIL for seconds with a few hundred thousand blocks traced, stalling the
#: operator's event loop (its watches fall behind): sample seldom, keep only 10% larger peaks.
SAMPLE_SECONDS = 10
IGNORED = (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__))


def _package(filename: str) -> str:
    """site-packages/kopf/_core/x.py → kopf; the standard library and frozen modules by file."""
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/scalelab/" in filename:
        return "scalelab"
    return filename.rsplit("/", 1)[-1]


def _report(title: str, snapshot: tracemalloc.Snapshot) -> list[str]:
    stats = snapshot.statistics("lineno")
    total = sum(s.size for s in stats)
    lines = [f"== {title}: {total / 2**20:.1f} MiB traced in {sum(s.count for s in stats)} blocks"]
    packages: Counter[str] = Counter()
    for s in stats:
        packages[_package(s.traceback[0].filename)] += s.size
    lines.append("-- by package (MiB):")
    lines += [f"  {size / 2**20:7.2f}  {name}" for name, size in packages.most_common(15)]
    lines.append("-- top source lines:")
    for s in stats[:25]:
        frame = s.traceback[0]
        lines.append(f"  {s.size / 2**20:7.2f} MiB {s.count:8d}  {frame.filename}:{frame.lineno}")
    lines.append("-- top call stacks (outermost scalelab/kopf frames last):")
    for s in snapshot.statistics("traceback")[:12]:
        lines.append(f"  {s.size / 2**20:7.2f} MiB {s.count:8d} blocks")
        kept = [f for f in s.traceback if "importlib" not in f.filename][:6]
        lines += [f"      {f.filename}:{f.lineno}" for f in kept]
    return lines


class _Peak:
    def __init__(self) -> None:
        self.size = 0
        self.snapshot: tracemalloc.Snapshot | None = None
        self.lock = threading.Lock()

    def sample(self) -> None:
        while True:
            time.sleep(SAMPLE_SECONDS)
            current, _ = tracemalloc.get_traced_memory()
            if current > self.size * 1.1:
                snapshot = tracemalloc.take_snapshot().filter_traces(IGNORED)
                with self.lock:
                    self.size, self.snapshot = current, snapshot

    def dump(self, _signum: int, _frame: FrameType | None) -> None:
        now = tracemalloc.take_snapshot().filter_traces(IGNORED)
        with self.lock:
            peak = self.snapshot
        lines = _report("at the sampled peak", peak) if peak is not None else []
        lines += _report("now", now)
        Path(OUT).write_text("\n".join(lines) + "\n")

    def start(self, _signum: int, _frame: FrameType | None) -> None:
        tracemalloc.start(FRAMES)
        threading.Thread(target=self.sample, name="tracemalloc-peak", daemon=True).start()


if OUT:
    _peak = _Peak()
    signal.signal(signal.SIGUSR1, _peak.start)
    signal.signal(signal.SIGUSR2, _peak.dump)
