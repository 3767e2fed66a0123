"""Session-scoped pytest fixtures for the real components: the control plane and Prometheus.

Each starts on first request and stops at the end of the session; tests that don't ask for one
don't pay for it. Registered as a plugin by tests/conftest.py.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.controlplane import ControlPlane, start_control_plane
from tests.harness.prometheus import Prometheus, start_prometheus


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver (RBAC) + kube-controller-manager + kube-scheduler, admin kubeconfig."""
    cp = start_control_plane(tmp_path_factory.mktemp("control-plane"))
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A Prometheus scraping every 1 s whatever targets a test sets."""
    p = start_prometheus(tmp_path_factory.mktemp("prometheus"))
    try:
        yield p
    finally:
        p.stop()
        shutil.rmtree(Path(p.workdir) / "data", ignore_errors=True)
