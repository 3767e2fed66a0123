"""The grid rule exists twice: the planner's skip reasons (Python) and the CRD's CEL rule
("at least one grid point can run"), which refuses a hopeless sweep at
`kubectl apply` time (crd.RUNNABLE_GRID_RULE; test_crd.py keeps the committed CRD equal to the
generated one). The real kube-apiserver evaluates the CEL on a few hundred random sweeps
(server-side dry run) and must accept exactly those where the planner finds a runnable point."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from scalelab.api import ScaleExperiment
from scalelab.planner import plan
from tests.harness.controlplane import ControlPlane

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "manifests" / "crds" / "scalelab.dev_scaleexperiments.yaml"
CASES = 300
NO_GRID = "no grid point can run"
BATCHES = [1, 2, 3, 4, 6, 8, 12, 16, 25, 32, 64, 100]


def random_sweep(rng: random.Random, i: int) -> dict[str, Any]:
    """A ScaleExperiment valid but for the grid rule: unique lists, the default model/dataset."""
    return {
        "apiVersion": "scalelab.dev/v1alpha1",
        "kind": "ScaleExperiment",
        "metadata": {"name": f"grid-{i}", "namespace": "default"},
        "spec": {
            "workload": {"datasetSize": rng.choice([1, 2, 3, 5, 8, 16, 24, 64, 100])},
            "sweep": {
                "batchSizes": rng.sample(
                    [1, 2, 3, 4, 6, 8, 12, 16, 25, 32, 64, 100], rng.randint(1, 4)
                ),
                "gpus": rng.sample([1, 2, 3, 4, 6, 8, 16], rng.randint(1, 3)),
                "batchScope": rng.choice(["global", "perProcess"]),
            },
            "resources": {"gpusPerProcess": rng.choice([0, 1, 2])},
            "execution": {"maxGPUs": rng.choice([1, 2, 3, 4, 8, 16])},
        },
    }


def planner_accepts(document: dict[str, Any]) -> bool:
    return any(not t.skipped for t in plan(ScaleExperiment.model_validate(document)))


def apiserver_refusal(api: client.CustomObjectsApi, document: dict[str, Any]) -> str:
    """'' when the API server would create the experiment, else its status and message."""
    try:
        api.create_namespaced_custom_object(
            "scalelab.dev", "v1alpha1", "default", "scaleexperiments", document, dry_run="All"
        )
    except ApiException as error:
        return f"{error.status}: {error.body}"
    return ""


@pytest.fixture(scope="module")
def experiments_api(control_plane: ControlPlane) -> client.CustomObjectsApi:
    control_plane.kubectl("apply", "-f", str(CRD))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/scaleexperiments.scalelab.dev",
    )  # fmt: skip
    api = client.CustomObjectsApi(config.new_client_from_config(str(control_plane.kubeconfig)))
    deadline = time.monotonic() + 60
    while True:  # Established can precede the first request the new resource serves
        try:
            api.list_namespaced_custom_object(
                "scalelab.dev", "v1alpha1", "default", "scaleexperiments"
            )
            return api
        except ApiException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_the_apiserver_accepts_exactly_the_sweeps_the_planner_can_run(
    experiments_api: client.CustomObjectsApi,
) -> None:
    rng = random.Random(20261203)
    outcomes = {True: 0, False: 0}
    disagreements = []
    for i in range(CASES):
        document = random_sweep(rng, i)
        expected = planner_accepts(document)
        outcomes[expected] += 1
        refusal = apiserver_refusal(experiments_api, document)
        if refusal:  # refused by this rule, not by another one
            assert refusal.startswith("422"), refusal
            assert NO_GRID in refusal, refusal
        if (not refusal) != expected:
            disagreements.append(document["spec"])
    assert not disagreements, disagreements[:5]
    assert min(outcomes.values()) >= CASES // 10, outcomes  # both sides well represented
