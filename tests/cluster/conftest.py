"""Fixtures of the cluster tier: scalelab installed with `kubectl apply -k manifests/` on the real
control plane, the real MPIJob CRD, the operator as a subprocess under its own ServiceAccount's
token (RBAC enforced), and the MPI operator + kubelet stand-in (standin.py)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.processes import REPO, Operator, install
from tests.cluster.standin import StandIn
from tests.harness.controlplane import ControlPlane
from tests.harness.objects import get, items, wait_for

__all__ = ["REPO", "Operator", "get", "items", "phase_of", "wait_for"]
_names = itertools.count()


@pytest.fixture(scope="session")
def cluster(control_plane: ControlPlane) -> ControlPlane:
    """The control plane with scalelab's kustomize base and the real MPIJob CRD installed."""
    return install(control_plane)


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


def phase_of(cp: ControlPlane, name: str, namespace: str) -> str | None:
    """status.phase of a ScaleExperiment."""
    status = get(cp, "scaleexperiment", name, namespace).get("status") or {}
    phase: str | None = status.get("phase")
    return phase
