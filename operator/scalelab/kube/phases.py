"""A trial's phase, reason, times, the cost of its runs and results row, from what a pass
observes of it: its MPIJob's state (with Kueue's admission), and the result and progress its
trainer reported.

Called by kube/decide.py (steps 2 and 4 of a pass); pure. The reasons a Pending trial shows
(LAUNCHED, WAITING, WAITING_FOR_PILOT, BLOCKED and Kueue's) are named here, where they are set.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from scalelab import adaptive
from scalelab.api import FINISHED_TRIAL_PHASES, ResultRow, TrialPhase, read_trial_result
from scalelab.kube.observed import (
    CHECKING,
    DEACTIVATED,
    INTERRUPTED,
    KUEUE_CHECKING,
    KUEUE_INTERRUPTED,
    KUEUE_PREEMPTED,
    KUEUE_WAITING,
    NEVER_ADMITTED,
    OUT_OF_TIME,
    PREEMPTED,
    QUEUED,
    JobPhase,
    JobState,
    TrialState,
)
from scalelab.planner import PlannedTrial

#: A trial Kueue holds and will run (again) stays Pending; its reason starts with the words for
#: its MPIJob's Kueue reason: waiting for quota, preempted or interrupted (its pods are gone and
#: the trainer starts over when readmitted: never Failed), or waiting on an admission check.
KUEUE_PENDING = {
    QUEUED: KUEUE_WAITING,
    PREEMPTED: KUEUE_PREEMPTED,
    INTERRUPTED: KUEUE_INTERRUPTED,
    CHECKING: KUEUE_CHECKING,
}
#: A finished MPIJob whose trial has no result yet may be waiting on a slower watch; after this
#: long the trial is Failed with reason NoResult. Unit: seconds.
RESULT_GRACE_SECONDS = 30.0
#: The phases a trainer's result may report (docs/trial-contract.md).
REPORTED_PHASES = frozenset({TrialPhase.SUCCEEDED, TrialPhase.DIVERGED, TrialPhase.FAILED})
LAUNCHED = "MPIJob created, waiting for its pods"
WAITING_FOR_PILOT = f"{adaptive.PREFIX}waiting for the pilot"
WAITING = "waiting for a slot under maxConcurrentTrials and maxGPUs"
BLOCKED = "blocked until installed: "
#: What a Pending trial without a reason is doing: waiting for a slot, or launched and waiting for
#: its pods (its MPIJob says which). Not worth a write of its own, of 3 per trial in all.
QUIET = frozenset({WAITING, LAUNCHED})
#: What a finished trial's result brings into its row.
MEASURED_FIELDS = frozenset(
    {
        "epochs",
        "steps",
        "final_loss",
        "samples_per_second",
        "time_to_target_seconds",
        "seconds",
        "steps_to_target",
        "gradient_noise_scale",
        "gradient_noise_scale_stderr",
        "gradient_noise_scale_reason",
        "critical_batch_size",
        "critical_batch_size_stderr",
        "input_wait_fraction",
        "input_bound",
    }
)


def parse_time(value: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 UTC time (second precision), None if unreadable."""
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def queue_seconds(job: JobState | None) -> float | None:
    """How long an MPIJob waited for quota: its creation to its admission (0 at least: the two
    clocks are the API server's and Kueue's); None before it is admitted."""
    if job is None or not job.admitted:
        return None
    created, admitted = parse_time(job.created), parse_time(job.admitted)
    return max(0.0, admitted - created) if created is not None and admitted is not None else None


def trial_times(
    job: JobState | None, trial: TrialState | None, phase: TrialPhase, stamp: str
) -> dict[str, Any]:
    """The status fields `times` and `queueSeconds` (api.TrialTimes) as this pass observes them,
    for a status patch written anyway: they ride along with a phase or reason change and never
    cost a write of their own. A time not observed now is left out, so the merge patch keeps
    what an earlier one wrote (a trial's MPIJob is gone; a preempted trial is not admitted
    while it waits, and its readmission replaces the first). An MPIJob that ran between two
    looks of the MPI operator has no Running time: the trainer's first step stands in."""
    times = {}
    if job is not None:
        seen = {"created": job.created, "admitted": job.admitted, "running": job.running}
        times = {key: value for key, value in seen.items() if value}
        if not job.running and trial is not None and phase is not TrialPhase.PENDING:
            first = _first_step(trial)
            if first is not None:
                times["running"] = first
    if phase in FINISHED_TRIAL_PHASES and phase is not TrialPhase.SKIPPED:
        times["finished"] = (job.completion_time if job is not None else None) or stamp
    out: dict[str, Any] = {"times": times} if times else {}
    waited = queue_seconds(job)
    if waited is not None:
        out["queueSeconds"] = waited
    return out


def _first_step(trial: TrialState) -> str | None:
    """When the trainer took its first step: its last progress report less its training time."""
    heartbeat, training = parse_time(trial.updated_at), trial.training_seconds
    if heartbeat is None or training is None:
        return None
    return _rfc3339(heartbeat - training)


#: The reasons of a Pending trial whose run Kueue evicted (its pods are gone; it reruns).
EVICTED_REASONS = (KUEUE_PREEMPTED, KUEUE_INTERRUPTED)


def run_seconds(
    job: JobState | None,
    trial: TrialState | None,
    was: TrialPhase | None,
    now: tuple[TrialPhase, str],
    stamp: str,
) -> float | None:
    """How long the pods of the run that ends with this status write ran (docs/measurements.md,
    "Device-seconds"), None when no run ends with it. A run ends when Kueue evicts it (the trial
    turns Pending, preempted or interrupted: until the Suspended condition's time) and with the
    trial's final phase (until the MPIJob's completionTime; suspended, the Suspended condition's
    time; else `stamp`, when the operator saw it end: Pruned, its MPIJob deleted now). It began
    at the MPIJob's Running time; a suspended MPIJob has lost that, and the trial's
    times.running (else the trainer's first step) stands in while the trial shows Running and
    was last written Running (`was`): the operator saw this run start. After an eviction it
    shows Pending, so a rewrite of the reason, or a run the operator never saw start, is not
    counted again."""
    phase, reason = now
    evicted = phase is TrialPhase.PENDING and reason.startswith(EVICTED_REASONS)
    final = phase in FINISHED_TRIAL_PHASES and phase is not TrialPhase.SKIPPED
    if not (evicted or final):
        return None
    end = stamp
    if job is not None and job.phase is JobPhase.SUSPENDED:
        end = job.stopped or stamp
    elif job is not None and job.phase in (JobPhase.SUCCEEDED, JobPhase.FAILED):
        end = job.completion_time or stamp
    start = job.running if job is not None else None
    seen = trial is not None and trial.phase is TrialPhase.RUNNING and was is TrialPhase.RUNNING
    if not start and seen and trial is not None:
        start = trial.ran_at or _first_step(trial)
    begun, ended = parse_time(start), parse_time(end)
    return max(0.0, ended - begun) if begun is not None and ended is not None else None


def trial_phase(
    planned: PlannedTrial, trial: TrialState | None, job: JobState | None, now: float
) -> tuple[TrialPhase, str]:
    """The phase and reason a trial should show, given its MPIJob and its reported result."""
    if planned.skipped:
        return TrialPhase.SKIPPED, planned.reason
    if trial is not None and trial.phase in FINISHED_TRIAL_PHASES:
        return trial.phase, trial.reason  # terminal: never revert a finished trial
    if job is None:
        return TrialPhase.PENDING, WAITING
    result = read_trial_result(trial.result if trial is not None else None)
    if job.phase is JobPhase.FAILED:
        why = result.reason if result is not None and result.phase is TrialPhase.FAILED else ""
        detail = f"{job.reason}: {job.message}" if job.message else job.reason or "MPIJob failed"
        return TrialPhase.FAILED, f"{why} ({detail})" if why else detail
    if job.phase is JobPhase.SUCCEEDED:
        if result is not None and result.phase in REPORTED_PHASES:
            return result.phase, result.reason
        finished = parse_time(job.completion_time)
        if finished is not None and now - finished > RESULT_GRACE_SECONDS:
            return TrialPhase.FAILED, "NoResult: the trainer exited 0 but never reported a result"
        return TrialPhase.RUNNING, "finished; waiting for the trainer's result"
    if job.phase is JobPhase.SUSPENDED:
        return _suspended(job)
    if job.phase is JobPhase.RUNNING:
        return TrialPhase.RUNNING, ""
    return TrialPhase.PENDING, LAUNCHED


def _suspended(job: JobState) -> tuple[TrialPhase, str]:
    """A trial whose MPIJob is suspended: Kueue's reason, when Kueue holds it."""
    if job.reason == NEVER_ADMITTED:
        return TrialPhase.SKIPPED, f"Kueue can never admit it: {job.message}"
    if job.reason in KUEUE_PENDING:
        return TrialPhase.PENDING, f"{KUEUE_PENDING[job.reason]}: {job.message}"
    if job.reason == OUT_OF_TIME:  # activeDeadlineSeconds of admitted time, as without Kueue
        return TrialPhase.FAILED, f"DeadlineExceeded: Kueue stopped it ({job.message})"
    if job.reason == DEACTIVATED:
        why = f"Kueue deactivated its workload and will not readmit it ({job.message})"
        return TrialPhase.FAILED, why
    return TrialPhase.PENDING, f"MPIJob suspended ({job.reason or 'queued'})"


def row(
    planned: PlannedTrial,
    phase: TrialPhase,
    reason: str,
    trial: TrialState | None,
    *,
    queued: float | None = None,
    spent: float | None = None,
) -> ResultRow:
    """The results-table row of a finished trial: its grid point, phase, reason, result, how
    long it waited for quota (`queued`) and the device-seconds all its runs used (`spent`)."""
    result = read_trial_result(trial.result if trial is not None else None)
    measured: dict[str, Any] = {}
    if result is not None:
        measured = result.model_dump(include=set(MEASURED_FIELDS))
        if result.step_time_seconds is not None:  # the median, as a local run's row has it
            measured["step_seconds"] = result.step_time_seconds.p50
    if phase is TrialPhase.PRUNED and trial is not None:  # what it spent before it was stopped
        measured["seconds"] = trial.training_seconds
    return ResultRow(
        trial=planned.name,
        batch_size=planned.batch_size,
        gpus=planned.gpus,
        base_learning_rate=planned.base_learning_rate,
        repeat=planned.repeat,
        phase=phase,
        reason=reason,
        pruned=phase in (TrialPhase.SKIPPED, TrialPhase.PRUNED)
        and reason.startswith(adaptive.PREFIX),
        queue_seconds=queued,
        device_seconds=spent,
        **measured,
    )
