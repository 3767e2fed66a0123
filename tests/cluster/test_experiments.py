"""ScaleExperiments end to end on a real API server: kubectl apply → ScaleTrials → MPIJobs →
the real trainer (run by the stand-in as the trainer ServiceAccount) → trial and experiment
status; failure, restart of the operator, and deletion."""

from __future__ import annotations

import csv
import json
import random
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from scalelab.kube.compact import STATUS_BYTES, STATUS_ROWS
from scalelab.kube.settings import Config
from tests.cluster import paced
from tests.cluster.conftest import REPO, Operator, get, items, phase_of, wait_for
from tests.cluster.processes import (
    TIMING_TRIAL_KEYS,
    cluster_report,
    comparable,
    differences,
    local_run,
)
from tests.cluster.standin import InstantStandIn, StandIn, local_command
from tests.harness.controlplane import ControlPlane
from tests.harness.horovod import HOROVODRUN
from tests.harness.objects import experiment_condition

pytestmark = pytest.mark.cluster

EXAMPLE = REPO / "examples" / "lab1-gd-vs-sgd.yaml"
FINISHED = ("Succeeded", "Failed")


def _experiment(name: str, **spec: Any) -> str:
    """A tiny lab1 experiment (each trial is seconds of CPU), with `spec` sections overriding."""
    body: dict[str, Any] = {
        "apiVersion": "scalelab.dev/v1alpha1",
        "kind": "ScaleExperiment",
        "metadata": {"name": name},
        "spec": {
            "workload": {"model": "linear", "dataset": "lab1-line", "datasetSize": 64},
            "sweep": {"batchSizes": [64], "gpus": [1]},
            "training": {
                "learningRate": 0.01,
                "maxEpochs": 5,
                "convergence": {"relativeTolerance": 0},
            },
            "resources": {"gpusPerProcess": 0, "cpu": "1", "memory": "1Gi"},
            "execution": {"maxConcurrentTrials": 2, "maxGPUs": 4, "backoffLimit": 0},
        },
    }
    body["spec"].update(spec)
    return yaml.safe_dump(body)


def _wait_finished(cp: ControlPlane, name: str, namespace: str, timeout: float = 180) -> str:
    phase: str = wait_for(
        lambda: (p := phase_of(cp, name, namespace)) in FINISHED and p,
        timeout,
        f"experiment {namespace}/{name} to finish",
    )
    return phase


def test_lab1_example_ends_succeeded_with_the_results_of_a_local_run(
    cluster: ControlPlane, operator: Operator, standin: StandIn, namespace: str, tmp_path: Path
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))
    name = yaml.safe_load(EXAMPLE.read_text())["metadata"]["name"]

    assert _wait_finished(cluster, name, namespace) == "Succeeded", operator.log_tail()

    status = get(cluster, "scaleexperiment", name, namespace)["status"]
    assert status["trials"]["total"] == 2
    assert status["trials"]["succeeded"] == 2
    assert status["observedGeneration"] == 1
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True",
        "Complete": "True",
    }
    assert status["recommendation"]["trial"] in {r["trial"] for r in status["results"]}
    jobs = items(cluster, "mpijobs", namespace)
    assert len(jobs) == 2
    local_dir = local_run(tmp_path, EXAMPLE)
    local_file = json.loads((local_dir / "results.json").read_text())
    local = {t["name"]: t for t in local_file["trials"]}
    rows = {r["trial"]: r for r in status["results"]}
    assert rows.keys() == local.keys()
    for trial_name, expected in local.items():
        trial = get(cluster, "scaletrial", trial_name, namespace)
        result = trial["status"]["result"]
        assert trial["status"]["phase"] == expected["phase"] == "Succeeded"
        assert result["epochs"] == expected["epochs"]
        assert result["steps"] == expected["steps"]
        assert result["finalLoss"] == pytest.approx(expected["finalLoss"], rel=1e-9)
        assert result["params"]["w"] == pytest.approx(expected["params"]["w"], rel=1e-9)
        assert result["params"]["b"] == pytest.approx(expected["params"]["b"], rel=1e-9)
        assert rows[trial_name]["finalLoss"] == pytest.approx(expected["finalLoss"], rel=1e-9)
    # The stand-in ran the launcher's own command, through the planner's renderer.
    for job in jobs:
        launcher = job["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
        runs = standin.runs_of(job["metadata"]["name"])
        assert [r.argv for r in runs] == [local_command(launcher["command"])[1]]
        flags = launcher["command"][-6:-2]
        assert flags == ["--namespace", namespace, "--report-status", "--store-results"]
    _same_results_as_the_local_run(cluster, name, namespace, tmp_path, local_file)
    # The reconcile timer's finalizer goes with the timer: deletion never waits on the operator.
    wait_for(
        lambda: not get(cluster, "sx", name, namespace)["metadata"].get("finalizers"),
        10,
        "kopf to drop its finalizer from the finished experiment",
    )
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)
    reasons = {e["reason"] for e in events["items"] if e["involvedObject"]["name"] == name}
    assert {"Planned", "ExperimentSucceeded"} <= reasons
    table = cluster.kubectl("get", "sx", "-n", namespace).stdout
    assert "Succeeded" in table
    assert "BEST-BATCH" in table
    trials_table = cluster.kubectl("get", "st", "-n", namespace).stdout
    assert "FINAL-LOSS" in trials_table
    assert "SAMPLES/S" in trials_table


def _same_results_as_the_local_run(
    cp: ControlPlane, name: str, namespace: str, tmp_path: Path, local: dict[str, Any]
) -> None:
    """`scalelab report --experiment` writes the results.json, results.csv and report.html of
    `scalelab run`: the same file field by field apart from timings and host fields."""
    out = tmp_path / "cluster"
    report = cluster_report(cp, name, namespace, out)
    assert report.returncode == 0, report.stderr
    assert f"{namespace}/{name}: 2 of 2 trial(s) finished" in report.stdout
    remote = json.loads((out / "results.json").read_text())
    assert remote["schemaVersion"] == local["schemaVersion"] == "scalelab.results/v1"
    assert differences(comparable(local), comparable(remote)) == []
    assert remote["recommendation"]["trial"] in {t["name"] for t in remote["trials"]}
    assert remote["host"]["namespace"] == namespace
    for trial in remote["trials"]:
        assert len(trial["curves"]["epochLoss"]) == trial["epochs"] > 0
        assert trial["wallSeconds"] > 0
        with (
            np.load(out / trial["dataFile"]) as ours,
            np.load(tmp_path / "local" / trial["dataFile"]) as theirs,
        ):
            assert np.array_equal(ours["x"], theirs["x"])
            assert np.array_equal(ours["y"], theirs["y"])
    keep = [c for c in (tmp_path / "local" / "results.csv").read_text().splitlines()[0].split(",")
            if c not in TIMING_TRIAL_KEYS]  # fmt: skip
    tables = [
        [[row[k] for k in keep] for row in csv.DictReader((d / "results.csv").open())]
        for d in (tmp_path / "local", out)
    ]
    assert tables[0] == tables[1]
    page = (out / "report.html").read_text()
    for figure in ("lab-gd-loss-vs-epoch", "lab-sgd-loss-vs-update", "lab-trajectory-3d"):
        assert f'id="{figure}"' in page


def test_a_two_process_trial_runs_under_horovodrun_and_reports_status(
    cluster: ControlPlane, operator: Operator, standin: StandIn, namespace: str
) -> None:
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=_experiment("two", sweep={"batchSizes": [64, 3], "gpus": [2]}),
    )  # fmt: skip
    assert _wait_finished(cluster, "two", namespace) == "Succeeded", operator.log_tail()
    status = get(cluster, "scaleexperiment", "two", namespace)["status"]
    phases = {r["trial"]: r["phase"] for r in status["results"]}
    assert phases == {"two-b3-g2": "Skipped", "two-b64-g2": "Succeeded"}
    skipped = get(cluster, "scaletrial", "two-b3-g2", namespace)["status"]
    assert "not divisible" in skipped["reason"]
    assert items(cluster, "mpijobs", namespace)[0]["metadata"]["name"] == "two-b64-g2"
    run = standin.runs_of("two-b64-g2")[0]
    assert run.argv[: len(HOROVODRUN) + 2] == [*HOROVODRUN, "-np", "2"]
    trial = get(cluster, "scaletrial", "two-b64-g2", namespace)["status"]
    assert trial["result"]["epochs"] == 5
    assert trial["progress"]["epoch"] >= 1


def test_a_failing_trial_fails_with_its_reason_and_the_others_continue(
    cluster: ControlPlane, operator: Operator, standin: StandIn, namespace: str
) -> None:
    standin.fail["flaky-b32-g1"] = "CUDA error: out of memory (injected)"
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=_experiment("flaky", sweep={"batchSizes": [64, 32, 16], "gpus": [1]}),
    )  # fmt: skip
    assert _wait_finished(cluster, "flaky", namespace) == "Succeeded", operator.log_tail()
    status = get(cluster, "scaleexperiment", "flaky", namespace)["status"]
    assert status["trials"]["succeeded"] == 2
    assert status["trials"]["failed"] == 1
    failed = get(cluster, "scaletrial", "flaky-b32-g1", namespace)["status"]
    assert failed["phase"] == "Failed"
    assert "BackoffLimitExceeded" in failed["reason"]
    assert "out of memory (injected)" in failed["reason"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["TrialsFailed"]["status"] == "True"
    assert "flaky-b32-g1" in conditions["TrialsFailed"]["message"]
    assert len(standin.runs_of("flaky-b32-g1")) == 1  # backoffLimit 0: no retry
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=TrialFailed", "-o", "json"
    ).stdout
    assert "flaky-b32-g1" in events


def test_an_experiment_whose_every_trial_fails_is_failed(
    cluster: ControlPlane, operator: Operator, standin: StandIn, namespace: str
) -> None:
    standin.fail["doomed-b64-g1"] = "segfault (injected)"
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_experiment("doomed"))
    assert _wait_finished(cluster, "doomed", namespace) == "Failed"
    status = get(cluster, "scaleexperiment", "doomed", namespace)["status"]
    complete = next(c for c in status["conditions"] if c["type"] == "Complete")
    assert complete["reason"] == "Failed"
    assert complete["message"] == "no trial produced a measurement"


def test_the_operator_killed_mid_experiment_resumes_without_duplicates_or_lost_trials(
    cluster: ControlPlane, operator: Operator, standin: StandIn, namespace: str
) -> None:
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=_experiment(
            "restart",
            sweep={"batchSizes": [64, 32, 16], "gpus": [1]},
            execution={"maxConcurrentTrials": 1, "maxGPUs": 1, "backoffLimit": 0},
        ),
    )  # fmt: skip
    wait_for(lambda: items(cluster, "mpijobs", namespace), 60, "the first MPIJob")
    operator.kill()
    try:
        # While it is down the stand-in keeps running the admitted trial to the end.
        wait_for(
            lambda: any(
                c["type"] == "Succeeded"
                for j in items(cluster, "mpijobs", namespace)
                for c in (j.get("status") or {}).get("conditions", [])
            ),
            90,
            "the admitted trial to finish while the operator is down",
        )
        assert len(items(cluster, "mpijobs", namespace)) == 1
    finally:
        operator.start()
    assert _wait_finished(cluster, "restart", namespace) == "Succeeded", operator.log_tail()
    status = get(cluster, "scaleexperiment", "restart", namespace)["status"]
    assert status["trials"] == {
        "total": 3, "pending": 0, "running": 0, "succeeded": 3,
        "diverged": 0, "failed": 0, "skipped": 0, "pruned": 0,
    }  # fmt: skip
    jobs = items(cluster, "mpijobs", namespace)
    assert sorted(j["metadata"]["name"] for j in jobs) == [
        "restart-b16-g1", "restart-b32-g1", "restart-b64-g1",
    ]  # fmt: skip
    assert standin.not_made_and_run_once(namespace, jobs) == []


def test_the_operator_killed_ten_times_at_random_loses_nothing_and_duplicates_nothing(
    cluster: ControlPlane, operator: Operator, standin: StandIn, namespace: str
) -> None:
    """SIGKILL at random moments of a 20-point sweep (creating trials, admitting, folding
    results), each time started again: every MPIJob is created and run once, every trial's
    result reaches the experiment's status, and the experiment ends Succeeded."""
    rng = random.Random(17)
    batches = [64, 32, 16, 8, 4]
    # The ten kills take about 40 s (28.5 s of this seed's pauses, and the restarts). Paced
    # trials of 2 epochs (2.6 s of sleep for any batch size, beside the trainer's few seconds of
    # start-up) two at a time keep the sweep running over a minute whatever the load, at a few
    # seconds of CPU a trial; at 5 linear epochs, four at a time, the margin was a few seconds,
    # and in CI the sweep ended after 9 kills.
    training = {"learningRate": 0.01, "maxEpochs": 2, "convergence": {"relativeTolerance": 0}}
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=_experiment(
            "chaos",
            workload=paced.spec(),
            sweep={"batchSizes": batches, "gpus": [1], "repeats": 4},
            training=training,
            execution={"maxConcurrentTrials": 2, "maxGPUs": 2, "backoffLimit": 0},
        ),
    )  # fmt: skip
    kills = 0
    try:
        while kills < 10 and phase_of(cluster, "chaos", namespace) not in FINISHED:
            time.sleep(rng.uniform(0.2, 4.0))
            operator.kill()
            kills += 1
            time.sleep(rng.uniform(0.0, 1.0))
            operator.start()
    finally:
        if operator.proc is None or operator.proc.poll() is not None:
            operator.start()
    assert kills == 10, f"the experiment finished after {kills} kills: too fast to test"
    assert _wait_finished(cluster, "chaos", namespace, 300) == "Succeeded", operator.log_tail()
    status = get(cluster, "scaleexperiment", "chaos", namespace)["status"]
    assert status["trials"]["succeeded"] == 20
    # No result lost: every row counted (the status shows the top ones), every trial's result kept.
    assert len(status["results"]) + status["omittedResults"] == 20
    trials = items(cluster, "scaletrials", namespace, "-l", "scalelab.dev/experiment=chaos")
    assert sorted(t["status"]["result"]["finalLoss"] is not None for t in trials) == [True] * 20
    jobs = items(cluster, "mpijobs", namespace)
    assert len(jobs) == 20
    assert standin.not_made_and_run_once(namespace, jobs) == []


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_the_api_server_or_etcd_restarted_mid_experiment_loses_nothing(
    cluster: ControlPlane, operator: Operator, standin: StandIn, namespace: str, component: str
) -> None:
    """SIGKILL of the API server (or of etcd) while trials train, kept down 8 s, started again
    on the same ports and data folder: the operator rides it out without a restart of its own,
    the trainers' writes that met the outage are retried, and the experiment ends Succeeded
    with every result and every MPIJob made and run once."""
    name = {"kube-apiserver": "apiserver", "etcd": "etcd"}[component]  # runs_of: by job name
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=_experiment(
            name,
            workload=paced.spec(),
            sweep={"batchSizes": [64, 32], "gpus": [1], "repeats": 2},
            # 12 paced epochs: about 15 s of sleep a trial, beside a few seconds of CPU, so the
            # trials outlast the 8 s outage under any load; at 150 linear epochs they had
            # finished before it and no trainer met it, and 20 000 cost 10 s of CPU a trial.
            training={"learningRate": 0.01, "maxEpochs": 12,
                      "convergence": {"relativeTolerance": 0}},
            execution={"maxConcurrentTrials": 2, "maxGPUs": 2, "backoffLimit": 0},
        ),
    )  # fmt: skip
    wait_for(
        lambda: any(
            (t.get("status") or {}).get("progress") for t in items(cluster, "st", namespace)
        ),
        120,
        "a trial training (its first progress patch)",
    )
    pid, starts = operator.proc.pid if operator.proc else 0, operator.starts
    t0 = time.monotonic()
    recovered = cluster.restart(component, down_seconds=8, kill=True)
    print(f"{component}: down 8 s, API server ready {recovered:.1f} s after the restart")
    assert _wait_finished(cluster, name, namespace, 300) == "Succeeded", operator.log_tail()
    print(f"{component}: experiment finished {time.monotonic() - t0:.0f} s after the kill")
    assert operator.proc is not None
    assert operator.proc.poll() is None, operator.log_tail()
    assert (operator.proc.pid, operator.starts) == (pid, starts)  # no restart of its own
    status = get(cluster, "scaleexperiment", name, namespace)["status"]
    trials = {t["metadata"]["name"]: t["status"] for t in items(cluster, "st", namespace)}
    assert status["trials"]["succeeded"] == 4, {
        k: (t["phase"], t["reason"]) for k, t in trials.items()
    }
    assert len(status["results"]) == 4
    assert all(r["finalLoss"] is not None for r in status["results"])  # no result lost
    jobs = items(cluster, "mpijobs", namespace)
    assert len(jobs) == 4
    assert standin.not_made_and_run_once(namespace, jobs) == []
    # The outage was met by at least one running trainer (a refused or retried status write).
    runs = [r for j in jobs for r in standin.runs_of(j["metadata"]["name"])]
    met = sum(("patch failed" in r.stderr) or ("retrying" in r.stderr) for r in runs)
    retried = sum(r.stderr.count("scalelab_trainer: retrying") for r in runs)
    print(f"{component}: {met} of 4 trainers met the outage, {retried} retried writes")
    assert met >= 1


def test_deleting_the_experiment_garbage_collects_its_trials_and_mpijobs(
    cluster: ControlPlane, operator: Operator, standin: StandIn, namespace: str
) -> None:
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=_experiment(
            "gone",
            sweep={"batchSizes": [64, 32], "gpus": [1]},
            # Suspended MPIJobs (as under Kueue): the stand-in leaves them, nothing runs.
            execution={"maxConcurrentTrials": 2, "maxGPUs": 4, "queueName": "gpu-queue"},
        ),
    )  # fmt: skip
    wait_for(lambda: len(items(cluster, "mpijobs", namespace)) == 2, 60, "both MPIJobs")
    trial = get(cluster, "scaletrial", "gone-b64-g1", namespace)
    owner = trial["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("ScaleExperiment", "gone", True)
    job = get(cluster, "mpijob", "gone-b64-g1", namespace)
    assert job["metadata"]["ownerReferences"][0]["uid"] == trial["metadata"]["uid"]
    assert job["spec"]["runPolicy"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    # No image in the spec: the API server stores none, and the pods get the operator's own.
    stored = get(cluster, "scaleexperiment", "gone", namespace)["spec"]["resources"]
    assert stored.get("image") is None
    assert trial["spec"]["resources"].get("image") is None
    for role in ("Launcher", "Worker"):
        pod = job["spec"]["mpiReplicaSpecs"][role]["template"]["spec"]
        assert pod["containers"][0]["image"] == Config().trainer_image

    cluster.kubectl("delete", "scaleexperiment", "gone", "-n", namespace, "--wait=true")
    wait_for(
        lambda: (
            not items(cluster, "scaletrials", namespace)
            and not items(cluster, "mpijobs", namespace)
        ),
        60,
        "the garbage collector to remove trials and MPIJobs",
    )
    # Its series go, but for the namespace's device-seconds counter, which outlives it.
    kept = "scalelab_operator_device_seconds_"  # _total and _created

    def gone() -> bool:
        lines = [x for x in operator.metrics().splitlines() if f'namespace="{namespace}"' in x]
        return bool(lines) and all(x.startswith(kept) for x in lines)

    wait_for(gone, 10, "the deleted experiment's series to go, its device-seconds kept")


def _samples(text: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """Samples of one metric whose labels include `labels`."""
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    ]


def _writes(operator: Operator) -> Counter[tuple[str, str]]:
    """The operator's API writes so far, by (verb, resource)."""
    return Counter(
        {
            (labels["verb"], labels["resource"]): int(value)
            for labels, value in _samples(operator.metrics(), "scalelab_operator_api_writes_total")
        }
    )


def test_operator_metrics_show_trials_gpus_and_finished_results(
    cluster: ControlPlane, operator: Operator, standin: StandIn, namespace: str
) -> None:
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=_experiment("metered", sweep={"batchSizes": [64], "gpus": [1, 2]}),
    )  # fmt: skip
    assert _wait_finished(cluster, "metered", namespace) == "Succeeded", operator.log_tail()
    ours = {"namespace": namespace, "experiment": "metered"}
    text = wait_for(
        lambda: (
            (m := operator.metrics())
            and _samples(m, "scalelab_operator_trials", phase="Succeeded", **ours)
            == [({**ours, "phase": "Succeeded"}, 2.0)]
            and m
        ),
        10,
        "the final snapshot in /metrics",
    )
    assert _samples(text, "scalelab_operator_gpus", state="running", **ours)[0][1] == 0.0
    assert _samples(text, "scalelab_operator_gpus", state="requested", **ours)[0][1] == 0.0
    for gpus in ("1", "2"):
        row = {**ours, "batch_size": "64", "gpus": gpus, "repeat": "0"}
        [(_, throughput)] = _samples(text, "scalelab_trial_result_samples_per_second", **row)
        assert throughput > 0
        assert _samples(text, "scalelab_trial_result_final_loss", **row)
    [(_, efficiency)] = _samples(
        text, "scalelab_trial_result_scaling_efficiency_ratio", gpus="2", **ours
    )
    assert efficiency > 0
    assert "scalelab_operator_reconcile_errors_total" in text


def test_admission_holds_max_gpus_and_follows_a_raised_max_concurrent_trials(
    cluster: ControlPlane, operator: Operator, standin: StandIn, namespace: str
) -> None:
    # Suspended MPIJobs (Kueue) never finish here, so admission is all that moves.
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=_experiment(
            "budget",
            sweep={"batchSizes": [32, 64], "gpus": [1, 2]},
            resources={"gpusPerProcess": 1, "cpu": "1", "memory": "1Gi"},
            execution={"maxConcurrentTrials": 1, "maxGPUs": 3, "queueName": "gpus"},
        ),
    )  # fmt: skip

    def jobs() -> list[str]:
        return sorted(j["metadata"]["name"] for j in items(cluster, "mpijobs", namespace))

    wait_for(lambda: jobs() == ["budget-b32-g1"], 120, "one MPIJob under maxConcurrentTrials=1")
    cluster.kubectl(
        "patch", "sx", "budget", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"execution": {"maxConcurrentTrials": 4}}}),
    )  # fmt: skip
    # Plan order b32g1 (1 GPU), b32g2 (2 more: 3 of 3), b64g1 and b64g2 would exceed maxGPUs=3.
    wait_for(lambda: jobs() == ["budget-b32-g1", "budget-b32-g2"], 120, "admission up to maxGPUs")
    ours = {"namespace": namespace, "experiment": "budget"}
    # Both MPIJobs wait suspended for a queue that never admits them (Kueue's "suspended"); the
    # second one's Suspended condition may reach the operator a pass after its creation.
    expected = {"requested": 3.0, "running": 0.0, "suspended": 3.0, "queued": 3.0}

    def gauges() -> dict[str, float]:
        found = _samples(operator.metrics(), "scalelab_operator_gpus", **ours)
        return {labels["state"]: value for labels, value in found}

    wait_for(lambda: gauges() == expected, 30, f"GPU gauges {expected}")
    status = get(cluster, "scaleexperiment", "budget", namespace)["status"]
    assert status["trials"]["pending"] == 4
    assert status["observedGeneration"] == 2


def test_a_hung_trial_is_flagged_stalled_then_failed_at_its_deadline(
    cluster: ControlPlane, operator: Operator, standin: StandIn, namespace: str
) -> None:
    standin.hang.add("hung-b64-g1")
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=_experiment(
            "hung",
            execution={"maxConcurrentTrials": 1, "maxGPUs": 1, "activeDeadlineSeconds": 35},
        ),
    )  # fmt: skip
    ours = {"namespace": namespace, "experiment": "hung"}
    wait_for(
        lambda: (
            _samples(operator.metrics(), "scalelab_operator_stalled_trials", **ours)
            == [(ours, 1.0)]
        ),
        45,
        "the stalled-trials gauge",
    )
    conditions = get(cluster, "scaleexperiment", "hung", namespace)["status"]["conditions"]
    stalled = next(c for c in conditions if c["type"] == "TrialsStalled")
    assert "hung-b64-g1" in stalled["message"]
    assert _wait_finished(cluster, "hung", namespace, timeout=90) == "Failed"
    trial = get(cluster, "scaletrial", "hung-b64-g1", namespace)["status"]
    assert trial["phase"] == "Failed"
    assert trial["reason"].startswith("DeadlineExceeded")
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=TrialStalled", "-o", "name"
    ).stdout
    assert events.strip()


def test_an_adaptive_experiment_runs_its_pilot_alone_then_skips_what_b_simple_rules_out(
    cluster: ControlPlane, operator: Operator, standin: StandIn, namespace: str
) -> None:
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=_experiment(
            "adapt",
            workload={"model": "linear", "dataset": "regression", "datasetSize": 2048},
            sweep={"strategy": "adaptive", "batchSizes": [1, 2, 64, 256, 1024], "gpus": [1]},
            training={"learningRate": 0.004, "referenceBatchSize": 8, "lrScaling": "linear",
                      "warmupEpochs": 1, "maxEpochs": 100, "targetLoss": 1.1, "shuffle": True,
                      "convergence": {"relativeTolerance": 0}},
        ),
    )  # fmt: skip
    wait_for(lambda: items(cluster, "mpijobs", namespace), 60, "the pilot's MPIJob")
    assert [j["metadata"]["name"] for j in items(cluster, "mpijobs", namespace)] == ["adapt-b64-g1"]
    waiting = get(cluster, "scaletrial", "adapt-b256-g1", namespace)["status"]
    assert waiting["phase"] == "Pending"
    assert _wait_finished(cluster, "adapt", namespace) == "Succeeded", operator.log_tail()
    status = get(cluster, "scaleexperiment", "adapt", namespace)["status"]
    # B_simple at the target is in the thousands here: batches 1 and 2 are far below it.
    for name in ("adapt-b1-g1", "adapt-b2-g1"):
        trial = get(cluster, "scaletrial", name, namespace)["status"]
        assert trial["phase"] == "Skipped"
        assert trial["reason"].startswith("adaptive: batch ")
        assert not standin.runs_of(name)
    rows = {r["trial"]: r for r in status["results"]}
    assert rows["adapt-b1-g1"]["pruned"] is True
    placed = next(c for c in status["conditions"] if c["type"] == "AdaptivePlan")
    assert (placed["status"], placed["reason"]) == ("True", "Placed")
    assert placed["message"].startswith("pilot adapt-b64-g1: B_simple ")
    assert status["criticalBatch"]["predicted"] > 64
    assert status["criticalBatch"]["summary"]
    assert status["recommendation"]["batchSize"] in {64, 256, 1024}


def test_a_report_of_a_running_experiment_renders_what_finished_and_names_what_runs(
    cluster: ControlPlane, operator: Operator, standin: StandIn, namespace: str, tmp_path: Path
) -> None:
    standin.hang.add("partial-b32-g1")
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=_experiment(
            "partial",
            sweep={"batchSizes": [64, 32], "gpus": [1]},
            # Long enough that the hung trial still runs when the other one ends on a loaded host.
            execution={"maxConcurrentTrials": 2, "maxGPUs": 4, "activeDeadlineSeconds": 300},
        ),
    )  # fmt: skip

    def phases() -> dict[str, str]:
        return {
            t["metadata"]["name"]: (t.get("status") or {}).get("phase", "")
            for t in items(cluster, "scaletrials", namespace)
        }

    wait_for(
        lambda: phases() == {"partial-b64-g1": "Succeeded", "partial-b32-g1": "Running"},
        240,
        "one trial finished and one running",
    )
    out = tmp_path / "partial"
    report = cluster_report(cluster, "partial", namespace, out)
    assert report.returncode == 0, report.stderr
    assert "1 of 2 trial(s) finished" in report.stdout
    assert "still running: partial-b32-g1" in report.stdout
    results = json.loads((out / "results.json").read_text())
    trials = {t["name"]: t for t in results["trials"]}
    done, running = trials["partial-b64-g1"], trials["partial-b32-g1"]
    assert (done["phase"], done["epochs"], len(done["curves"]["epochLoss"])) == ("Succeeded", 5, 5)
    assert (running["phase"], running["curves"]) == ("Running", {})
    assert "still running" in results["warnings"][0]
    assert len((out / "results.csv").read_text().splitlines()) == 3
    page = (out / "report.html").read_text()
    assert "1 succeeded" in page
    assert "1 running" in page
    assert 'id="lab-gd-loss-vs-epoch"' in page

    # The stored results belong to their trial: the garbage collector takes them with it.
    selector = "app.kubernetes.io/component=trial-results"
    stored = items(cluster, "configmaps", namespace, "-l", selector)
    assert [m["metadata"]["ownerReferences"][0]["name"] for m in stored] == ["partial-b64-g1"]
    assert stored[0]["metadata"]["labels"]["scalelab.dev/experiment"] == "partial"
    cluster.kubectl("delete", "scaleexperiment", "partial", "-n", namespace, "--wait=true")
    wait_for(
        lambda: not items(cluster, "configmaps", namespace, "-l", selector),
        60,
        "the garbage collector to remove the stored results with their trial",
    )


def test_an_unpullable_trainer_image_is_named_on_the_trial_and_experiment_until_it_pulls(
    cluster: ControlPlane, operator: Operator, standin: StandIn, namespace: str
) -> None:
    """The kubelet cannot pull the trainer image (its Warning Events on worker 0, the MPIJob
    stays Created): the experiment's PrerequisitesMet condition, an Event on the experiment and
    one on the trial, the trial's reason and the metric name the image; nothing more is
    launched. Once the image pulls, the trial runs, the condition goes and the rest follow."""
    image = "registry.invalid/team/trainer:missing"
    for trial in ("pull-b64-g1", "pull-b32-g1"):
        standin.unpullable[trial] = image
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=_experiment(
            "pull",
            sweep={"batchSizes": [64, 32], "gpus": [1]},
            resources={"gpusPerProcess": 0, "cpu": "1", "memory": "1Gi", "image": image},
            execution={"maxConcurrentTrials": 1, "maxGPUs": 1, "backoffLimit": 0},
        ),
    )  # fmt: skip

    def condition() -> dict[str, Any] | None:
        return experiment_condition(cluster, "pull", namespace, "PrerequisitesMet")

    t0 = time.monotonic()
    met = wait_for(condition, 90, "PrerequisitesMet=False naming the image")
    print(f"unpullable image named {time.monotonic() - t0:.1f} s after kubectl apply")
    assert (met["status"], met["reason"]) == ("False", "TrainerImageUnpullable")
    assert f'cannot pull image "{image}"' in met["message"]
    [job] = items(cluster, "mpijobs", namespace)  # the others wait: they would fail alike
    stuck = job["metadata"]["name"]
    trial = wait_for(
        lambda: (
            image in (s := get(cluster, "st", stuck, namespace)["status"]).get("reason", "") and s
        ),
        30,
        "the trial's reason",
    )
    assert trial["phase"] == "Pending"
    assert [c["type"] for c in trial["conditions"]] == ["PrerequisitesMet"]
    events = items(cluster, "events", namespace, "--field-selector=type=Warning")
    about = {
        (e["involvedObject"]["kind"], e["involvedObject"]["name"], e["reason"]) for e in events
    }
    assert ("ScaleExperiment", "pull", "TrainerImageUnpullable") in about
    assert ("ScaleTrial", stuck, "PrerequisitesMissing") in about
    ours = {"namespace": namespace, "experiment": "pull", "prerequisite": "trainer-image"}
    assert _samples(operator.metrics(), "scalelab_operator_missing_prerequisite", **ours) == [
        (ours, 1.0)
    ]
    assert len(items(cluster, "mpijobs", namespace)) == 1

    standin.unpullable.clear()  # the image is pushed: the kubelet's next try pulls it
    assert _wait_finished(cluster, "pull", namespace) == "Succeeded", operator.log_tail()
    status = get(cluster, "scaleexperiment", "pull", namespace)["status"]
    assert status["trials"]["succeeded"] == 2
    assert "PrerequisitesMet" not in {c["type"] for c in status["conditions"]}
    assert _samples(operator.metrics(), "scalelab_operator_missing_prerequisite", **ours) == [
        (ours, 0.0)
    ]


def test_a_sweep_bigger_than_the_status_budget_keeps_the_top_rows_and_lists_every_trial(
    cluster: ControlPlane, operator: Operator, standin: StandIn, namespace: str, tmp_path: Path
) -> None:
    """30 trials, each finished at once with a made-up result (InstantStandIn: the trainer is
    not what this is about): the status keeps the top 20 rows, best first, within its byte
    budget and counts the other 10; `kubectl get scaletrials -l` shows all 30 with their
    results, `scalelab report --experiment` writes all 30; the operator created each trial and
    MPIJob once and wrote statuses only with news."""
    standin.ignore.add(namespace)
    instant = InstantStandIn(cluster.kubeconfig, namespace)
    before = _writes(operator)
    try:
        cluster.kubectl(
            "apply", "-n", namespace, "-f", "-",
            input=_experiment(
                "big",
                sweep={"batchSizes": [64, 32, 16, 8, 4], "gpus": [1, 2], "repeats": 3},
                execution={"maxConcurrentTrials": 30, "maxGPUs": 64, "backoffLimit": 0},
            ),
        )  # fmt: skip
        assert _wait_finished(cluster, "big", namespace) == "Succeeded", operator.log_tail()
    finally:
        instant.stop.set()
    writes = _writes(operator) - before
    status = get(cluster, "scaleexperiment", "big", namespace)["status"]
    assert status["trials"]["succeeded"] == 30
    assert len(status["results"]) == STATUS_ROWS
    assert status["omittedResults"] == 30 - STATUS_ROWS
    assert status["results"][0]["trial"] == status["recommendation"]["trial"]
    assert len(json.dumps(status, separators=(",", ":"))) <= STATUS_BYTES
    # A create call per trial and per MPIJob, and a few more when a pass interrupted by load
    # repeats its creates (a 409 from an object an earlier pass made counts as a call; the
    # objects are still one each, counted below); a trial's status written once per phase it
    # was seen to take (Running, if a pass saw it before it finished, then Succeeded); the
    # experiment's status only when a pass saw news, and a pass batches what changed since the
    # last (how many passes see news is timing: 3 on a quiet machine, more under load).
    assert 30 <= writes["create", "scaletrials"] <= 2 * 30, writes
    assert 30 <= writes["create", "mpijobs"] <= 2 * 30, writes
    assert 30 <= writes["patch", "scaletrials/status"] <= 2 * 30, writes
    assert 1 <= writes["patch", "scaleexperiments/status"] <= 30, writes
    # The results archive's ConfigMap is written in the pass that finishes the experiment,
    # which may come before this read of the metrics or after it; then each trial and MPIJob
    # is labelled once, out of the operator's watches.
    assert not writes.keys() - {
        ("create", "scaletrials"), ("create", "mpijobs"), ("patch", "scaletrials/status"),
        ("patch", "scaleexperiments/status"), ("create", "serviceaccounts"),
        ("create", "rolebindings"), ("create", "configmaps"), ("patch", "scaletrials"),
        ("patch", "mpijobs"),
    }, writes  # fmt: skip
    assert writes.get(("create", "configmaps"), 0) <= 2, writes
    assert writes.get(("patch", "scaletrials"), 0) <= 30, writes
    assert writes.get(("patch", "mpijobs"), 0) <= 30, writes
    assert len(items(cluster, "mpijobs", namespace)) == 30

    selector = "scalelab.dev/experiment=big"
    table = cluster.kubectl(
        "get", "scaletrials", "-n", namespace, "-l", selector, "-o", "wide"
    ).stdout.splitlines()
    assert table[0].split()[:11] == [
        "NAME", "PHASE", "BATCH", "GPUS", "EPOCH", "LOSS", "FINAL-LOSS", "SAMPLES/S", "SECONDS",
        "REPEAT", "TO-TARGET-S",
    ]  # fmt: skip
    # Cells by the header's offsets: a column without a value (EPOCH here) prints nothing.
    starts = [table[0].index(f" {h} ") + 1 for h in ("PHASE", "FINAL-LOSS", "SECONDS", "REPEAT")]
    shown = {
        line.split()[0]: [line[a:b].strip() for a, b in pairwise(starts)] for line in table[1:]
    }
    assert len(shown) == 30
    for name, (phase, final_loss, seconds) in shown.items():
        result = InstantStandIn.result(name)
        assert phase.split()[0] == "Succeeded"
        assert float(final_loss.split()[0]) == pytest.approx(result["finalLoss"])
        assert float(seconds) == pytest.approx(result["seconds"])

    out = tmp_path / "big"
    report = cluster_report(cluster, "big", namespace, out)
    assert report.returncode == 0, report.stderr
    assert f"{namespace}/big: 30 of 30 trial(s) finished" in report.stdout
    trials = json.loads((out / "results.json").read_text())["trials"]
    assert {t["name"]: t["finalLoss"] for t in trials} == {
        name: InstantStandIn.result(name)["finalLoss"] for name in shown
    }
    assert len((out / "results.csv").read_text().splitlines()) == 31
