"""GPUs that are used, or a clear failure, on a real node: the kubelet allocates the node's
CPU-backed test GPUs through the real device-plugin API, and the trainer's ranks, started by
mpirun over ssh in the worker pods, take exactly the devices their pod was allocated (none left
idle). A trial whose GPUs TensorFlow cannot see, and that no test device declares, fails at start
with that reason instead of measuring the CPU.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from scalelab.kube.results import decode_events
from tests.harness.controlplane import ControlPlane
from tests.harness.objects import items, wait_for
from tests.node.conftest import apply, finished
from tests.node.test_real_pods import experiment, trial_diagnostics

pytestmark = pytest.mark.node

GPU_TRIAL: dict[str, Any] = {
    "workload": {"model": "mlp", "dataset": "digits", "datasetSize": 128},
    "sweep": {"batchSizes": [32], "gpus": [2]},
    "training": {"optimizer": "momentum", "learningRate": 0.05, "referenceBatchSize": 32,
                 "maxEpochs": 2},
}  # fmt: skip


def stored_result(cp: ControlPlane, namespace: str, trial: str) -> dict[str, Any]:
    """The trainer's own `result` event, as rank 0 stored it with the trial's results."""
    maps = items(cp, "configmaps", namespace, "-l", f"scalelab.dev/trial={trial}")
    results = [e for m in maps for e in decode_events(m) if e.get("event") == "result"]
    assert results, f"no stored result for {trial}"
    return results[-1]


def test_each_pods_allocated_gpus_are_exactly_the_devices_its_ranks_are_given(
    installed: ControlPlane, namespace: str
) -> None:
    cp = installed
    name = apply(cp, namespace, experiment(
        "gpu-allocation", **GPU_TRIAL,
        resources={"gpusPerProcess": 1, "processesPerWorker": 2, "cpu": "1", "memory": "2Gi"},
    ))  # fmt: skip
    workers = wait_for(
        lambda: [p for p in items(cp, "pods", namespace) if "-worker-" in p["metadata"]["name"]]
        or None, 180, "the worker pod",
    )  # fmt: skip
    limits = {w["metadata"]["name"]: int(w["spec"]["containers"][0]["resources"]["limits"]
                                        ["nvidia.com/gpu"]) for w in workers}  # fmt: skip
    assert list(limits.values()) == [2]  # two ranks in one pod, one GPU each
    mounts = workers[0]["spec"]["containers"][0]["volumeMounts"]
    assert any(m["mountPath"] == "/dev/shm" for m in mounts)

    assert finished(cp, name, namespace) == "Succeeded", trial_diagnostics(cp, namespace)
    [trial] = items(cp, "st", namespace)
    device = stored_result(cp, namespace, trial["metadata"]["name"])["device"]
    assert device["kind"] == "fake-gpu"
    ranks = device["ranks"]
    assert len(ranks) == 2
    by_pod: dict[str, list[dict[str, Any]]] = {}
    for rank in ranks:
        by_pod.setdefault(rank["host"], []).append(rank)
    assert set(by_pod) == set(limits), (by_pod, limits)
    for pod, its_ranks in by_pod.items():
        allocated = set(its_ranks[0]["seen"])  # what the kubelet's Allocate gave the container
        given = [r["device"] for r in its_ranks]
        assert len(allocated) == limits[pod]
        assert sorted(given) == sorted(allocated)  # each used once, none idle
        assert all(d.startswith("fake-gpu-") for d in given)


def test_a_trial_whose_gpus_tensorflow_cannot_see_fails_at_start_with_that_reason(
    installed: ControlPlane, namespace: str
) -> None:
    cp = installed
    # The pod's own empty SCALELAB_FAKE_GPUS overrides the device plugin's (the kubelet puts the
    # container's variables after the plugin's): the pod holds a GPU that no process can use,
    # as a CPU-only image on a GPU node would.
    hidden = [{"name": "SCALELAB_FAKE_GPUS", "value": ""}]
    name = apply(cp, namespace, experiment(
        "gpu-unseen", **GPU_TRIAL,
        resources={"gpusPerProcess": 1, "processesPerWorker": 2, "cpu": "1", "memory": "2Gi",
                   "env": hidden},
    ))  # fmt: skip
    assert finished(cp, name, namespace) == "Failed", trial_diagnostics(cp, namespace)
    [trial] = items(cp, "st", namespace)
    reason = json.dumps(trial["status"])
    assert "sees no GPU" in reason, trial["status"]
    assert "rather than measuring the CPU" in reason
    assert not trial["status"].get("result", {}).get("steps")
    # Within its first minute: the launcher, which waits for the ranks, ran under 60 s.
    state = wait_for(lambda: _launcher_ended(cp, namespace), 60, "the launcher to end")
    seconds = (_time(state["finishedAt"]) - _time(state["startedAt"])).total_seconds()
    assert seconds < 60, state


def _launcher_ended(cp: ControlPlane, namespace: str) -> dict[str, Any] | None:
    """The launcher container's terminated state, once it has one."""
    for pod in items(cp, "pods", namespace):
        if "-launcher" in pod["metadata"]["name"]:
            for status in pod["status"].get("containerStatuses", []):
                ended: dict[str, Any] | None = status["state"].get("terminated")
                return ended
    return None


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
