"""The headline path on real pods: `kubectl apply -f experiment.yaml` → the operator pod makes
ScaleTrials and MPIJobs → the real MPI operator makes launcher and worker pods from our trainer
image → `mpirun` over ssh between pods → Horovod + TensorFlow in containers → ScaleTrial status
from rank 0 (through the `kubernetes` Service) and Prometheus series scraped from the pods.
Faults are real too: deleted worker pods, a deleted operator pod, GPU requests the node cannot fit.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.processes import local_results
from tests.harness.cluster import Cluster
from tests.harness.controlplane import ControlPlane
from tests.harness.objects import get, items, wait_for
from tests.harness.prometheus import Prometheus
from tests.node.conftest import (
    FAKE_GPUS,
    OPERATOR_NS,
    REPO,
    apply,
    finished,
    gpus_held,
    operator_diagnostics,
)

pytestmark = pytest.mark.node

LAB1 = REPO / "examples" / "lab1-gd-vs-sgd.yaml"


def experiment(name: str, **sections: dict[str, Any]) -> dict[str, Any]:
    """A small experiment (seconds of CPU per trial); `sections` replace parts of the spec."""
    spec: dict[str, Any] = {
        "workload": {"model": "linear", "dataset": "lab1-line", "datasetSize": 64, "seed": 0},
        "sweep": {"batchSizes": [16], "gpus": [1]},
        "training": {
            "optimizer": "sgd", "learningRate": 0.01, "referenceBatchSize": 16,
            "maxEpochs": 5, "convergence": {"relativeTolerance": 0},
        },
        "resources": {"gpusPerProcess": 0, "cpu": "500m", "memory": "1Gi"},
        "execution": {"maxConcurrentTrials": 1, "maxGPUs": FAKE_GPUS,
                      "activeDeadlineSeconds": 600, "backoffLimit": 0},
    }  # fmt: skip
    for key, value in sections.items():
        spec[key] = {**spec[key], **value}
    return {
        "apiVersion": "scalelab.dev/v1alpha1",
        "kind": "ScaleExperiment",
        "metadata": {"name": name},
        "spec": spec,
    }


def trial_diagnostics(cp: ControlPlane, namespace: str) -> str:
    """Pods, their logs and the operator's log, for an assertion message."""
    pods = cp.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
    logs = []
    for pod in items(cp, "pods", namespace):
        name = pod["metadata"]["name"]
        logs.append(f"--- {name}\n" + cp.kubectl(
            "logs", "-n", namespace, name, "--tail=30", check=False
        ).stdout)  # fmt: skip
    trials = cp.kubectl("get", "st", "-n", namespace, "-o", "yaml", check=False).stdout
    return "\n".join([pods, *logs, trials[-3000:], operator_diagnostics(cp)])


def active_operator_pod(cp: ControlPlane) -> dict[str, Any] | None:
    """The operator replica that acts: the pod named in the holder identity of the Lease
    scalelab-operator ("POD_SUFFIX", kube/leader.py); None while no running pod holds it. The
    standby serves /metrics too, without the gauges of the experiments."""
    lease = get(cp, "lease", "scalelab-operator", OPERATOR_NS)
    holder = (lease.get("spec") or {}).get("holderIdentity") or ""
    pod_name = holder.rpartition("_")[0]  # pod names have no "_"
    pods = items(cp, "pods", OPERATOR_NS, "-l", "app.kubernetes.io/name=scalelab-operator")
    return next(
        (p for p in pods if p["metadata"]["name"] == pod_name and p["status"].get("podIP")), None
    )


def operator_metrics(cp: ControlPlane) -> str:
    """The active operator pod's /metrics, fetched from the host at the pod's IP ("" while no
    replica holds the Lease)."""
    pod = active_operator_pod(cp)
    if pod is None:
        return ""
    url = f"http://{pod['status']['podIP']}:8080/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        return str(r.read().decode())


def gauge(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in a Prometheus text exposition."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return None


def test_lab1_example_applied_with_kubectl_on_real_pods_matches_a_local_run(
    installed: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    cp = installed
    cp.kubectl("apply", "-n", namespace, "-f", str(LAB1))
    name = yaml.safe_load(LAB1.read_text())["metadata"]["name"]
    local = local_results(tmp_path, LAB1, timeout=600)  # runs while the pods do

    assert finished(cp, name, namespace) == "Succeeded", trial_diagnostics(cp, namespace)

    status = get(cp, "sx", name, namespace)["status"]
    assert status["trials"]["succeeded"] == len(local) == 2
    for trial_name, expected in local.items():
        trial = get(cp, "st", trial_name, namespace)["status"]
        result = trial["result"]
        assert trial["phase"] == expected["phase"] == "Succeeded"
        assert result["epochs"] == expected["epochs"]
        assert result["steps"] == expected["steps"]
        assert result["finalLoss"] == pytest.approx(expected["finalLoss"], rel=1e-9)
        assert result["params"]["w"] == pytest.approx(expected["params"]["w"], rel=1e-9)
        assert result["params"]["b"] == pytest.approx(expected["params"]["b"], rel=1e-9)
    # The trials ran in real launcher and worker pods made by the MPI operator on the node.
    events = json.loads(cp.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)
    started = {e["involvedObject"]["name"] for e in events["items"] if e["reason"] == "Started"}
    assert any("-launcher" in p for p in started), started
    assert any("-worker-0" in p for p in started), started


def test_a_two_process_grid_point_runs_across_two_worker_pods_and_is_scraped_from_both(
    installed: ControlPlane, node_cluster: Cluster, pod_prometheus: Prometheus, namespace: str
) -> None:
    cp = installed
    name = apply(cp, namespace, experiment(
        "hvd-two-pods",
        workload={"model": "mlp", "dataset": "digits", "datasetSize": 256},
        sweep={"batchSizes": [32], "gpus": [2]},
        training={"optimizer": "momentum", "learningRate": 0.05, "referenceBatchSize": 32,
                  "maxEpochs": 30, "shuffle": True},
        resources={"gpusPerProcess": 1, "processesPerWorker": 1},
    ))  # fmt: skip
    # Both workers hold one fake GPU each, as the scheduler placed them.
    workers = wait_for(
        lambda: [p for p in items(cp, "pods", namespace) if "-worker-" in p["metadata"]["name"]]
        if len(items(cp, "pods", namespace)) >= 2 else None,
        180, "two worker pods",
    )  # fmt: skip
    for w in workers:
        limits = w["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1"

    assert finished(cp, name, namespace) == "Succeeded", trial_diagnostics(cp, namespace)

    trial = items(cp, "st", namespace)[0]
    assert trial["spec"]["gpus"] == 2
    result = trial["status"]["result"]
    assert result["steps"] > 0
    assert result["samplesPerSecond"] > 0
    # Every rank was scraped from its own pod, with the PodMonitor's labels on the series.
    series = pod_prometheus.wait_for(
        f"count by (pod, rank, scalelab_dev_gpus) (last_over_time("
        f'scalelab_trainer_samples_total{{namespace="{namespace}"}}[30m]))',
        timeout=30,
    )
    by_rank = {s["metric"]["rank"]: s["metric"]["pod"] for s in series}
    assert set(by_rank) == {"0", "1"}, series
    assert len(set(by_rank.values())) == 2, f"both ranks in one pod: {by_rank}"
    assert all(s["metric"]["scalelab_dev_gpus"] == "2" for s in series)
    # Every printer column is filled (an empty cell would shorten the row), and a finished
    # trial's EPOCH is its last epoch.
    for kind in ("sx", "st"):
        header, row = cp.kubectl("get", kind, "-n", namespace).stdout.splitlines()[:2]
        cells = dict(zip(header.split(), row.split(), strict=True))
        assert cells["PHASE"] == "Succeeded", cells
    assert cells["EPOCH"] == str(result["epochs"]), cells
    assert float(cells["FINAL-LOSS"]) == pytest.approx(result["finalLoss"])


def _delete_worker_when_training(cp: ControlPlane, namespace: str) -> str:
    """Wait until rank 0 reports an epoch, then delete worker 0; the deleted pod's name."""

    def training() -> str | None:
        trials = items(cp, "st", namespace)
        progress = trials[0].get("status", {}).get("progress") if trials else None
        if not progress or not progress.get("epoch"):
            return None
        pods = {p["metadata"]["name"] for p in items(cp, "pods", namespace)}
        worker = f"{trials[0]['metadata']['name']}-worker-0"  # the MPIJob is named as the trial
        return worker if worker in pods else None

    pod: str = wait_for(training, 300, "rank 0 to report an epoch", interval=0.5)
    cp.kubectl("delete", "pod", "-n", namespace, pod, "--grace-period=0", "--wait=false")
    return pod


LONG_TRIAL = {
    "workload": {"model": "mlp", "dataset": "digits", "datasetSize": 512},
    "training": {"optimizer": "momentum", "learningRate": 0.05, "referenceBatchSize": 16,
                 "maxEpochs": 300},
}  # fmt: skip


def test_a_trial_whose_worker_pod_is_deleted_fails_with_a_reason_and_the_sweep_goes_on(
    installed: ControlPlane, namespace: str
) -> None:
    cp = installed
    name = apply(cp, namespace, experiment(
        "worker-lost", **LONG_TRIAL, sweep={"batchSizes": [16, 64]},
        execution={"backoffLimit": 0},
    ))  # fmt: skip
    _delete_worker_when_training(cp, namespace)  # of batch 16 (trials list by name)

    # The experiment goes on: batch 64 runs (one trial at a time) and is measured.
    assert finished(cp, name, namespace) == "Succeeded", trial_diagnostics(cp, namespace)
    lost, other = (t["status"] for t in items(cp, "st", namespace))
    assert lost["phase"] == "Failed"
    assert lost["reason"], lost
    assert other["phase"] == "Succeeded", other


def test_a_trial_whose_worker_pod_is_deleted_is_retried_under_its_backoff_limit(
    installed: ControlPlane, namespace: str
) -> None:
    cp = installed
    sections = {**LONG_TRIAL, "training": {**LONG_TRIAL["training"], "maxEpochs": 60}}
    name = apply(cp, namespace, experiment(
        "worker-retried", **sections, execution={"backoffLimit": 2}
    ))  # fmt: skip
    _delete_worker_when_training(cp, namespace)

    assert finished(cp, name, namespace) == "Succeeded", trial_diagnostics(cp, namespace)
    launchers = items(cp, "jobs", namespace)
    assert len(launchers) == 1
    assert launchers[0]["status"].get("failed", 0) >= 1, launchers[0]["status"]


def test_the_operator_pod_deleted_mid_experiment_is_recreated_and_makes_no_duplicate_mpijobs(
    installed: ControlPlane, namespace: str
) -> None:
    cp = installed
    name = apply(cp, namespace, experiment(
        "operator-lost", sweep={"batchSizes": [8, 16], "gpus": [1]},
        training={"maxEpochs": 20},
    ))  # fmt: skip
    wait_for(lambda: items(cp, "mpijobs", namespace), 120, "the first MPIJob")
    selector = "app.kubernetes.io/name=scalelab-operator"
    # The replica that acts (the standby's loss would change nothing).
    active = wait_for(lambda: active_operator_pod(cp), 60, "the operator holding the Lease")
    before = active["metadata"]["name"]
    cp.kubectl("delete", "pod", "-n", OPERATOR_NS, before, "--wait=false")

    def replaced() -> bool:
        pods = items(cp, "pods", OPERATOR_NS, "-l", selector)
        return any(
            p["metadata"]["name"] != before
            and any(c["type"] == "Ready" and c["status"] == "True"
                    for c in p["status"].get("conditions", []))
            for p in pods
        )  # fmt: skip

    wait_for(replaced, 180, "the Deployment to replace the operator pod")
    assert finished(cp, name, namespace) == "Succeeded", trial_diagnostics(cp, namespace)
    jobs = items(cp, "mpijobs", namespace)
    trials = items(cp, "st", namespace)
    assert len(trials) == 2
    owners = sorted(j["metadata"]["ownerReferences"][0]["uid"] for j in jobs)
    assert owners == sorted(t["metadata"]["uid"] for t in trials)


def test_a_grid_point_needing_more_gpus_than_the_node_has_stays_pending_and_shows_as_demand(
    installed: ControlPlane, namespace: str
) -> None:
    cp = installed
    name = apply(cp, namespace, experiment(
        "too-many-gpus", sweep={"batchSizes": [16], "gpus": [2 * FAKE_GPUS]},
        resources={"gpusPerProcess": 1, "processesPerWorker": 2, "cpu": "100m",
                   "memory": "256Mi"},
        execution={"maxGPUs": 2 * FAKE_GPUS},
    ))  # fmt: skip

    def unschedulable() -> list[str]:
        return [
            p["metadata"]["name"]
            for p in items(cp, "pods", namespace)
            if any(c.get("reason") == "Unschedulable" for c in p["status"].get("conditions", []))
        ]

    pending = wait_for(unschedulable, 180, "worker pods the scheduler cannot place")
    assert pending
    # The scheduler placed what fits (two workers of 2 GPUs) and no more: never over the node.
    placed = [p for p in items(cp, "pods", namespace) if p["spec"].get("nodeName")]
    assert sum(int(p["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
               for p in placed) <= FAKE_GPUS  # fmt: skip

    def demand() -> str | None:
        m = operator_metrics(cp)
        return (
            m
            if gauge(m, "scalelab_operator_gpus", namespace=namespace, state="requested")
            else None
        )

    metrics: str = wait_for(demand, 60, "the operator's GPU gauge")
    assert gauge(metrics, "scalelab_operator_gpus", namespace=namespace, state="requested") == 8
    assert gauge(metrics, "scalelab_operator_gpus", namespace=namespace, state="running") == 0
    sx = get(cp, "sx", name, namespace)["status"]
    assert sx["phase"] in ("Pending", "Running")
    assert sx["trials"]["succeeded"] == 0


def test_trials_that_together_exceed_max_gpus_run_one_after_the_other(
    installed: ControlPlane, namespace: str
) -> None:
    cp = installed
    name = apply(cp, namespace, experiment(
        "max-gpus", sweep={"batchSizes": [8, 16], "gpus": [2]},
        resources={"gpusPerProcess": 1, "processesPerWorker": 1},
        execution={"maxConcurrentTrials": 2, "maxGPUs": 2},
    ))  # fmt: skip
    most = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal most
        while not done.is_set():
            most = max(most, gpus_held(cp, [namespace]))
            done.wait(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        assert finished(cp, name, namespace) == "Succeeded", trial_diagnostics(cp, namespace)
    finally:
        done.set()
        watcher.join()
    assert most == 2, f"GPUs held at once: {most} (maxGPUs 2)"
