"""Fixtures of the real-node tier: a one-node cluster (tests/harness/cluster.py) with scalelab
installed as a user installs it — `kubectl apply -k tests/node/local-images`, the operator
running as a Deployment pod from the image built by hack/build-images.sh — the real MPI operator,
and our monitoring as kube-prometheus-stack runs it: the real Prometheus Operator renders our
PodMonitor, ServiceMonitor and PrometheusRule into the configuration of a real Prometheus, which
discovers the trainer and operator pods through the real API server.

The MPI operator runs as a host process with the admin kubeconfig: it is one static Go binary,
no registry can serve its image here, and wrapping the binary in an image of our own would test
nothing of ours. Our two images, and a team's image derived from the trainer, are what this tier
proves.
Its health-check port is fixed at :8080 on the host (v0.8.2 has no flag for it), so the cluster
tier's own mpi-operator tests and this tier cannot run at the same time: they carry the marker
mpi_operator_port, and hack/test.sh runs them in this tier's pytest process, where they come
first (tests/conftest.py puts the node tier last). Two suites at once on one machine would also
collide on the node address.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.processes import install, wait_established
from tests.harness.cluster import Cluster, start_cluster
from tests.harness.controlplane import ControlPlane, NodeNetwork
from tests.harness.mpi_operator import MpiOperator
from tests.harness.objects import get, items, wait_for
from tests.harness.prometheus import Prometheus
from tests.harness.promop import PrometheusOperator, operated
from tests.images.test_cuda_image import NAME as CUDA_IMAGE
from tests.images.test_cuda_image import cuda_archive
from tests.observability.scene import TEST_WINDOWS, load_generator

REPO = Path(__file__).resolve().parents[2]
OVERLAY = REPO / "tests" / "node" / "local-images"
MONITORING_OVERLAY = REPO / "tests" / "node" / "monitoring"
OPERATOR_NS = "scalelab-system"
FAKE_GPUS = 4
#: The label the MPI operator puts on an MPIJob's pods: the job's name.
MPIJOB_LABEL = "training.kubeflow.org/job-name"
_names = itertools.count()
#: The teams' images derived from the trainer's (hack/build-images.sh), which only the tests of
#: a team's own model run: imported beside the first tests rather than before them.
TEAM_IMAGES = ("spirals", "shapes")
#: Those imports and the CUDA image's, started beside the first tests (node_cluster).
TEAMS_IMPORT = pytest.StashKey[Future[None]]()
CUDA_IMPORT = pytest.StashKey[Future[str]]()


@pytest.fixture(scope="session")
def node_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Control plane + one real node with FAKE_GPUS CPU-backed nvidia.com/gpu. The teams' images
    (TEAM_IMAGES) and, when the session runs a test of the CUDA image on the node, that image are
    imported on a thread beside the first tests, which use neither (team_images, import_cuda)."""
    d = tmp_path_factory.mktemp("node-cluster")
    c = start_cluster(d, gpus=FAKE_GPUS, later=TEAM_IMAGES)
    pool = ThreadPoolExecutor(1, thread_name_prefix="node-import")
    teams = {name: path for name, path in c.images.items() if name in TEAM_IMAGES}
    request.config.stash[TEAMS_IMPORT] = pool.submit(c.node.import_images, teams)
    if any("cuda_image" in getattr(item, "fixturenames", ()) for item in request.session.items):
        request.config.stash[CUDA_IMPORT] = pool.submit(import_cuda, c)
    try:
        yield c
    finally:
        pool.shutdown(wait=True)  # containerd stops after an import it runs, not during it
        # Start-up seconds by step (image imports per image), for whoever sizes this tier.
        (d / "node-timings.json").write_text(json.dumps(c.node.timings, indent=1))
        left = c.stop()
        assert not left, f"the node left host state behind: {left}"


@pytest.fixture
def team_images(node_cluster: Cluster, request: pytest.FixtureRequest) -> None:
    """The teams' derived images (TEAM_IMAGES) in the node's containerd: their import, started
    beside the first tests by node_cluster, waited for."""
    request.config.stash[TEAMS_IMPORT].result(timeout=1800)


def import_cuda(cluster: Cluster) -> str:
    """The CUDA trainer image, built (once) and imported into the node's containerd as the
    harness imports the others, with more time (several GB to unpack on a busy disk).

    Started by node_cluster on a thread: the import takes minutes of disk and a core, which the
    node tier's first tests, waiting on pods, leave free; the test's fixture waits for it."""
    cluster.node.import_images({"cuda": cuda_archive()}, timeout=1800)
    return CUDA_IMAGE


@pytest.fixture(scope="session")
def mpi_operator(node_cluster: Cluster) -> Iterator[MpiOperator]:
    """The real MPI operator running, its MPIJob CRD served (before any scalelab install: an
    operator pod that starts before the CRD serves can miss it for good)."""
    cp = node_cluster.cp
    cp.kubectl("apply", "--server-side", "-f", str(cp.bin / "mpijobs-crd.yaml"))
    wait_established(cp, ("mpijobs.kubeflow.org",))
    mpi = MpiOperator(cp)
    mpi.start()
    try:
        yield mpi
    finally:
        mpi.stop()


@pytest.fixture(scope="session")
def installed(node_cluster: Cluster, mpi_operator: MpiOperator) -> ControlPlane:
    """scalelab installed from the local-images overlay, the operator pod Available, and the
    real MPI operator running."""
    cp = node_cluster.cp
    install(cp, OVERLAY)
    r = cp.kubectl(
        "-n", OPERATOR_NS, "rollout", "status", "deploy/scalelab-operator", "--timeout=180s",
        check=False,
    )  # fmt: skip
    assert r.returncode == 0, operator_diagnostics(cp)
    return cp


def operator_diagnostics(cp: ControlPlane) -> str:
    """What went wrong with the operator pod: its description and its log."""
    desc = cp.kubectl("-n", OPERATOR_NS, "describe", "pods", check=False).stdout
    logs = cp.kubectl(
        "-n", OPERATOR_NS, "logs", "deploy/scalelab-operator", "--tail=60", check=False
    ).stdout
    return f"{desc[-3000:]}\n--- operator log\n{logs}"


@pytest.fixture(scope="session")
def operated_monitoring(
    installed: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[PrometheusOperator, Prometheus]]:
    """Our monitoring component added to the install as a user adds it (tests/node/monitoring),
    the real Prometheus Operator turning its PodMonitor, ServiceMonitor and PrometheusRule into
    Prometheus's configuration, and Prometheus running that configuration with Kubernetes
    service discovery; with the fake dcgm-exporter of the node's fake GPUs and a copy of our
    rules with the tests' short windows (tests/harness/promop.py). No scrape configuration here
    is written by hand."""
    rules_text = load_generator().rules_text(**TEST_WINDOWS)
    with operated(
        installed, MONITORING_OVERLAY, rules_text, tmp_path_factory.mktemp("monitoring"),
        NodeNetwork().ip,
    ) as pair:  # fmt: skip
        yield pair


@pytest.fixture(scope="session")
def pod_prometheus(operated_monitoring: tuple[PrometheusOperator, Prometheus]) -> Prometheus:
    """The Prometheus that the Prometheus Operator configured from our monitors."""
    return operated_monitoring[1]


@pytest.fixture
def namespace(installed: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted after it (with its pods: the node's fake GPUs and
    CPUs are shared by every test)."""
    name = f"n{next(_names)}-{request.node.name[5:30].lower().replace('_', '-').strip('-')}"
    name = "".join(c for c in name if c.isalnum() or c == "-").strip("-")
    installed.kubectl("create", "namespace", name)
    yield name
    installed.kubectl("delete", "namespace", name, "--wait=true", "--timeout=180s", check=False)


def finished(cp: ControlPlane, name: str, namespace: str, timeout: float = 600) -> str:
    """Wait for a ScaleExperiment to end; its final phase."""

    def phase() -> str | None:
        p = (get(cp, "sx", name, namespace).get("status") or {}).get("phase")
        return p if p in ("Succeeded", "Failed") else None

    result: str = wait_for(phase, timeout, f"experiment {namespace}/{name} to finish")
    return result


def apply(cp: ControlPlane, namespace: str, experiment: dict[str, Any]) -> str:
    """kubectl apply one ScaleExperiment; its name."""
    cp.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(experiment))
    name: str = experiment["metadata"]["name"]
    return name


def gpus_held(cp: ControlPlane, namespaces: list[str]) -> int:
    """Fake GPUs held by the pods of unfinished MPIJobs in `namespaces`. A finished MPIJob's
    workers are not counted: the MPI operator marks the job Succeeded in one sync and deletes its
    running workers in the next (cleanPodPolicy Running, mpi_job_controller.go), so for a moment
    on a busy node they outlive the job whose GPUs the operator (and Kueue) already gave to the
    next trial."""
    held = 0
    for ns in namespaces:
        finished_jobs = {
            j["metadata"]["name"]
            for j in items(cp, "mpijobs", ns)
            if any(
                c["type"] in ("Succeeded", "Failed") and c["status"] == "True"
                for c in (j.get("status") or {}).get("conditions") or []
            )
        }
        for p in items(cp, "pods", ns):
            job = p["metadata"].get("labels", {}).get(MPIJOB_LABEL)
            if p["status"].get("phase") in ("Succeeded", "Failed") or job in finished_jobs:
                continue
            if p["metadata"].get("deletionTimestamp"):
                continue  # being deleted: its job was suspended or deleted
            held += sum(
                int(c["resources"].get("limits", {}).get("nvidia.com/gpu", 0))
                for c in p["spec"]["containers"]
            )
    return held


class GpuWatch(threading.Thread):
    """The most fake GPUs held at once by the pods of unfinished MPIJobs (`gpus_held`)."""

    def __init__(self, cp: ControlPlane, namespaces: list[str]) -> None:
        super().__init__(daemon=True)
        self.cp, self.namespaces, self.most = cp, namespaces, 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.most = max(self.most, gpus_held(self.cp, self.namespaces))
            self.stopped.wait(0.5)
