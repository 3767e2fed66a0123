"""Fixtures of the cluster tier: scalelab installed with `kubectl apply -k manifests/` on the real
control plane, the real MPIJob CRD, the operator as a subprocess under its own ServiceAccount's
token (RBAC enforced), and the MPI operator + kubelet stand-in (standin.py)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.standin import StandIn
from tests.harness.controlplane import ControlPlane
from tests.harness.ports import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
OPERATOR_NS, OPERATOR_SA = "scalelab-system", "scalelab-operator"
CRDS = ("scaleexperiments.scalelab.dev", "scaletrials.scalelab.dev", "mpijobs.kubeflow.org")
_names = itertools.count()
ESTABLISHED = "jsonpath={.status.conditions[?(@.type=='Established')].status}"


@pytest.fixture(scope="session")
def cluster(control_plane: ControlPlane) -> ControlPlane:
    """The control plane with scalelab's kustomize base and the real MPIJob CRD installed."""
    control_plane.kubectl("apply", "-k", str(REPO / "manifests"))
    # The MPIJob CRD is too large for client-side apply's last-applied annotation.
    control_plane.kubectl(
        "apply", "--server-side", "-f", str(control_plane.bin / "mpijobs-crd.yaml")
    )
    for crd in CRDS:
        wait_until(
            lambda crd=crd: "True" in control_plane.kubectl(
                "get", "crd", crd, "-o", ESTABLISHED
            ).stdout,
            60,
            f"CRD {crd} established",
        )  # fmt: skip
    return control_plane


class Operator:
    """`python -m scalelab operator -A` as a subprocess with the operator ServiceAccount's token."""

    def __init__(self, cp: ControlPlane, workdir: Path) -> None:
        self.cp, self.workdir = cp, workdir
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Operator:
        kubeconfig = self.cp.service_account_kubeconfig(
            OPERATOR_NS, OPERATOR_SA, self.workdir / "operator.kubeconfig"
        )
        env = dict(os.environ)
        env.update(
            KUBECONFIG=str(kubeconfig),
            SCALELAB_RECONCILE_INTERVAL_SECONDS="0.5",
            # Trials run side by side on one machine here: no fixed per-rank metrics ports.
            SCALELAB_TRAINER_METRICS_PORT="0",
        )
        self.starts += 1
        log = open(self.workdir / f"operator-{self.starts}.log", "wb")  # noqa: SIM115 - process lifetime
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "scalelab", "operator", "--all-namespaces",
                f"--metrics-port={self.metrics_port}", f"--liveness-port={self.liveness_port}",
            ],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True,
        )  # fmt: skip
        wait_until(self.healthy, 60, "scalelab operator /healthz")
        return self

    def healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"operator exited {self.proc.returncode}:\n{self.log_tail()}")
        url = f"http://127.0.0.1:{self.liveness_port}/healthz"
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, like a node dying under the operator."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            return str(r.read().decode())

    def log_tail(self, lines: int = 60) -> str:
        path = self.workdir / f"operator-{self.starts}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def operator(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The scalelab operator, running as its ServiceAccount, watching every namespace."""
    op = Operator(cluster, tmp_path_factory.mktemp("operator")).start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture(scope="session")
def standin(cluster: ControlPlane) -> Iterator[StandIn]:
    """The MPI operator + kubelet stand-in, running the trainer for every MPIJob."""
    tokens: dict[tuple[str, str], Path] = {}

    def token(namespace: str, account: str) -> Path:
        if (namespace, account) not in tokens:
            tokens[(namespace, account)] = cluster.service_account_kubeconfig(namespace, account)
        return tokens[(namespace, account)]

    s = StandIn(admin_kubeconfig=cluster.kubeconfig, token_kubeconfig=token).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def namespace(cluster: ControlPlane, request: pytest.FixtureRequest) -> str:
    """A fresh namespace per test (experiment names repeat across tests)."""
    name = f"t{next(_names)}-{request.node.name[5:30].lower().replace('_', '-').strip('-')}"
    name = "".join(c for c in name if c.isalnum() or c == "-").strip("-")
    cluster.kubectl("create", "namespace", name)
    return name


def get(cp: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any]:
    """One object as JSON (admin)."""
    out = cp.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout
    obj: dict[str, Any] = json.loads(out)
    return obj


def items(cp: ControlPlane, kind: str, namespace: str) -> list[dict[str, Any]]:
    """Every object of a kind in a namespace (admin)."""
    out = cp.kubectl("get", kind, "-n", namespace, "-o", "json").stdout
    found: list[dict[str, Any]] = json.loads(out)["items"]
    return found


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll until `check()` returns something truthy; return it (or fail with `what`)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def phase_of(cp: ControlPlane, name: str, namespace: str) -> str | None:
    """status.phase of a ScaleExperiment."""
    status = get(cp, "scaleexperiment", name, namespace).get("status") or {}
    phase: str | None = status.get("phase")
    return phase
