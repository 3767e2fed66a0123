"""Queue wait per trial: when each trial's MPIJob was created, admitted (by Kueue, or started by
the MPI operator without it), running and finished, read from the objects the operator already
watches, written with the trial's phase changes (never a write of their own), and carried into
its results row as queueSeconds."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from scalelab.api import ScaleTrialStatus, TrialPhase
from scalelab.kube.decide import decide
from scalelab.kube.mpijob import LABEL_EXPERIMENT, LABEL_TRIAL
from scalelab.kube.observed import (
    JobPhase,
    JobState,
    TrialState,
    job_entry,
    parse,
    trial_entry,
    with_queue,
    workload_entry,
)
from scalelab.kube.phases import run_seconds, trial_times
from scalelab.kube.state import Memory
from scalelab.planner import plan

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
CREATED, ADMITTED, RUNNING = "2027-01-15T07:50:00Z", "2027-01-15T07:55:00Z", "2027-01-15T07:55:30Z"
FINISHED = "2027-01-15T07:59:00Z"
SPEC: dict[str, Any] = {
    "sweep": {"batchSizes": [8], "gpus": [1]},
    "resources": {"gpusPerProcess": 1},
    "execution": {"queueName": "team"},
}


def _body() -> dict[str, Any]:
    return {
        "apiVersion": "scalelab.dev/v1alpha1",
        "kind": "ScaleExperiment",
        "metadata": {"name": "exp", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": SPEC,
        "status": {},
    }


def _cond(kind: str, status: str, reason: str, when: str) -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "lastTransitionTime": when}


def _mpijob(*conditions: dict[str, str], start: str | None = None) -> dict[str, Any]:
    labels = {LABEL_EXPERIMENT: "exp", LABEL_TRIAL: "exp-b8-g1"}
    status: dict[str, Any] = {"conditions": list(conditions)}
    if start is not None:
        status["startTime"] = start
    meta = {"name": "exp-b8-g1", "namespace": "ns", "labels": labels}
    return {"metadata": {**meta, "creationTimestamp": CREATED}, "status": status}


def _workload(*conditions: dict[str, str]) -> dict[str, Any]:
    owner = {"apiVersion": "kubeflow.org/v2beta1", "kind": "MPIJob", "name": "exp-b8-g1"}
    return {
        "metadata": {"namespace": "ns", "ownerReferences": [owner]},
        "status": {"conditions": list(conditions)},
    }


def test_the_mpijob_entry_keeps_its_creation_start_and_running_times_and_kueue_its_admission() -> (
    None
):
    running = _cond("Running", "True", "MPIJobRunning", RUNNING)
    [job] = job_entry(_mpijob(running, start="2027-01-15T07:55:01Z")).values()
    assert (job.created, job.admitted, job.running) == (CREATED, "2027-01-15T07:55:01Z", RUNNING)
    # Kueue's own admission time replaces the MPI operator's start, which follows it.
    [(_, queue)] = workload_entry(
        _workload(_cond("Admitted", "True", "Admitted", ADMITTED))
    ).items()
    [admitted] = with_queue([job], [queue])
    assert (admitted.created, admitted.admitted, admitted.running) == (CREATED, ADMITTED, RUNNING)
    # Ended: the MPI operator turns Running False but keeps its reason and time.
    done = _cond("Running", "False", "MPIJobRunning", RUNNING)
    succeeded = _cond("Succeeded", "True", "MPIJobSucceeded", FINISHED)
    [ended] = job_entry(_mpijob(done, succeeded, start=ADMITTED)).values()
    assert (ended.phase, ended.running) == (JobPhase.SUCCEEDED, RUNNING)
    # Suspended by Kueue (preempted): not admitted now, not running; the old start is stale.
    suspended = _cond("Suspended", "True", "MPIJobSuspended", FINISHED)
    stopped = _cond("Running", "False", "MPIJobSuspended", FINISHED)
    [held] = job_entry(_mpijob(suspended, stopped, start=ADMITTED)).values()
    assert (held.phase, held.created, held.admitted, held.running) == (
        JobPhase.SUSPENDED, CREATED, None, None,
    )  # fmt: skip
    evicted = workload_entry(_workload(_cond("Admitted", "False", "Evicted", FINISHED)))
    assert with_queue([held], evicted.values())[0].admitted is None


def test_the_trial_entry_keeps_the_queue_wait_its_status_shows() -> None:
    body = {
        "metadata": {"name": "exp-b8-g1", "uid": "t", "labels": {LABEL_EXPERIMENT: "exp"}},
        "status": {"phase": "Running", "queueSeconds": 300.0, "times": {"created": CREATED}},
    }
    [trial] = trial_entry(body).values()
    assert trial.queue_seconds == 300.0
    assert not hasattr(trial, "times")  # the index keeps the number its row needs, no more


def test_the_running_write_carries_the_times_and_the_wait_for_quota() -> None:
    body = _body()
    trials = [TrialState(t.name, "uid", TrialPhase.PENDING) for t in plan(parse(body))]
    job = JobState("exp-b8-g1", JobPhase.RUNNING, created=CREATED, admitted=ADMITTED,
                   running=RUNNING)  # fmt: skip
    d = decide(parse(body), body, trials, [job], Memory(), now=NOW)
    patch = d.actions.trial_status["exp-b8-g1"]
    assert patch["phase"] == "Running"
    assert patch["times"] == {"created": CREATED, "admitted": ADMITTED, "running": RUNNING}
    assert patch["queueSeconds"] == 300.0
    ScaleTrialStatus.model_validate(patch)  # what the CRD's schema takes


def test_times_never_cost_a_write_of_their_own() -> None:
    body = _body()
    job = JobState("exp-b8-g1", JobPhase.RUNNING, created=CREATED, admitted=ADMITTED,
                   running=RUNNING)  # fmt: skip
    shown = [TrialState(t.name, "uid", TrialPhase.RUNNING) for t in plan(parse(body))]
    assert decide(parse(body), body, shown, [job], Memory(), now=NOW).actions.trial_status == {}
    # Created, its pods not started yet: Pending and quiet, so its creation time waits too.
    waiting = JobState("exp-b8-g1", JobPhase.CREATED, created=CREATED, admitted=CREATED)
    pending = [TrialState(t.name, "uid", TrialPhase.PENDING) for t in plan(parse(body))]
    d = decide(parse(body), body, pending, [waiting], Memory(), now=NOW)
    assert d.actions.trial_status == {}


def test_the_finish_write_carries_the_end_and_a_finished_row_its_queue_wait() -> None:
    body = _body()
    result = {"phase": "Succeeded", "reason": "converged", "seconds": 3.0}
    trials = [TrialState(t.name, "uid", TrialPhase.RUNNING, result=result)
              for t in plan(parse(body))]  # fmt: skip
    job = JobState("exp-b8-g1", JobPhase.SUCCEEDED, completion_time=FINISHED, created=CREATED,
                   admitted=ADMITTED, running=RUNNING)  # fmt: skip
    memory = Memory()
    d = decide(parse(body), body, trials, [job], memory, now=NOW)
    patch = d.actions.trial_status["exp-b8-g1"]
    assert (patch["phase"], patch["times"]["finished"]) == ("Succeeded", FINISHED)
    assert [r.queue_seconds for r in d.rows] == [300.0]
    assert d.status["results"][0]["queueSeconds"] == 300.0
    # Its MPIJob gone (its status shows the wait): the row stays as it was, no status rewrite.
    shown = [TrialState(t.name, "uid", TrialPhase.SUCCEEDED, "converged", result=result,
                        queue_seconds=300.0) for t in plan(parse(body))]  # fmt: skip
    body["status"] = d.status
    again = decide(parse(body), body, shown, [], memory, now=NOW + 10)
    assert again.rows == d.rows
    assert again.actions.experiment_status is None


def test_a_trial_without_its_mpijobs_times_keeps_what_was_written_and_dates_its_end() -> None:
    trial = TrialState("t", "uid", TrialPhase.RUNNING, updated_at=FINISHED, training_seconds=60.0)
    # Its MPIJob gone: no time to send, the merge patch keeps the ones written; the end is now.
    assert trial_times(None, trial, TrialPhase.PRUNED, "2027-01-15T08:00:00Z") == {
        "times": {"finished": "2027-01-15T08:00:00Z"}
    }
    # An MPIJob that ran and ended between two looks of the MPI operator has no Running time:
    # the trainer's first step stands in (its last report less its training time).
    quick = JobState("t", JobPhase.SUCCEEDED, completion_time=FINISHED, created=CREATED,
                     admitted=CREATED)  # fmt: skip
    assert trial_times(quick, trial, TrialPhase.SUCCEEDED, "x") == {
        "times": {"created": CREATED, "admitted": CREATED, "running": "2027-01-15T07:58:00Z",
                  "finished": FINISHED},
        "queueSeconds": 0.0,
    }  # fmt: skip
    # Preempted and waiting again: no admission, no run, no queue wait to send.
    held = JobState("t", JobPhase.SUSPENDED, created=CREATED)
    assert trial_times(held, None, TrialPhase.PENDING, "x") == {"times": {"created": CREATED}}
    # The two clocks (API server, Kueue) may disagree by a second: a wait is never negative.
    early = JobState("t", JobPhase.RUNNING, created=ADMITTED, admitted=CREATED)
    assert trial_times(early, None, TrialPhase.RUNNING, "x")["queueSeconds"] == 0.0


# Device-seconds: every run's devices × pod run time, written with the transitions that end a run.
EVICTED = "2027-01-15T07:57:30Z"  # 120 s after RUNNING
TWO_GPUS: dict[str, Any] = {**SPEC, "sweep": {"batchSizes": [8], "gpus": [2]}}


def _two_gpus() -> dict[str, Any]:
    return {**_body(), "spec": TWO_GPUS}


def test_a_preempted_run_adds_its_gpu_time_to_the_trial_and_the_experiment() -> None:
    body = _two_gpus()
    [name] = [t.name for t in plan(parse(body))]
    running = [TrialState(name, "uid", TrialPhase.RUNNING, ran_at=RUNNING, device_seconds=50.0)]
    held = JobState(name, JobPhase.SUSPENDED, reason="KueuePreempted", message="for team-b",
                    created=CREATED, stopped=EVICTED)  # fmt: skip
    memory = Memory()
    d = decide(parse(body), body, running, [held], memory, now=NOW)
    patch = d.actions.trial_status[name]
    assert patch["reason"].startswith("preempted by Kueue")
    assert patch["deviceSeconds"] == 50.0 + 2 * 120.0  # 2 GPUs from Running to the eviction
    assert d.actions.spent == {name: 240.0}  # the operator's counter adds this run once
    assert d.status["deviceSeconds"] == 290.0
    assert d.status["gpuSeconds"] == 0  # the measurement's cost: no trial finished
    ScaleTrialStatus.model_validate(patch)
    # The index still shows Running: the reason's rewrite counts no run again.
    again = replace(held, message="for team-c")
    d2 = decide(parse(body), body, running, [again], memory, now=NOW + 5)
    assert "deviceSeconds" not in d2.actions.trial_status.get(name, {})
    assert d2.actions.spent == {}
    assert d2.status["deviceSeconds"] == 290.0  # as written, while the index lags
    # Shown Pending and preempted: a new message is no new run either.
    waiting = [replace(running[0], phase=TrialPhase.PENDING, reason=patch["reason"],
                       device_seconds=290.0)]  # fmt: skip
    d3 = decide(parse(body), body, waiting, [again], Memory(), now=NOW + 10)
    assert d3.actions.spent == {}
    assert d3.status["deviceSeconds"] == 290.0


def test_the_final_run_adds_its_gpu_time_and_the_row_carries_every_runs_cost() -> None:
    body = _two_gpus()
    [name] = [t.name for t in plan(parse(body))]
    result = {"phase": "Succeeded", "reason": "converged", "seconds": 60.0}
    shown = [TrialState(name, "uid", TrialPhase.RUNNING, result=result, ran_at=RUNNING,
                        device_seconds=240.0)]  # fmt: skip
    job = JobState(name, JobPhase.SUCCEEDED, completion_time=FINISHED, created=CREATED,
                   admitted=ADMITTED, running=RUNNING)  # fmt: skip
    d = decide(parse(body), body, shown, [job], Memory(), now=NOW)
    assert d.actions.trial_status[name]["deviceSeconds"] == 240.0 + 2 * 210.0
    assert [r.device_seconds for r in d.rows] == [660.0]
    assert d.status["results"][0]["deviceSeconds"] == 660.0
    assert (d.status["gpuSeconds"], d.status["deviceSeconds"]) == (120.0, 660.0)


def test_a_failed_run_counts_and_a_run_the_operator_never_saw_start_is_not_guessed() -> None:
    running = TrialState("t", "uid", TrialPhase.RUNNING, ran_at=RUNNING)
    failed = JobState("t", JobPhase.FAILED, completion_time=FINISHED, running=RUNNING)
    assert run_seconds(failed, running, TrialPhase.RUNNING, (TrialPhase.FAILED, "x"), "") == 210
    # Deactivated by Kueue while it ran: its MPIJob is suspended, Running's time is gone.
    stopped = JobState("t", JobPhase.SUSPENDED, reason="KueueMaxExecTimeExceeded", stopped=EVICTED)
    assert run_seconds(stopped, running, TrialPhase.RUNNING, (TrialPhase.FAILED, "x"), "") == 120
    # Pruned: its MPIJob is deleted now, the run ends with this pass.
    pruned = JobState("t", JobPhase.RUNNING, running=RUNNING)
    now = "2027-01-15T08:00:00Z"
    assert run_seconds(pruned, running, TrialPhase.RUNNING, (TrialPhase.PRUNED, "x"), now) == 270
    # Preempted after an earlier eviction that was counted: shown Pending, no start to trust.
    pending = replace(running, phase=TrialPhase.PENDING)
    evicted = (TrialPhase.PENDING, "preempted by Kueue, reruns from the start: x")
    assert run_seconds(stopped, pending, TrialPhase.PENDING, evicted, now) is None
    # Running, written Pending meanwhile (the index lags): not counted twice.
    assert run_seconds(stopped, running, TrialPhase.PENDING, evicted, now) is None
    # No run ends: Running, waiting for quota, Skipped.
    for phase, reason in ((TrialPhase.RUNNING, ""), (TrialPhase.PENDING, "waiting for Kueue"),
                          (TrialPhase.SKIPPED, "Kueue can never admit it")):  # fmt: skip
        assert run_seconds(pruned, running, TrialPhase.RUNNING, (phase, reason), now) is None


def test_the_entries_keep_the_run_start_its_end_and_the_trials_sum() -> None:
    body = {
        "metadata": {"name": "exp-b8-g1", "uid": "t", "labels": {LABEL_EXPERIMENT: "exp"}},
        "status": {"phase": "Running", "deviceSeconds": 90.0, "times": {"running": RUNNING}},
    }
    [trial] = trial_entry(body).values()
    assert (trial.ran_at, trial.device_seconds) == (RUNNING, 90.0)
    suspended = _cond("Suspended", "True", "MPIJobSuspended", EVICTED)
    stopped = _cond("Running", "False", "MPIJobSuspended", EVICTED)
    [held] = job_entry(_mpijob(suspended, stopped)).values()
    assert held.stopped == EVICTED
    [running] = job_entry(_mpijob(_cond("Running", "True", "MPIJobRunning", RUNNING))).values()
    assert running.stopped is None
