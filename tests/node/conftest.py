"""Fixtures of the real-node tier: a one-node cluster (tests/harness/cluster.py) with scalelab
installed as a user installs it — `kubectl apply -k tests/node/local-images`, the operator
running as a Deployment pod from the image built by hack/build-images.sh — the real MPI operator,
and a Prometheus that finds trainer pods through the real API server and scrapes them with the
relabelling of our PodMonitor.

The MPI operator runs as a host process with the admin kubeconfig: it is one static Go binary,
no registry can serve its image here, and wrapping the binary in an image of our own would test
nothing of ours. Our two images, and a team's image derived from the trainer, are what this tier
proves.
Its health-check port is fixed at :8080 on the host (v0.8.0 has no flag for it), so the cluster
tier's own mpi-operator test and this tier cannot run at the same time; in one pytest session
they run one after the other (tests/cluster before tests/node). Two suites at once on one
machine would also collide on the node address.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.processes import install, wait_established
from tests.harness.cluster import Cluster, start_cluster
from tests.harness.controlplane import ControlPlane
from tests.harness.objects import get, wait_for
from tests.harness.prometheus import Prometheus, start_prometheus

REPO = Path(__file__).resolve().parents[2]
OVERLAY = REPO / "tests" / "node" / "local-images"
PODMONITOR = REPO / "manifests" / "monitoring" / "podmonitor.yaml"
OPERATOR_NS = "scalelab-system"
FAKE_GPUS = 4
_names = itertools.count()


@pytest.fixture(scope="session")
def node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Control plane + one real node with FAKE_GPUS CPU-backed nvidia.com/gpu."""
    d = tmp_path_factory.mktemp("node-cluster")
    c = start_cluster(d, gpus=FAKE_GPUS)
    # Start-up seconds by step (image imports per image), for whoever sizes this tier.
    (d / "node-timings.json").write_text(json.dumps(c.node.timings, indent=1))
    try:
        yield c
    finally:
        left = c.stop()
        assert not left, f"the node left host state behind: {left}"


@pytest.fixture(scope="session")
def mpi_operator(node_cluster: Cluster) -> Iterator[None]:
    """The real MPI operator running, its MPIJob CRD served (before any scalelab install: an
    operator pod that starts before the CRD serves can miss it for good)."""
    cp = node_cluster.cp
    cp.kubectl("apply", "--server-side", "-f", str(cp.bin / "mpijobs-crd.yaml"))
    wait_established(cp, ("mpijobs.kubeflow.org",))
    cp.kubectl("create", "namespace", "mpi-operator")  # its leader-election lock lives there
    log = open(cp.workdir / "mpi-operator.log", "wb")  # noqa: SIM115 - process lifetime
    mpi = subprocess.Popen(
        [
            str(cp.bin / "mpi-operator"), f"--kubeConfig={cp.kubeconfig}",
            "--monitoring-port=0", "--kube-api-qps=50", "--kube-api-burst=100",
        ],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        yield
    finally:
        mpi.terminate()
        mpi.wait(timeout=15)


@pytest.fixture(scope="session")
def installed(node_cluster: Cluster, mpi_operator: None) -> ControlPlane:
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


def _sanitise(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label)


def podmonitor_scrape_config(targets_file: Path) -> dict[str, Any]:
    """The scrape config the Prometheus Operator makes of our PodMonitor: pod discovery, the
    selector as a keep rule, the PodMonitor's own relabelings, then podTargetLabels copied from
    the pod's labels (sanitised as Prometheus does). Discovery is `pod_targets` through a file:
    Debian's Prometheus is built without kubernetes_sd ("field kubernetes_sd_configs not found"),
    so the same `__meta_kubernetes_pod_*` labels come from the real API server that way."""
    pm = yaml.safe_load(PODMONITOR.read_text())["spec"]
    endpoint = pm["podMetricsEndpoints"][0]
    relabel: list[dict[str, Any]] = []
    for expr in pm["selector"]["matchExpressions"]:
        assert expr["operator"] == "Exists"
        relabel.append({
            "action": "keep",
            "source_labels": [f"__meta_kubernetes_pod_labelpresent_{_sanitise(expr['key'])}"],
            "regex": "true",
        })  # fmt: skip
    relabel += [
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
    ]
    for r in endpoint["relabelings"]:
        rule = {"action": r["action"], "source_labels": r["sourceLabels"]}
        rule.update({k: r[k] for k in ("regex",) if k in r})
        if "targetLabel" in r:
            rule["target_label"] = r["targetLabel"]
        relabel.append(rule)
    for label in pm["podTargetLabels"]:
        relabel.append({
            "source_labels": [f"__meta_kubernetes_pod_label_{_sanitise(label)}"],
            "target_label": _sanitise(label),
        })  # fmt: skip
    return {
        "job_name": "podMonitor/scalelab-system/scalelab-trainers/0",
        "metrics_path": endpoint["path"],
        "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}],
        "relabel_configs": relabel,
    }


def pod_targets(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Prometheus's kubernetes_sd `role: pod` targets: one per container port of every pod
    with an IP, with the `__meta_kubernetes_pod_*` labels relabelling reads."""
    groups = []
    for pod in pods:
        ip = pod["status"].get("podIP")
        if not ip:
            continue
        meta = {
            "__meta_kubernetes_namespace": pod["metadata"]["namespace"],
            "__meta_kubernetes_pod_name": pod["metadata"]["name"],
            "__meta_kubernetes_pod_ip": ip,
            "__meta_kubernetes_pod_phase": pod["status"].get("phase", ""),
        }
        for key, value in (pod["metadata"].get("labels") or {}).items():
            meta[f"__meta_kubernetes_pod_label_{_sanitise(key)}"] = value
            meta[f"__meta_kubernetes_pod_labelpresent_{_sanitise(key)}"] = "true"
        for c in pod["spec"]["containers"]:
            for port in c.get("ports", []):
                labels = {
                    **meta,
                    "__meta_kubernetes_pod_container_name": c["name"],
                    "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                    "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                }
                groups.append({"targets": [f"{ip}:{port['containerPort']}"], "labels": labels})
    return groups


class PodDiscovery(threading.Thread):
    """Writes `pod_targets` of every pod in the cluster to a file_sd file once a second."""

    def __init__(self, cp: ControlPlane, path: Path) -> None:
        super().__init__(daemon=True)
        self.cp, self.path, self.stopped = cp, path, threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            r = self.cp.kubectl("get", "pods", "-A", "-o", "json", check=False)
            if r.returncode == 0:
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(pod_targets(json.loads(r.stdout)["items"])))
                tmp.replace(self.path)
            self.stopped.wait(1.0)


@pytest.fixture(scope="session")
def pod_prometheus(
    node_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    """A real Prometheus discovering trainer pods as our PodMonitor would have it do."""
    d = tmp_path_factory.mktemp("pod-prometheus")
    targets = d / "pods.json"
    targets.write_text("[]")
    discovery = PodDiscovery(node_cluster.cp, targets)
    discovery.start()
    p = start_prometheus(d, scrape_configs=[podmonitor_scrape_config(targets)])
    try:
        yield p
    finally:
        p.stop()
        discovery.stopped.set()
        discovery.join()


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
