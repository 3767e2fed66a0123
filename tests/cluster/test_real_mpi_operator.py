"""The real Kubeflow MPI operator (v0.8.0, built by hack/build-control-plane.sh) consumes the
MPIJob our code renders: it makes the `<job>-ssh` Secret, the hostfile ConfigMap, the headless
Service and the worker Pods with our command and GPU limits, then — once the workers report
Ready (this test plays the kubelet for their status) — the launcher Job running `mpirun -np N`
with the planner's trainer flags; the launcher pod's success becomes MPIJob Succeeded, which
our reconcile turns into the trial's phase."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client, config

from scalelab.api import ScaleExperiment
from scalelab.kube import mpijob
from scalelab.kube.reconcile import JobPhase, job_state, trial_body
from scalelab.kube.settings import Config
from scalelab.planner import plan
from tests.cluster.conftest import get, items, wait_for
from tests.cluster.standin import StandIn
from tests.harness.controlplane import ControlPlane

pytestmark = pytest.mark.cluster


@pytest.fixture
def mpi_operator(cluster: ControlPlane, namespace: str) -> Iterator[subprocess.Popen[bytes]]:
    """mpi-operator watching one namespace (its health port 8080 is fixed: one at a time)."""
    cluster.kubectl("create", "namespace", "mpi-operator", check=False)  # leader-election lock
    log = open(cluster.workdir / f"mpi-operator-{namespace}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            str(cluster.bin / "mpi-operator"), f"--kubeConfig={cluster.kubeconfig}",
            f"--namespace={namespace}", "--monitoring-port=0", "--kube-api-qps=50",
            "--kube-api-burst=100",
        ],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ready(core: client.CoreV1Api, pod: dict[str, Any], phase: str = "Running") -> None:
    """What a kubelet would report for a started (or finished) container."""
    ready = "True" if phase == "Running" else "False"
    body = {
        "status": {
            "phase": phase,
            "conditions": [
                {"type": "Ready", "status": ready, "lastTransitionTime": _now()},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": _now()},
            ],
            "startTime": _now(),
        }
    }
    core.patch_namespaced_pod_status(pod["metadata"]["name"], pod["metadata"]["namespace"], body)


def test_the_real_mpi_operator_turns_our_mpijob_into_launcher_workers_and_ssh_secret(
    cluster: ControlPlane,
    standin: StandIn,
    namespace: str,
    mpi_operator: subprocess.Popen[bytes],
) -> None:
    standin.ignore.add(namespace)  # this namespace belongs to the real controller
    experiment = ScaleExperiment.model_validate(
        {
            "metadata": {"name": "real", "namespace": namespace},
            "spec": {
                "sweep": {"batchSizes": [64], "gpus": [4]},
                "resources": {"gpusPerProcess": 1, "processesPerWorker": 2},
            },
        }
    )
    [trial] = plan(experiment)
    uid = "00000000-0000-0000-0000-000000000001"
    owner = {"apiVersion": "scalelab.dev/v1alpha1", "metadata": {"name": "real", "uid": uid}}
    api = client.CustomObjectsApi(
        config.new_client_from_config(config_file=str(cluster.kubeconfig))
    )
    core = client.CoreV1Api(config.new_client_from_config(config_file=str(cluster.kubeconfig)))
    made = api.create_namespaced_custom_object(
        "scalelab.dev", "v1alpha1", namespace, "scaletrials", trial_body(trial, namespace, owner)
    )
    job = mpijob.render(trial, namespace, made["metadata"]["uid"], Config())
    api.create_namespaced_custom_object("kubeflow.org", "v2beta1", namespace, "mpijobs", job)
    name = trial.name

    secret = wait_for(
        lambda: cluster.kubectl("get", "secret", f"{name}-ssh", "-n", namespace, check=False)
        .returncode == 0,
        60,
        "the MPI operator's ssh Secret",
    )  # fmt: skip
    assert secret
    hostfile = get(cluster, "configmap", f"{name}-config", namespace)["data"]["hostfile"]
    assert hostfile.split("\n")[:2] == [
        f"{name}-worker-0.{name}.{namespace}.svc slots=2",
        f"{name}-worker-1.{name}.{namespace}.svc slots=2",
    ]
    assert get(cluster, "service", name, namespace)["spec"]["clusterIP"] == "None"

    def pods(role: str) -> list[dict[str, Any]]:
        return [p for p in items(cluster, "pods", namespace) if role in p["metadata"]["name"]]

    workers = wait_for(
        lambda: len(w := pods("-worker-")) == 2 and w,
        60,
        "two worker pods",
    )  # fmt: skip
    for pod in workers:
        container = pod["spec"]["containers"][0]
        assert container["command"] == mpijob.WORKER_COMMAND
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
        assert pod["spec"]["serviceAccountName"] == "scalelab-trainer"
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/home/mpiuser/.ssh" in mounts
    # WaitForWorkersReady: no launcher until the workers are Ready; play their kubelet.
    assert not [p for p in items(cluster, "jobs", namespace)]
    for pod in workers:
        _ready(core, pod)
    launcher = wait_for(
        lambda: items(cluster, "jobs", namespace), 60, "the launcher Job"
    )[0]  # fmt: skip
    container = launcher["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == mpijob.launcher_command(trial, namespace, Config())
    assert container["command"][:3] == ["mpirun", "-np", "4"]
    env = {e["name"] for e in container.get("env", [])}
    assert "OMPI_MCA_orte_default_hostfile" in env
    # The job controller makes the launcher pod; "run" it to success.
    pod = wait_for(
        lambda: pods("-launcher"),
        60,
        "the launcher pod",
    )[0]  # fmt: skip
    _ready(core, pod)
    running = wait_for(
        lambda: job_state(name, get(cluster, "mpijob", name, namespace).get("status")).phase
        is JobPhase.RUNNING,
        60,
        "MPIJob Running from the real controller",
    )  # fmt: skip
    assert running
    core.patch_namespaced_pod_status(
        pod["metadata"]["name"], namespace,
        {"status": {"phase": "Succeeded", "containerStatuses": [{
            "name": "launcher", "ready": False, "restartCount": 0, "image": container["image"],
            "imageID": "", "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                                    "startedAt": _now(), "finishedAt": _now()}}}]}},
    )  # fmt: skip
    state = wait_for(
        lambda: (s := job_state(name, get(cluster, "mpijob", name, namespace).get("status"))).phase
        is JobPhase.SUCCEEDED
        and s,
        90,
        "MPIJob Succeeded from the real controller",
    )  # fmt: skip
    assert state.reason == "MPIJobSucceeded"
