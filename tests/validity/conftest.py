"""The control plane with scalelab's CRDs applied (nothing else: the API server alone judges)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.harness.controlplane import ControlPlane

CRDS = Path(__file__).resolve().parents[2] / "manifests" / "crds"


@pytest.fixture(scope="session")
def crds_plane(control_plane: ControlPlane) -> ControlPlane:
    """The control plane once the generated ScaleExperiment and ScaleTrial CRDs serve."""
    control_plane.kubectl("apply", "-f", str(CRDS))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/scaleexperiments.scalelab.dev", "crd/scaletrials.scalelab.dev",
    )  # fmt: skip
    api = custom_objects(control_plane)
    deadline = time.monotonic() + 60
    while True:  # Established can precede the first request the new resource serves
        try:
            api.list_namespaced_custom_object(
                "scalelab.dev", "v1alpha1", "default", "scaleexperiments"
            )
            return control_plane
        except ApiException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def custom_objects(cp: ControlPlane) -> client.CustomObjectsApi:
    """A client for custom objects as the admin user, with a connection pool for threads."""
    configuration = client.Configuration()
    config.load_kube_config(str(cp.kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = 16
    return client.CustomObjectsApi(client.ApiClient(configuration))
