"""Who this process is among a trial's processes, and Horovod only when there are several.

A trial on one process never calls a collective (step.py, train.py and custom.py reduce only
when N > 1), so a trainer started without a launcher's rank variables, or with a world of one,
neither imports nor starts Horovod: its import and `hvd.init()` cost about half a second of a
lab-sized run and change no result. Launched by horovodrun (HOROVOD_SIZE), mpirun
(OMPI_COMM_WORLD_SIZE) or another PMI launcher (PMI_SIZE) with N > 1, Horovod starts as before.
Called by __main__.py (start), train.py, step.py and custom.py (rank, size, the module).
"""

from __future__ import annotations

import os
from types import ModuleType

#: The variables Horovod itself reads a launcher's world size from (horovod.runner env.py).
SIZE_VARIABLES = ("HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")

_started: ModuleType | None = None


def launched_size() -> int:
    """The world size a launcher set, 1 when started alone."""
    for name in SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def start() -> tuple[int, int, int]:
    """Start Horovod when the world has several processes; (rank, size, local rank)."""
    global _started  # noqa: PLW0603 - one runtime per process
    if launched_size() > 1:
        import horovod.tensorflow as hvd

        # The check horovodrun.py leaves to the ranks, here where Horovod is loaded anyway.
        if os.environ.get("HOROVOD_CONTROLLER") == "gloo" and not hvd.gloo_built():
            raise RuntimeError(
                "launched over Gloo, but this Horovod was built without it: reinstall horovod "
                "with HOROVOD_WITH_GLOO=1"
            )
        # Horovod: start the collective runtime (Gloo or MPI, whichever the launcher chose).
        hvd.init()
        _started = hvd
    return rank(), size(), local_rank()


def hvd() -> ModuleType:
    """horovod.tensorflow, started; only for worlds of N > 1 (callers check size() first)."""
    if _started is None:
        raise RuntimeError("Horovod is not started: this process runs alone (size 1)")
    return _started


def rank() -> int:
    return int(_started.rank()) if _started else 0


def size() -> int:
    return int(_started.size()) if _started else 1


def local_rank() -> int:
    return int(_started.local_rank()) if _started else 0


def local_size() -> int:
    """Processes of this trial on this node (this pod): 1 when running alone."""
    return int(_started.local_size()) if _started else 1
