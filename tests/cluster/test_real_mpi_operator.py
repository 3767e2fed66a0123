"""The real Kubeflow MPI operator (v0.8.2, built by hack/build-control-plane.sh) consumes the
MPIJob our operator creates: it makes the `<job>-ssh` Secret, the hostfile ConfigMap, the headless
Service and the worker Pods with our command and GPU limits, then — once the workers report
Ready (this test plays the kubelet for their status) — the launcher Job running `mpirun -np N`
with the planner's trainer flags; the launcher pod's success becomes MPIJob Succeeded, which
our operator turns into the trial's and the experiment's phase."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from scalelab.api import ScaleExperiment
from scalelab.kube import mpijob
from scalelab.kube.observed import JobPhase, job_state
from scalelab.kube.settings import Config
from scalelab.planner import plan
from tests.cluster.conftest import Operator, get, items, phase_of, wait_for
from tests.cluster.standin import StandIn
from tests.harness.controlplane import ControlPlane

#: The node tier's MPI operator holds the same fixed host port: hack/test.sh runs this module in
#: the node tier's pytest process, before the node tests (pyproject.toml's markers).
pytestmark = [pytest.mark.cluster, pytest.mark.mpi_operator_port]


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


def test_the_real_mpi_operator_runs_the_mpijobs_our_operator_creates(
    cluster: ControlPlane,
    operator: Operator,
    standin: StandIn,
    namespace: str,
    mpi_operator: subprocess.Popen[bytes],
) -> None:
    standin.ignore.add(namespace)  # this namespace belongs to the real controller
    spec = {
        "sweep": {"batchSizes": [64], "gpus": [4]},
        "resources": {"gpusPerProcess": 1, "processesPerWorker": 2},
    }
    document = {"apiVersion": "scalelab.dev/v1alpha1", "kind": "ScaleExperiment",
                "metadata": {"name": "real"}, "spec": spec}  # fmt: skip
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(document))
    [trial] = plan(ScaleExperiment.model_validate({**document, "metadata": {"name": "real"}}))
    core = client.CoreV1Api(config.new_client_from_config(config_file=str(cluster.kubeconfig)))
    name = trial.name
    wait_for(lambda: items(cluster, "mpijobs", namespace), 60, "the operator's MPIJob")

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
    trial_uid = get(cluster, "scaletrial", name, namespace)["metadata"]["uid"]
    for pod in workers:
        container = pod["spec"]["containers"][0]
        # Workers holding GPUs save their environment (the device plugin's) for the ranks.
        assert container["command"] == mpijob.worker_command(trial, trial_uid)
        assert container["command"][-len(mpijob.WORKER_COMMAND) :] == mpijob.WORKER_COMMAND
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
    assert container["command"] == mpijob.launcher_command(
        trial,
        namespace,
        trial_uid,
        Config(trainer_metrics_port=0),  # as the test operator runs
    )
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
    # Rank 0 reports its result as the trainer account, then the launcher exits 0.
    trainer = cluster.service_account_kubeconfig(namespace, "scalelab-trainer")
    as_trainer = client.CustomObjectsApi(config.new_client_from_config(config_file=str(trainer)))
    as_trainer.patch_namespaced_custom_object_status(
        "scalelab.dev", "v1alpha1", namespace, "scaletrials", name,
        {"status": {"result": {"phase": "Succeeded", "reason": "converged", "epochs": 3,
                               "steps": 3, "finalLoss": 1.5, "samplesPerSecond": 99.0,
                               "seconds": 1.0}}},
        _content_type="application/merge-patch+json",
    )  # fmt: skip
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
    assert wait_for(
        lambda: phase_of(cluster, "real", namespace) in ("Succeeded", "Failed") and True,
        30,
        "the experiment",
    )
    assert phase_of(cluster, "real", namespace) == "Succeeded", operator.log_tail()
    assert get(cluster, "scaletrial", name, namespace)["status"]["phase"] == "Succeeded"


def test_the_real_mpi_operator_gets_workers_that_request_only_the_gpus_ranks_use(
    cluster: ControlPlane,
    operator: Operator,
    standin: StandIn,
    namespace: str,
    mpi_operator: subprocess.Popen[bytes],
) -> None:
    """3 processes at most 2 per worker: 3 workers of 1 slot (3 GPUs), not 2 of 2 (4 GPUs)."""
    standin.ignore.add(namespace)
    spec = {
        "sweep": {"batchSizes": [48], "gpus": [3]},
        "resources": {"gpusPerProcess": 1, "processesPerWorker": 2},
    }
    document = {"apiVersion": "scalelab.dev/v1alpha1", "kind": "ScaleExperiment",
                "metadata": {"name": "uneven"}, "spec": spec}  # fmt: skip
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(document))
    [trial] = plan(ScaleExperiment.model_validate(document))
    name = trial.name

    def hostfile_text() -> str:
        jsonpath = "jsonpath={.data.hostfile}"
        config_map = ("configmap", f"{name}-config", "-n", namespace)
        return cluster.kubectl("get", *config_map, "-o", jsonpath, check=False).stdout.strip()

    hostfile = wait_for(hostfile_text, 60, "the MPI operator's hostfile")
    assert hostfile.splitlines() == [
        f"{name}-worker-{i}.{name}.{namespace}.svc slots=1" for i in range(3)
    ]
    workers = wait_for(
        lambda: len(w := [p for p in items(cluster, "pods", namespace)
                          if "-worker-" in p["metadata"]["name"]]) == 3 and w,
        60,
        "three worker pods",
    )  # fmt: skip
    requested = sum(
        int(p["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) for p in workers
    )
    assert requested == 3
    for pod in workers:
        assert pod["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
