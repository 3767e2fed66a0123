"""The trainer image's CUDA build (the Dockerfile's default; tests/images/test_cuda_image.py) on
real pods: a two-process trial on the node's fake GPUs, launcher and workers from that image, so
the entrypoint, sshd, ssh and mpirun path of a GPU cluster runs with TensorFlow's CUDA build and
Horovod's NCCL build. The fake GPUs are CPU-backed and say so (SCALELAB_FAKE_GPUS), so the trainer
accepts them and computes on the CPU; the same trial from the CPU image is the reference.

The node harness imports only the images every node test uses; this module imports the CUDA
image (several GB) into the node's containerd itself, once.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness.cluster import Cluster
from tests.harness.controlplane import ControlPlane
from tests.harness.objects import get, items
from tests.node.conftest import CUDA_IMPORT, apply, finished, import_cuda
from tests.node.test_gpu_allocation import stored_result
from tests.node.test_real_pods import experiment, trial_diagnostics

pytestmark = [pytest.mark.node, pytest.mark.timeout(7200)]

CPU_IMAGE = "localhost/scalelab/trainer:test"


@pytest.fixture(scope="module")
def cuda_image(node_cluster: Cluster, request: pytest.FixtureRequest) -> str:
    """The CUDA trainer image in the node's containerd: the import node_cluster started beside
    the first tests, waited for (or, without one, made here)."""
    started = request.config.stash.get(CUDA_IMPORT, None)
    return started.result(timeout=3600) if started else import_cuda(node_cluster)


def two_gpu_trial(name: str, image: str) -> dict[str, Any]:
    """One trial of two processes with one (fake) GPU each, from `image`."""
    return experiment(
        name,
        sweep={"batchSizes": [16], "gpus": [2]},
        resources={"image": image, "gpusPerProcess": 1},
    )


def test_a_two_process_trial_runs_from_the_cuda_image_on_fake_gpus(
    installed: ControlPlane, cuda_image: str, namespace: str
) -> None:
    cp = installed
    cuda = apply(cp, namespace, two_gpu_trial("cuda", cuda_image))
    cpu = apply(cp, namespace, two_gpu_trial("cpu", CPU_IMAGE))
    for name in (cuda, cpu):
        assert finished(cp, name, namespace) == "Succeeded", trial_diagnostics(cp, namespace)

    results = {}
    for name in (cuda, cpu):
        (trial,) = [
            t for t in items(cp, "st", namespace) if t["metadata"]["name"] == f"{name}-b16-g2"
        ]
        results[name] = trial["status"]["result"]
    # Two ranks, each on the fake GPU its pod was allocated (the trainer's own account).
    device = stored_result(cp, namespace, f"{cuda}-b16-g2")["device"]
    assert device["kind"] == "fake-gpu", device
    assert len(device["ranks"]) == 2, device
    # The same training from either image: the CUDA build computes on the CPU here.
    for key in ("epochs", "steps"):
        assert results[cuda][key] == results[cpu][key], key
    assert results[cuda]["finalLoss"] == pytest.approx(results[cpu]["finalLoss"], rel=1e-9)

    # The launcher pod (kept: a finished Job's pod stays) ran the CUDA image. The workers are
    # deleted when the launcher ends (cleanPodPolicy Running): their MPIJob says what they ran,
    # two workers of one GPU each from the CUDA image.
    pods = [p for p in items(cp, "pods", namespace) if p["metadata"]["name"].startswith(cuda)]
    images = {c["image"] for p in pods for c in p["spec"]["containers"]}
    assert images == {cuda_image}, images
    (job,) = [j for j in items(cp, "mpijobs", namespace) if j["metadata"]["name"].startswith(cuda)]
    worker = job["spec"]["mpiReplicaSpecs"]["Worker"]
    (container,) = worker["template"]["spec"]["containers"]
    assert worker["replicas"] == 2, worker
    assert container["image"] == cuda_image
    assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == "1", container
    sx = get(cp, "sx", cuda, namespace)["status"]
    assert sx["trials"]["succeeded"] == 1, sx
