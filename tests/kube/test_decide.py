"""The operator's decisions without a cluster: MPIJob conditions → trial phase, admission under
maxConcurrentTrials and maxGPUs, idempotence with lagging indexes, aggregation, InvalidSpec."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from scalelab.api import ConditionType, ResultRow, TrialPhase
from scalelab.kube import compact
from scalelab.kube.compact import STATUS_BYTES, STATUS_ROWS
from scalelab.kube.decide import decide
from scalelab.kube.observed import (
    InvalidSpecError,
    JobPhase,
    JobState,
    Missing,
    TrialState,
    job_state,
    parse,
    with_queue,
    workload_entry,
)
from scalelab.kube.phases import BLOCKED, LAUNCHED, trial_phase
from scalelab.kube.state import Memory
from scalelab.kube.status import invalid_status, is_active
from scalelab.planner import plan

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.0


def _body(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "scalelab.dev/v1alpha1",
        "kind": "ScaleExperiment",
        "metadata": {"name": "exp", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": spec,
        "status": status or {},
    }


SPEC_NO_GPU = {"resources": {"gpusPerProcess": 0}}
SPEC = {
    "sweep": {"batchSizes": [8, 16, 32], "gpus": [1, 2]},
    "resources": {"gpusPerProcess": 1},
    "execution": {"maxConcurrentTrials": 3, "maxGPUs": 3},
}


def _trials(body: dict[str, Any], phase: TrialPhase | None = None) -> list[TrialState]:
    return [TrialState(t.name, f"uid-{t.name}", phase) for t in plan(parse(body))]


def _cond(kind: str, reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": kind, "status": "True", "reason": reason, "message": message}


def test_job_conditions_map_to_a_phase_terminal_first() -> None:
    status = {"conditions": [_cond("Created"), _cond("Running"), _cond("Failed", "Evicted")]}
    assert job_state("t", status).phase is JobPhase.FAILED
    assert job_state("t", {"conditions": [_cond("Created")]}).phase is JobPhase.CREATED
    assert job_state("t", None).phase is JobPhase.CREATED
    assert job_state("t", {"conditions": [_cond("Suspended")]}).phase is JobPhase.SUSPENDED


def test_trial_phase_follows_the_job_and_the_reported_result() -> None:
    [p] = plan(parse(_body({"sweep": {"batchSizes": [8]}})))
    trial = TrialState(
        p.name, "u", TrialPhase.RUNNING, result={"phase": "Diverged", "reason": "nan"}
    )
    done = JobState(p.name, JobPhase.SUCCEEDED, completion_time="2027-01-15T08:00:00Z")
    assert trial_phase(p, trial, done, NOW) == (TrialPhase.DIVERGED, "nan")
    running = JobState(p.name, JobPhase.RUNNING)
    assert trial_phase(p, None, running, NOW)[0] is TrialPhase.RUNNING
    assert trial_phase(p, None, None, NOW)[0] is TrialPhase.PENDING
    failed = JobState(p.name, JobPhase.FAILED, "BackoffLimitExceeded/Error", "boom")
    assert trial_phase(p, None, failed, NOW) == (
        TrialPhase.FAILED,
        "BackoffLimitExceeded/Error: boom",
    )


def test_a_succeeded_job_without_a_result_waits_then_fails_with_no_result() -> None:
    [p] = plan(parse(_body({"sweep": {"batchSizes": [8]}})))
    # NOW is 2027-01-15T08:00:00Z.
    late = JobState(p.name, JobPhase.SUCCEEDED, completion_time="2027-01-15T07:59:00Z")
    assert trial_phase(p, None, late, NOW)[0] is TrialPhase.FAILED
    assert "NoResult" in trial_phase(p, None, late, NOW)[1]
    recent = JobState(p.name, JobPhase.SUCCEEDED, completion_time="2027-01-15T07:59:50Z")
    assert trial_phase(p, None, recent, NOW)[0] is TrialPhase.RUNNING


def test_a_finished_trial_never_goes_back() -> None:
    [p] = plan(parse(_body({"sweep": {"batchSizes": [8]}})))
    trial = TrialState(p.name, "u", TrialPhase.FAILED, "deadline")
    assert trial_phase(p, trial, JobState(p.name, JobPhase.RUNNING), NOW) == (
        TrialPhase.FAILED,
        "deadline",
    )


def test_first_pass_creates_every_trial_and_launches_the_first_wave_with_them() -> None:
    body = _body(SPEC)
    memory = Memory()
    d = decide(parse(body), body, [], [], memory, now=NOW)
    assert len(d.actions.create_trials) == 6
    # The uid is not known before apply creates the trial: "" says "the one this pass creates".
    assert [(t.name, uid) for t, uid in d.actions.launch] == [("exp-b8-g1", ""), ("exp-b8-g2", "")]
    assert d.actions.trial_status == {}  # a new trial shows Pending by the API's default
    assert d.status["phase"] == "Running"
    assert d.status["trials"]["total"] == 6
    # apply made the trials; the index does not show them yet: nothing is launched twice.
    memory.created = {p.name: f"uid-{p.name}" for p in plan(parse(body))}
    again = decide(parse(body), body, [], [], memory, now=NOW + 1)
    assert again.actions.create_trials == []
    assert again.actions.launch == []
    assert again.actions.trial_status == {}


def test_a_pending_trial_gets_no_write_until_its_phase_changes() -> None:
    """Waiting for a slot and waiting for its pods are what Pending without a reason means: the
    only trial writes of a run are Running and the end (3 API writes per trial with its create
    and its MPIJob's)."""
    body = _body(SPEC)
    experiment, trials = parse(body), _trials(body, TrialPhase.PENDING)
    d = decide(experiment, body, trials, [], Memory(), now=NOW)
    assert len(d.actions.launch) == 2
    assert d.actions.trial_status == {}
    jobs = [JobState(t.name, JobPhase.RUNNING) for t, _ in d.actions.launch]
    running = decide(experiment, body, trials, jobs, Memory(), now=NOW)
    assert {n: p["phase"] for n, p in running.actions.trial_status.items()} == {
        "exp-b8-g1": "Running", "exp-b8-g2": "Running",
    }  # fmt: skip


def test_admission_respects_max_concurrent_trials_and_max_gpus_with_backfill() -> None:
    body = _body(SPEC)
    d = decide(parse(body), body, _trials(body), [], Memory(), now=NOW)
    launched = [(t.batch_size, t.gpus) for t, _ in d.actions.launch]
    # Plan order b8g1, b8g2 (3 GPUs used), b16g1 would be a 4th GPU: only 2 jobs fit.
    assert launched == [(8, 1), (8, 2)]
    assert d.usage.requested == 3
    assert d.usage.queued == 1 + 2 + 1 + 2


def test_a_second_pass_before_the_index_catches_up_launches_nothing_new() -> None:
    body = _body(SPEC)
    experiment, trials, memory = parse(body), _trials(body), Memory()
    first = decide(experiment, body, trials, [], memory, now=NOW)
    second = decide(experiment, body, trials, [], memory, now=NOW)
    assert len(first.actions.launch) == 2
    assert second.actions.launch == []
    assert second.actions.trial_status == {}  # same phases already written


def test_a_finished_trial_frees_its_slot() -> None:
    body = _body(SPEC)
    experiment = parse(body)
    trials = _trials(body)
    jobs = [JobState("exp-b8-g1", JobPhase.SUCCEEDED), JobState("exp-b8-g2", JobPhase.RUNNING)]
    trials[0] = TrialState("exp-b8-g1", "uid", TrialPhase.SUCCEEDED, result={"phase": "Succeeded"})
    d = decide(experiment, body, trials, jobs, Memory(), now=NOW)
    assert [t.name for t, _ in d.actions.launch] == ["exp-b16-g1"]


def test_all_trials_finished_makes_the_experiment_succeeded_with_a_recommendation() -> None:
    body = _body({"sweep": {"batchSizes": [8, 16]}, "resources": {"gpusPerProcess": 0}})
    experiment = parse(body)
    result = {"phase": "Succeeded", "finalLoss": 1.0, "samplesPerSecond": 100.0, "seconds": 2.0}
    trials = [
        TrialState(p.name, "u", TrialPhase.SUCCEEDED, result=result) for p in plan(experiment)
    ]
    jobs = [JobState(p.name, JobPhase.SUCCEEDED) for p in plan(experiment)]
    d = decide(experiment, body, trials, jobs, Memory(), now=NOW)
    assert d.status["phase"] == "Succeeded"
    assert d.status["recommendation"]["trial"] in {"exp-b8-g1", "exp-b16-g1"}
    assert [r["finalLoss"] for r in d.status["results"]] == [1.0, 1.0]
    assert ("Normal", "ExperimentSucceeded") in [e[:2] for e in d.actions.events]
    assert not is_active(d.status)


def test_a_rows_input_fields_come_from_the_trials_result_and_are_null_for_data_in_memory() -> None:
    """A streamed trial's result says how much of its step loop waited for input; its row in the
    experiment's status says so too, so a sweep shows which configurations are input-bound."""
    body = _body({"sweep": {"batchSizes": [8, 16]}, "resources": {"gpusPerProcess": 0}})
    experiment = parse(body)
    streamed = {"phase": "Succeeded", "finalLoss": 1.0, "samplesPerSecond": 100.0,
                "inputWaitSeconds": 3.0, "stepCallSeconds": 1.0, "inputWaitFraction": 0.75,
                "inputBound": True, "datasetSize": 3000}  # fmt: skip
    in_memory = {"phase": "Succeeded", "finalLoss": 1.0, "samplesPerSecond": 100.0,
                 "inputWaitFraction": None, "inputBound": None}  # fmt: skip
    first, second = plan(experiment)
    trials = [
        TrialState(first.name, "u", TrialPhase.SUCCEEDED, result=streamed),
        TrialState(second.name, "u", TrialPhase.SUCCEEDED, result=in_memory),
    ]
    d = decide(experiment, body, trials, [], Memory(), now=NOW)
    rows = {r["trial"]: r for r in d.status["results"]}
    assert (rows[first.name]["inputWaitFraction"], rows[first.name]["inputBound"]) == (0.75, True)
    assert rows[second.name].get("inputWaitFraction") is None
    assert rows[second.name].get("inputBound") is None


def test_a_rows_step_time_is_the_trainers_median_step_time_as_in_a_local_run() -> None:
    """The modelled time-to-target multiplies steps by the median step time; the operator's row
    must carry the same median the local executor reads from the result event."""
    body = _body({"sweep": {"batchSizes": [8, 16]}, "resources": {"gpusPerProcess": 0}})
    experiment = parse(body)
    timed = {"phase": "Succeeded", "finalLoss": 1.0, "samplesPerSecond": 100.0,
             "stepTimeSeconds": {"mean": 0.03, "p50": 0.025, "p90": 0.05, "max": 0.2,
                                 "count": 400}}  # fmt: skip
    untimed = {"phase": "Succeeded", "finalLoss": 1.0, "samplesPerSecond": 100.0}
    first, second = plan(experiment)
    trials = [
        TrialState(first.name, "u", TrialPhase.SUCCEEDED, result=timed),
        TrialState(second.name, "u", TrialPhase.SUCCEEDED, result=untimed),
    ]
    d = decide(experiment, body, trials, [], Memory(), now=NOW)
    rows = {r["trial"]: r for r in d.status["results"]}
    assert rows[first.name]["stepSeconds"] == 0.025
    assert rows[second.name].get("stepSeconds") is None


def test_unchanged_status_is_not_written_again() -> None:
    body = _body(SPEC)
    experiment, trials = parse(body), _trials(body)
    first = decide(experiment, body, trials, [], Memory(), now=NOW)
    assert first.actions.experiment_status is not None
    body["status"] = first.status
    again = decide(experiment, body, trials, [], Memory(), now=NOW + 5)
    launched = [JobState(t.name, JobPhase.CREATED) for t, _ in first.actions.launch]
    again = decide(experiment, body, trials, launched, Memory(), now=NOW + 5)
    assert again.actions.experiment_status is None


def test_skipped_points_are_trials_with_the_planners_reason() -> None:
    body = _body({"sweep": {"batchSizes": [3, 4], "gpus": [2]}, "resources": {"gpusPerProcess": 0}})
    experiment = parse(body)
    d = decide(experiment, body, _trials(body), [], Memory(), now=NOW)
    assert d.actions.trial_status["exp-b3-g2"]["phase"] == "Skipped"
    assert "not divisible" in d.actions.trial_status["exp-b3-g2"]["reason"]


def test_an_invalid_spec_raises_with_every_problem_and_becomes_a_condition() -> None:
    body = _body({"sweep": {"batchSizes": [8, 8], "gpus": [0]}})
    with pytest.raises(InvalidSpecError, match=r"spec.sweep.gpus\[0\]: must be a positive"):
        parse(body)
    status = invalid_status("spec.sweep: bad", None, 3, "2027-01-01T00:00:00Z")
    assert status["phase"] == "Failed"
    [ready] = status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == (
        ConditionType.READY,
        "False",
        "InvalidSpec",
    )
    assert ready["observedGeneration"] == 3
    assert not is_active(status)


def test_the_status_of_a_thousand_points_keeps_the_top_rows_within_its_budget() -> None:
    """The worst case of kube/compact.py's budget: 1,000 distinct configurations (every measured
    one on the Pareto front, hundreds of efficiency intervals), names of the longest kind, every
    failure's and every noise-scale reason 2,000 characters: the status stays under
    STATUS_BYTES, with the recommended trial first and every finished trial counted."""
    import json

    name = "a-very-long-experiment-name-that-is-cut-to-fit-the-limit"
    spec = {
        "sweep": {"batchSizes": [2**20 + 64 * i for i in range(40)], "gpus": list(range(1, 26))},
        "workload": {"datasetSize": 10**9},
        "resources": {"gpusPerProcess": 1},
        "execution": {"maxGPUs": 64},
    }  # fmt: skip
    body = _body(spec)
    body["metadata"]["name"] = name
    experiment = parse(body)
    planned = plan(experiment)
    assert len(planned) == 1000
    assert max(len(p.name) for p in planned) == 47
    trials = []
    for i, p in enumerate(planned):
        if i % 2:  # every other trial fails with a long message
            trials.append(TrialState(p.name, "u", TrialPhase.FAILED, "x" * 2000))
            continue
        seconds = 100.0 / p.gpus**0.5  # faster but dearer with each GPU: all on the front
        result = {
            "phase": "Succeeded", "reason": "converged", "epochs": 123456, "steps": 123456789,
            "finalLoss": 0.123456789012, "samplesPerSecond": 12345.6789012 * (1 + i % 7),
            "seconds": seconds, "gradientNoiseScaleReason": "y" * 2000,
            "criticalBatchSize": 1234.56789, "criticalBatchSizeStderr": 12.3456789,
            "inputWaitFraction": 0.123456789012, "inputBound": True,
        }  # fmt: skip
        trials.append(TrialState(p.name, "u", TrialPhase.SUCCEEDED, "converged", result=result))
    d = decide(experiment, body, trials, [], Memory(), now=NOW, planned=planned)
    size = len(json.dumps(d.status, separators=(",", ":")))
    assert size <= STATUS_BYTES, size
    assert len(d.status["results"]) == STATUS_ROWS
    assert d.status["omittedResults"] == 1000 - STATUS_ROWS
    assert d.status["results"][0]["trial"] == d.status["recommendation"]["trial"]
    assert len(d.status["recommendation"]["pareto"]) == STATUS_ROWS
    assert len(d.status["criticalBatch"]["efficiency"]) <= STATUS_ROWS
    assert all(len(r.get("reason", "")) <= 200 for r in d.status["results"])
    failed = next(c for c in d.status["conditions"] if c["type"] == ConditionType.TRIALS_FAILED)
    assert failed["message"].startswith(f"{d.status['trials']['failed']} failed: ")
    assert len(failed["message"]) < 1500
    assert len(d.rows) == 1000  # the metrics still get every row


def test_the_top_rows_are_the_recommendation_the_front_then_the_fastest() -> None:
    body = _body({"sweep": {"batchSizes": [8, 16, 32], "gpus": [1, 2]}, **SPEC_NO_GPU})
    experiment = parse(body)
    seconds = {"exp-b8-g1": 9.0, "exp-b8-g2": 5.0, "exp-b16-g1": 4.0, "exp-b16-g2": 3.0}
    trials = [
        TrialState(n, "u", TrialPhase.SUCCEEDED, result={"phase": "Succeeded", "finalLoss": 1.0,
                   "samplesPerSecond": 10.0, "seconds": t})
        for n, t in seconds.items()
    ] + [TrialState("exp-b32-g1", "u", TrialPhase.FAILED, "boom"),
         TrialState("exp-b32-g2", "u", TrialPhase.RUNNING)]  # fmt: skip
    d = decide(experiment, body, trials, [], Memory(), now=NOW)
    order = [r["trial"] for r in d.status["results"]]
    # b16-g2 is fastest (3 s, 6 GPU-s), b16-g1 cheapest (4 GPU-s): the front; then by time.
    assert order == ["exp-b16-g2", "exp-b16-g1", "exp-b8-g2", "exp-b8-g1", "exp-b32-g1"]
    assert d.status["omittedResults"] == 0
    top = compact.top_rows([ResultRow.model_validate(r) for r in d.status["results"]], None, 2)
    assert [r.trial for r in top] == ["exp-b16-g2", "exp-b16-g1"]


def test_leftovers_of_a_deleted_experiment_with_the_same_name_are_ignored() -> None:
    body = _body({"sweep": {"batchSizes": [8]}, "resources": {"gpusPerProcess": 0}})
    experiment = parse(body)
    [p] = plan(experiment)
    old_trial = TrialState(p.name, "old-trial", TrialPhase.SUCCEEDED, owner="old-experiment")
    old_job = JobState(p.name, JobPhase.SUCCEEDED, owner="old-trial")
    d = decide(experiment, body, [old_trial], [old_job], Memory(), now=NOW)
    assert [t.name for t in d.actions.create_trials] == [p.name]  # 409 until GC removes it
    assert d.status["phase"] == "Running"
    mine = TrialState(p.name, "new-trial", TrialPhase.PENDING, owner="u")
    d = decide(experiment, body, [mine], [old_job], Memory(), now=NOW)
    assert [t.name for t, _ in d.actions.launch] == [p.name]


def test_index_entries_carry_the_controller_owner() -> None:
    from scalelab.kube.observed import job_entry, trial_entry

    meta = {
        "name": "exp-b8-g1",
        "namespace": "ns",
        "uid": "t1",
        "labels": {"scalelab.dev/experiment": "exp", "scalelab.dev/trial": "exp-b8-g1"},
        "ownerReferences": [{"uid": "e1", "controller": True}],
    }
    [trial] = trial_entry({"metadata": meta}).values()
    assert (trial.uid, trial.owner, trial.phase) == ("t1", "e1", None)
    [job] = job_entry({"metadata": meta, "status": {}}).values()
    assert (job.trial, job.owner, job.phase) == ("exp-b8-g1", "e1", JobPhase.CREATED)
    assert trial_entry({"metadata": {"name": "x"}}) == {}


def test_a_running_trial_without_progress_is_flagged_stalled_once() -> None:
    body = _body({"sweep": {"batchSizes": [8, 16]}, "resources": {"gpusPerProcess": 0}})
    experiment = parse(body)
    b8, b16 = plan(experiment)
    trials = [
        TrialState(b8.name, "1", TrialPhase.RUNNING, updated_at="2027-01-15T07:00:00Z"),
        TrialState(b16.name, "2", TrialPhase.RUNNING, updated_at="2027-01-15T07:59:30Z"),
    ]
    jobs = [JobState(b8.name, JobPhase.RUNNING), JobState(b16.name, JobPhase.RUNNING)]
    memory = Memory()
    d = decide(experiment, body, trials, jobs, memory, now=NOW, stall_seconds=900)
    assert d.stalled == [b8.name]
    assert [e[1] for e in d.actions.events] == ["TrialStalled"]
    stalled = next(c for c in d.status["conditions"] if c["type"] == ConditionType.TRIALS_STALLED)
    assert b8.name in stalled["message"]
    again = decide(experiment, body, trials, jobs, memory, now=NOW + 1, stall_seconds=900)
    assert again.stalled == [b8.name]
    assert again.actions.events == []  # reported once
    assert decide(experiment, body, trials, jobs, Memory(), now=NOW).stalled == []  # 0 = off


def _workload(trial: str, *conditions: dict[str, str], queue: str = "") -> dict[str, Any]:
    """A Kueue Workload (v1beta2) as Kueue writes it for an MPIJob."""
    owner = {"apiVersion": "kubeflow.org/v2beta1", "kind": "MPIJob", "name": trial,
             "uid": "j", "controller": True}  # fmt: skip
    status: dict[str, Any] = {"conditions": list(conditions)}
    if queue:
        status["admission"] = {"clusterQueue": queue}
    return {"metadata": {"name": f"mpijob-{trial}-1", "namespace": "ns",
                         "ownerReferences": [owner]}, "status": status}  # fmt: skip


WAITING = "couldn't assign flavors to pod set worker: insufficient unused quota for nvidia.com/gpu"
NEVER = (
    "couldn't assign flavors to pod set worker: insufficient quota for nvidia.com/gpu in flavor "
    "gpu, previously considered podsets requests (0) + current podset request (4) > maximum "
    "capacity (2)"
)


def test_kueue_says_why_a_suspended_trial_waits_and_when_it_never_will() -> None:
    pending = {"type": "QuotaReserved", "status": "False", "reason": "Pending"}
    [(ns, waiting)] = workload_entry(_workload("a", {**pending, "message": WAITING})).items()
    [(_, never)] = workload_entry(_workload("b", {**pending, "message": NEVER})).items()
    [(_, admitted)] = workload_entry(
        _workload("c", _cond("QuotaReserved"), _cond("Admitted"), queue="gpus")
    ).items()
    assert (ns, waiting.admitted, admitted.admitted, admitted.cluster_queue) == (
        "ns", False, True, "gpus",
    )  # fmt: skip
    assert workload_entry({"metadata": {"namespace": "ns", "ownerReferences": []}}) == {}
    suspended = [JobState(t, JobPhase.SUSPENDED, "MPIJobSuspended") for t in "abc"]
    a, b, c = with_queue(suspended, [waiting, never, admitted])
    [p] = plan(parse(_body({"sweep": {"batchSizes": [8]}})))
    assert trial_phase(p, None, a, NOW) == (
        TrialPhase.PENDING, f"waiting for Kueue quota: {WAITING}"
    )  # fmt: skip
    assert trial_phase(p, None, b, NOW) == (
        TrialPhase.SKIPPED, f"Kueue can never admit it: {NEVER}"
    )  # fmt: skip
    assert trial_phase(p, None, c, NOW)[1] == "MPIJob suspended (MPIJobSuspended)"
    running = JobState("a", JobPhase.RUNNING)
    assert with_queue([running], [waiting]) == [running]  # admitted since: Kueue's word is stale


PREEMPTED = (
    "Preempted to accommodate a workload (UID: 5f1, JobUID: 9c2) due to prioritization in the "
    "ClusterQueue"
)


def test_a_trial_kueue_preempted_says_so_and_that_it_reruns_when_readmitted() -> None:
    evicted = {"type": "Evicted", "status": "True", "reason": "Preempted", "message": PREEMPTED}
    requeued = {"type": "QuotaReserved", "status": "False", "reason": "Pending",
                "message": WAITING}  # fmt: skip
    [(_, both)] = workload_entry(_workload("a", evicted, requeued)).items()
    [(_, bare)] = workload_entry(_workload("b", evicted)).items()
    other = {**evicted, "reason": "PodsReadyTimeout", "message": "pods not ready"}
    [(_, timeout)] = workload_entry(_workload("c", other, requeued)).items()
    assert (both.preempted, bare.preempted, timeout.preempted) == (PREEMPTED, PREEMPTED, "")
    jobs = [JobState(t, JobPhase.SUSPENDED, "MPIJobSuspended") for t in "abc"]
    a, b, c = with_queue(jobs, [both, bare, timeout])
    [p] = plan(parse(_body({"sweep": {"batchSizes": [8]}})))
    assert trial_phase(p, None, a, NOW) == (
        TrialPhase.PENDING,
        f"preempted by Kueue, reruns from the start: {PREEMPTED}; "
        f"waiting for Kueue quota: {WAITING}",
    )
    assert trial_phase(p, None, b, NOW)[1].endswith(f"start: {PREEMPTED}")
    assert trial_phase(p, None, c, NOW) == (  # evicted, not preempted: interrupted
        TrialPhase.PENDING,
        "interrupted by Kueue, reruns from the start: PodsReadyTimeout: pods not ready; "
        f"waiting for Kueue quota: {WAITING}",
    )
    # Readmitted: it runs again, and Kueue's old word no longer applies.
    running = JobState("a", JobPhase.RUNNING)
    assert trial_phase(p, None, with_queue([running], [both])[0], NOW) == (TrialPhase.RUNNING, "")


def test_kueue_evictions_other_than_preemption_rerun_and_deactivations_fail_with_the_cause() -> (
    None
):
    requeued = {"type": "QuotaReserved", "status": "False", "reason": "Pending",
                "message": WAITING}  # fmt: skip
    timeout = {"type": "Evicted", "status": "True", "reason": "PodsReadyTimeout",
               "message": "Exceeded the PodsReady timeout ns/mpijob-a-1"}  # fmt: skip
    out_of_time = {**timeout, "reason": "DeactivatedDueToMaximumExecutionTimeExceeded",
                   "message": "exceeding the maximum execution time"}  # fmt: skip
    given_up = {**timeout, "reason": "DeactivatedDueToRequeuingLimitExceeded",
                "message": "exceeding the maximum number of re-queuing retries"}  # fmt: skip
    checking = _workload("e", _cond("QuotaReserved"), queue="gpus")
    checking["status"]["admissionChecks"] = [
        {"name": "provisioning", "state": "Pending", "message": "waiting for nodes"},
        {"name": "other", "state": "Ready", "message": "ok"},
    ]
    entries = [
        workload_entry(_workload("a", timeout, requeued)),
        workload_entry(_workload("b", timeout)),
        workload_entry(_workload("c", out_of_time)),
        workload_entry(_workload("d", given_up)),
        workload_entry(checking),
    ]
    queue = [q for e in entries for q in e.values()]
    assert [q.preempted for q in queue] == [""] * 5  # only a Preempted eviction is preemption
    jobs = [JobState(t, JobPhase.SUSPENDED, "MPIJobSuspended") for t in "abcde"]
    [p] = plan(parse(_body({"sweep": {"batchSizes": [8]}})))
    a, b, c, d, e = (trial_phase(p, None, j, NOW) for j in with_queue(jobs, queue))
    assert a == (
        TrialPhase.PENDING,
        "interrupted by Kueue, reruns from the start: PodsReadyTimeout: Exceeded the PodsReady "
        f"timeout ns/mpijob-a-1; waiting for Kueue quota: {WAITING}",
    )
    assert b[0] is TrialPhase.PENDING
    assert b[1].endswith("timeout ns/mpijob-a-1")
    assert c == (
        TrialPhase.FAILED,
        "DeadlineExceeded: Kueue stopped it (DeactivatedDueToMaximumExecutionTimeExceeded: "
        "exceeding the maximum execution time)",
    )
    assert d[0] is TrialPhase.FAILED
    assert d[1].startswith("Kueue deactivated its workload and will not readmit it (")
    assert "RequeuingLimitExceeded" in d[1]
    assert e == (TrialPhase.PENDING, "waiting for capacity: provisioning: waiting for nodes")


def test_a_trial_kueue_deactivated_fails_and_its_suspended_mpijob_is_deleted() -> None:
    body = _body({"sweep": {"batchSizes": [8, 16]}, "execution": {"queueName": "gpus"}})
    experiment, trials = parse(body), _trials(body)
    out, waits = (t.name for t in trials)
    jobs = [
        JobState(out, JobPhase.SUSPENDED, "KueueMaxExecTimeExceeded", "exceeded"),
        JobState(waits, JobPhase.SUSPENDED, "KueueInterrupted", "PodsReadyTimeout: not ready"),
    ]
    d = decide(experiment, body, trials, jobs, Memory(), now=NOW)
    assert d.phases[out] is TrialPhase.FAILED
    assert d.phases[waits] is TrialPhase.PENDING
    assert d.actions.delete_jobs == [out]


def test_a_trial_kueue_can_never_admit_is_skipped_and_its_mpijob_deleted() -> None:
    spec = {"sweep": {"batchSizes": [8], "gpus": [1, 4]}, "execution": {"maxGPUs": 8}}
    body = _body({**spec, "resources": {"gpusPerProcess": 1}})
    experiment, trials = parse(body), _trials(body)
    small, big = (t.name for t in trials)
    jobs = [
        JobState(small, JobPhase.SUCCEEDED),
        JobState(big, JobPhase.SUSPENDED, "KueueCannotAdmit", NEVER),
    ]
    trials[0] = TrialState(small, "uid", TrialPhase.SUCCEEDED, result={"phase": "Succeeded"})
    d = decide(experiment, body, trials, jobs, Memory(), now=NOW)
    assert d.actions.delete_jobs == [big]
    assert d.phases[big] is TrialPhase.SKIPPED
    assert d.actions.trial_status[big]["reason"].startswith("Kueue can never admit it")
    assert d.status["phase"] == "Succeeded"  # the admissible point was measured


def test_kueues_reason_is_written_when_it_comes_after_the_trial_turned_pending() -> None:
    body = _body({"sweep": {"batchSizes": [8]}, "execution": {"queueName": "team"}})
    experiment, [trial] = parse(body), _trials(body)
    pending = TrialState(trial.name, trial.uid, TrialPhase.PENDING, "MPIJob suspended (x)")
    held = JobState(trial.name, JobPhase.SUSPENDED, "KueuePending", WAITING)
    memory = Memory()
    d = decide(experiment, body, [pending], [held], memory, now=NOW)
    assert d.actions.trial_status[trial.name]["reason"] == f"waiting for Kueue quota: {WAITING}"
    assert decide(experiment, body, [pending], [held], memory, now=NOW).actions.trial_status == {}
    plain = JobState(trial.name, JobPhase.CREATED)
    launched = TrialState(trial.name, trial.uid, TrialPhase.PENDING, "waiting for a slot")
    # Other reason changes within a phase are not worth a write each.
    assert (
        decide(experiment, body, [launched], [plain], Memory(), now=NOW).actions.trial_status == {}
    )


def test_a_missing_prerequisite_holds_every_launch_and_says_what_to_install() -> None:
    body = _body(SPEC)
    experiment, trials, memory = parse(body), _trials(body, TrialPhase.PENDING), Memory()
    missing = [Missing("mpijob-api", "MPIJobAPIMissing", "install the MPI operator")]
    d = decide(experiment, body, trials, [], memory, now=NOW, missing=missing)
    assert d.actions.launch == []
    assert d.status["phase"] == "Pending"
    [condition] = [
        c for c in d.status["conditions"] if c["type"] == ConditionType.PREREQUISITES_MET
    ]
    assert (condition["status"], condition["reason"]) == ("False", "MPIJobAPIMissing")
    assert "install the MPI operator" in condition["message"]
    assert ("Warning", "MPIJobAPIMissing", "install the MPI operator") in d.actions.events
    reasons = {patch["reason"] for patch in d.actions.trial_status.values()}
    assert reasons == {BLOCKED + "install the MPI operator"}
    [trial_condition] = next(iter(d.actions.trial_status.values()))["conditions"]
    assert (trial_condition["type"], trial_condition["status"]) == (
        ConditionType.PREREQUISITES_MET,
        "False",
    )
    assert trial_condition["message"] == "install the MPI operator"
    assert len(d.actions.trial_status) == 6  # every trial, the ones with a default phase too
    assert d.usage.queued == 9
    # Each held trial gets an Event of its own, on the trial (kubectl describe st shows it).
    assert sorted((e.trial, e.uid) for e in d.actions.trial_events) == sorted(
        (t.name, t.uid) for t in trials
    )
    assert {(e.type, e.reason, e.message) for e in d.actions.trial_events} == {
        ("Warning", "PrerequisitesMissing", "install the MPI operator")
    }
    # The next pass: no second Event, no rewrite of the same reason.
    trials = [replace(t, reason=BLOCKED + "install the MPI operator") for t in trials]
    again = decide(experiment, body, trials, [], memory, now=NOW + 2, missing=missing)
    assert [e for e in again.actions.events if e[1] == "MPIJobAPIMissing"] == []
    assert again.actions.trial_status == {}
    assert again.actions.trial_events == []
    # Installed: launches resume, the condition goes, the trials' reason moves on.
    fixed = decide(experiment, body, trials, [], memory, now=NOW + 4)
    assert len(fixed.actions.launch) == 2
    assert fixed.status["phase"] == "Running"
    assert ConditionType.PREREQUISITES_MET not in {c["type"] for c in fixed.status["conditions"]}
    assert len(fixed.actions.trial_status) == 6
    assert all(patch["conditions"] == [] for patch in fixed.actions.trial_status.values())


def test_an_unpullable_image_holds_its_launched_trial_with_the_reason_and_launches_no_more() -> (
    None
):
    body = _body(SPEC)
    experiment, trials, memory = parse(body), _trials(body, TrialPhase.PENDING), Memory()
    first = decide(experiment, body, trials, [], memory, now=NOW)
    launched = [p.name for p, _ in first.actions.launch]
    stuck = launched[0]
    jobs = [JobState(name, JobPhase.CREATED) for name in launched]
    image = Missing("trainer-image", "TrainerImageUnpullable", 'cannot pull "x"', trials=(stuck,))
    trials = [replace(t, reason=LAUNCHED) if t.name in launched else t for t in trials]
    d = decide(experiment, body, trials, jobs, memory, now=NOW + 1, missing=[image])
    assert d.actions.launch == []
    assert d.actions.trial_status[stuck]["reason"] == BLOCKED + 'cannot pull "x"'
    assert [c["type"] for c in d.actions.trial_status[stuck]["conditions"]] == [
        ConditionType.PREREQUISITES_MET
    ]
    assert launched[1] not in d.actions.trial_status  # its pods are not said to fail
    assert stuck in {e.trial for e in d.actions.trial_events}
    assert ("Warning", "TrainerImageUnpullable", 'cannot pull "x"') in d.actions.events
    # Pulled at last: the job runs, the trial says so and the condition goes.
    trials = [
        replace(t, reason=BLOCKED + 'cannot pull "x"') if t.name == stuck else t for t in trials
    ]
    running = [JobState(stuck, JobPhase.RUNNING), *jobs[1:]]
    fine = decide(experiment, body, trials, running, memory, now=NOW + 2)
    assert fine.actions.trial_status[stuck]["phase"] == "Running"
    assert fine.actions.trial_status[stuck]["conditions"] == []


def test_a_missing_kueue_is_named_but_the_suspended_mpijobs_are_still_created() -> None:
    body = _body({**SPEC, "execution": {**SPEC["execution"], "queueName": "q"}})
    kueue = Missing("kueue-api", "KueueAPIMissing", "install Kueue", blocks=False)
    d = decide(parse(body), body, _trials(body), [], Memory(), now=NOW, missing=[kueue])
    assert len(d.actions.launch) == 2
    assert d.status["phase"] == "Running"
    [condition] = [
        c for c in d.status["conditions"] if c["type"] == ConditionType.PREREQUISITES_MET
    ]
    assert condition["reason"] == "KueueAPIMissing"
