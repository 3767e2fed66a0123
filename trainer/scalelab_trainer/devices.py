"""Which device this process computes on, or why it must not start: GPUs that are used, or a
clear failure.

Horovod's convention is one process per GPU, so a trial of G GPUs runs G processes, a pod of s
slots is given s GPUs, and process `local_rank` takes the GPU of that index (`choose`). A trial
started with --gpus-per-process 1 (the operator's MPIJob launcher passes it when
resources.gpusPerProcess is 1) must find a GPU for each of its processes on the node: when
TensorFlow sees fewer (a CPU-only image, a CUDA runtime the driver cannot serve, a device plugin
that gave the pod none), the trial fails at start with that reason instead of silently measuring
the CPU.

The test node's GPUs are CPU-backed (hack/node/fake-gpu-plugin): its device plugin's Allocate sets
SCALELAB_FAKE_GPUS to the ids it gave the container, and the worker hands its environment to the
ranks (kube/mpijob.py). Declared fake GPUs are accepted: each process takes the one of its local
rank, and computes on the CPU; the result names the device it was given either way.
Called by __main__.py once per process, before the first trial.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

#: Set by the test node's device plugin: the CPU-backed "GPUs" given to the container.
FAKE_GPUS_VARIABLE = "SCALELAB_FAKE_GPUS"


class DeviceError(RuntimeError):
    """GPUs were requested, and this process has none to compute on."""


@dataclass(frozen=True)
class Placement:
    """What this process computes on."""

    kind: str  # "gpu", "fake-gpu" (declared CPU-backed test device) or "cpu"
    index: int | None  # gpu: the index among TensorFlow's physical GPUs
    device: str | None  # the device's name: TensorFlow's, or the fake device's id
    seen: tuple[str, ...]  # the GPUs TensorFlow sees (or the fake ones declared) in this pod
    warnings: list[str] = field(default_factory=list)
    #: Every rank's host (its pod), device and seen devices, in rank order (`gather`).
    ranks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def on_gpu(self) -> bool:
        """Whether the arithmetic runs on a real GPU."""
        return self.kind == "gpu"

    def as_event(self) -> dict[str, Any]:
        """The `start` and `result` events' `device`."""
        return {"kind": self.kind, "device": self.device, "ranks": self.ranks}


def choose(
    requested: int,
    local_rank: int,
    local_size: int,
    gpus: Sequence[str],
    *,
    environ: Mapping[str, str],
    cuda_built: bool,
) -> Placement:
    """The device of process `local_rank` of `local_size` on this node, from the GPUs TensorFlow
    sees (`gpus`, their names) and the environment; raises DeviceError when `requested` GPUs
    (per process) cannot be given."""
    per_node = f"{local_size} process{'es' if local_size > 1 else ''} of this trial on this node"
    if gpus:
        if requested and len(gpus) < local_size:
            raise DeviceError(
                f"{per_node} asked for one GPU each, but TensorFlow sees {len(gpus)}: the pod "
                "was given fewer GPUs than processes"
            )
        idle = len(gpus) - local_size
        note = [f"{idle} GPU(s) of this node idle: {len(gpus)} seen, {local_size} processes"]
        i = local_rank % len(gpus)
        return Placement("gpu", i, gpus[i], tuple(gpus), note if idle > 0 else [])
    if not requested:
        return Placement("cpu", None, None, ())
    fake = [d for d in environ.get(FAKE_GPUS_VARIABLE, "").split(",") if d]
    if fake and len(fake) >= local_size:
        return Placement("fake-gpu", None, fake[local_rank], tuple(fake))
    seen = (
        f"{FAKE_GPUS_VARIABLE} declares {len(fake)} CPU-backed test GPU(s)"
        if fake
        else f"TensorFlow (built with CUDA: {cuda_built}) sees no GPU"
    )
    raise DeviceError(
        f"this trial asked for one GPU per process and {per_node}, but {seen} "
        f"(CUDA_VISIBLE_DEVICES={environ.get('CUDA_VISIBLE_DEVICES', 'unset')}, "
        f"NVIDIA_VISIBLE_DEVICES={environ.get('NVIDIA_VISIBLE_DEVICES', 'unset')}): a CPU-only "
        "trainer image, a CUDA runtime the node's driver cannot serve, or a pod given no GPU; "
        "failing rather than measuring the CPU"
    )


def place(requested: int, local_rank: int, local_size: int) -> Placement:
    """Choose this process's device and make it TensorFlow's only visible GPU (memory grows as
    needed, so a process never takes the whole card at start)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    chosen = choose(
        requested,
        local_rank,
        local_size,
        [g.name for g in gpus],
        environ=os.environ,
        cuda_built=tf.test.is_built_with_cuda(),
    )
    if chosen.index is not None:
        gpu = gpus[chosen.index]
        tf.config.experimental.set_memory_growth(gpu, True)
        # Horovod: one GPU per process, chosen by local rank, so processes on a node never share.
        tf.config.set_visible_devices(gpu, "GPU")
    return chosen


def gather(chosen: Placement | DeviceError, hvd: ModuleType | None) -> Placement | DeviceError:
    """Every rank's placement, known to all: the first rank's DeviceError fails every rank (so
    rank 0 reports it, whichever pod it happened in), else `chosen` with `ranks` filled. `hvd`:
    horovod.tensorflow, started, for a world of several processes; None alone."""
    host = socket.gethostname()
    if isinstance(chosen, Placement):
        mine: dict[str, Any] = {"host": host, "device": chosen.device, "seen": list(chosen.seen)}
    else:
        mine = {"host": host, "error": str(chosen)}
    # Horovod: one collective at start-up, before any trial's first step.
    everyone = [mine] if hvd is None else list(hvd.allgather_object(mine))
    for rank, info in enumerate(everyone):
        if "error" in info:
            if info is mine:
                return chosen
            return DeviceError(f"rank {rank} in {info['host']}: {info['error']}")
    assert isinstance(chosen, Placement)
    return dataclasses.replace(chosen, ranks=everyone)
