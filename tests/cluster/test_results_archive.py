"""Results outlive their experiment: when a ScaleExperiment finishes the operator archives its
results.json in a ConfigMap no owner deletes, `scalelab report --experiment` reads it after
`kubectl delete sx`, and `scalelab report --prune` removes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import KubeConfig
from prometheus_client.parser import text_string_to_metric_families

from scalelab.kube import rest
from scalelab.kube.apply import Kube
from scalelab.kube.archive import LABEL_ARCHIVE, READER_BINDING, Archiver
from scalelab.kube.mpijob import LABEL_ARCHIVED
from tests.cluster.conftest import REPO, Operator, get, items, phase_of, wait_for
from tests.cluster.processes import OPERATOR_NS, OPERATOR_SA, cluster_report
from tests.cluster.standin import StandIn
from tests.harness.controlplane import ControlPlane

pytestmark = pytest.mark.cluster

NAME = "kept"
TRIAL_RESULTS = "app.kubernetes.io/component=trial-results"


def _experiment() -> str:
    """Two tiny lab1 trials (seconds of CPU each) that export their dataset, one skipped."""
    body: dict[str, Any] = {
        "apiVersion": "scalelab.dev/v1alpha1",
        "kind": "ScaleExperiment",
        "metadata": {"name": NAME},
        "spec": {
            "workload": {"model": "linear", "dataset": "lab1-line", "datasetSize": 64},
            "sweep": {"batchSizes": [64, 16, 3], "gpus": [1, 2]},
            "training": {"learningRate": 0.01, "maxEpochs": 5,
                         "convergence": {"relativeTolerance": 0}},
            "resources": {"gpusPerProcess": 0, "cpu": "1", "memory": "1Gi"},
            "execution": {"maxConcurrentTrials": 2, "maxGPUs": 1, "backoffLimit": 0},
        },
    }  # fmt: skip
    return yaml.safe_dump(body)


def _report(cp: ControlPlane, namespace: str, out: Path) -> tuple[str, dict[str, Any]]:
    """`scalelab report --experiment`: its stdout and the results.json it wrote."""
    done = cluster_report(cp, NAME, namespace, out)
    assert done.returncode == 0, done.stderr
    return done.stdout, json.loads((out / "results.json").read_text())


def _scalelab(cp: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scalelab", *args],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
        env={**os.environ, "KUBECONFIG": str(cp.kubeconfig)},
    )  # fmt: skip


def _trials_by_phase(operator: Operator, namespace: str) -> dict[str, float]:
    """The operator's scalelab_operator_trials series of this experiment, by phase."""
    return {
        s.labels["phase"]: s.value
        for family in text_string_to_metric_families(operator.metrics())
        for s in family.samples
        if s.name == "scalelab_operator_trials"
        and (s.labels["namespace"], s.labels["experiment"]) == (namespace, NAME)
    }


def _retired_and_restored(cluster: ControlPlane, operator: Operator, namespace: str) -> None:
    """Once archived, the experiment's ScaleTrials and MPIJobs are labelled out of the
    operator's watches; an operator started afterwards never lists them, and puts the
    experiment's results back into /metrics from the archive."""
    mine = f"scalelab.dev/experiment={NAME}"
    trials = items(cluster, "scaletrials", namespace, "-l", mine)
    jobs = items(cluster, "mpijobs", namespace, "-l", mine)
    assert trials
    assert jobs
    wait_for(
        lambda: (
            not items(cluster, "scaletrials", namespace, "-l", f"{mine},!{LABEL_ARCHIVED}")
            and not items(cluster, "mpijobs", namespace, "-l", f"{mine},!{LABEL_ARCHIVED}")
        ),
        30,
        "the operator to retire the finished experiment's trials and MPIJobs",
    )
    phases = _trials_by_phase(operator, namespace)
    assert phases.get("Succeeded", 0) > 0, phases
    operator.stop()
    operator.start()
    wait_for(
        lambda: _trials_by_phase(operator, namespace) == phases,
        60,
        f"the restarted operator to export the archived results ({phases})",
    )
    # It found nothing left to retire, wrote no archive again and planned nothing again.
    writes = {
        (s.labels["verb"], s.labels["resource"]): s.value
        for family in text_string_to_metric_families(operator.metrics())
        for s in family.samples
        if s.name == "scalelab_operator_api_writes_total" and s.value
    }
    assert not writes.keys() & {
        ("patch", "scaletrials"), ("patch", "mpijobs"), ("create", "scaletrials"),
        ("create", "mpijobs"), ("create", "configmaps"),
    }, writes  # fmt: skip


def test_results_survive_deleting_the_experiment_until_pruned(
    cluster: ControlPlane, operator: Operator, standin: StandIn, namespace: str, tmp_path: Path
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_experiment())
    wait_for(
        lambda: phase_of(cluster, NAME, namespace) in ("Succeeded", "Failed"),
        180,
        f"experiment {namespace}/{NAME} to finish",
    )
    assert phase_of(cluster, NAME, namespace) == "Succeeded", operator.log_tail()
    uid = get(cluster, "sx", NAME, namespace)["metadata"]["uid"]
    [archived] = wait_for(
        lambda: items(cluster, "configmaps", namespace, "-l", f"{LABEL_ARCHIVE}={NAME}"),
        30,
        "the operator to archive the results",
    )
    assert "ownerReferences" not in archived["metadata"]
    assert archived["metadata"]["annotations"]["scalelab.dev/experiment-uid"] == uid
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)
    assert "ResultsArchived" in {e["reason"] for e in events["items"]}
    # The operator reads ConfigMaps only where it runs experiments, through its own binding.
    sa = f"system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}"
    for scope, answer in ((["-n", namespace], "yes"), (["-A"], "no")):
        can = cluster.kubectl("auth", "can-i", "list", "configmaps", *scope, "--as", sa,
                              check=False)  # fmt: skip
        assert can.stdout.strip() == answer, scope
    assert (
        get(cluster, "rolebinding", READER_BINDING, namespace)["subjects"][0]["name"] == OPERATOR_SA
    )

    # Written once: another replica (or a restart) finds it and writes nothing.
    config = KubeConfig.from_file(cluster.service_account_kubeconfig(
        OPERATOR_NS, OPERATOR_SA, tmp_path / "operator.kubeconfig")).get()  # fmt: skip
    assert config is not None
    with rest.Api(config) as api:
        assert Archiver().ensure(Kube(api), namespace, NAME, uid) is None
    again = get(cluster, "configmap", archived["metadata"]["name"], namespace)
    assert again["metadata"]["resourceVersion"] == archived["metadata"]["resourceVersion"]

    _retired_and_restored(cluster, operator, namespace)

    before_out, before = _report(cluster, namespace, tmp_path / "before")
    assert "results archive" not in before_out
    assert {t["phase"] for t in before["trials"]} == {"Succeeded", "Skipped"}

    cluster.kubectl("delete", "sx", NAME, "-n", namespace, "--wait=true")
    wait_for(
        lambda: (
            not items(cluster, "scaletrials", namespace)
            and not items(cluster, "configmaps", namespace, "-l", TRIAL_RESULTS)
        ),
        60,
        "the garbage collector to remove the trials and their results ConfigMaps",
    )

    after_out, after = _report(cluster, namespace, tmp_path / "after")
    assert f"read its results archive, configmap {archived['metadata']['name']}" in after_out
    # Equal as JSON, every field: updatedAt is when the experiment finished, host.cluster the
    # API server the report read from, both the same for the two reads.
    assert after == before
    for trial in before["trials"]:
        if trial.get("dataFile"):
            data = tmp_path / "before" / trial["dataFile"]
            assert (tmp_path / "after" / trial["dataFile"]).read_bytes() == data.read_bytes()
    assert (tmp_path / "after" / "report.html").is_file()

    young = _scalelab(cluster, "report", "--prune", "--older-than", "1", "-n", namespace)
    assert young.returncode == 0, young.stderr
    assert "0 results archive(s)" in young.stdout
    pruned = _scalelab(cluster, "report", "--prune", "-n", namespace)
    assert pruned.returncode == 0, pruned.stderr
    assert f"deleted configmap {namespace}/{archived['metadata']['name']}" in pruned.stdout
    assert not items(cluster, "configmaps", namespace, "-l", LABEL_ARCHIVE)
    gone = cluster_report(cluster, NAME, namespace, tmp_path / "gone")
    assert gone.returncode == 1
    assert "no results archive of it either" in gone.stderr
