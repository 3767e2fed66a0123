"""What one pass observes of an experiment, as plain values: the entries of kopf's indexes (its
ScaleTrials, MPIJobs and Kueue Workloads), the prerequisites the cluster lacks, and the
experiment's spec, validated.

kube/handlers.py fills kopf's indexes with `trial_entry`, `job_entry` and `workload_entry`, which
keep only what reconciliation reads (an index holds an entry for every object in the cluster,
finished experiments' included): of a trial's result, the keys the operator's result model
knows, not the curves or config a trainer may add; strings repeated in every entry once;
`__slots__` entries.
kube/operations.py reads them (`with_queue` folds Kueue's reason into each suspended MPIJob, and
Kueue's admission time into each admitted one) and parses the spec with `parse` (so does
kube/results.py); kube/prerequisites.py names what is missing as `Missing`. kube/decide.py
decides from these values; nothing here talks to the API.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from scalelab.api import API_VERSION, EXPERIMENT_KIND, ScaleExperiment, TrialPhase, TrialResult
from scalelab.kube.mpijob import LABEL_EXPERIMENT, LABEL_TRIAL
from scalelab.kube.resources import MPIJOB_GROUP
from scalelab.validation import InvalidExperimentError, parse_experiment

Key = tuple[str, str]  # (namespace, experiment)


@dataclass(frozen=True)
class Missing:
    """A prerequisite the cluster lacks: a stable key (metric label), the condition's and Event's
    reason, a message that says what is missing and how to install it, and whether it holds
    launches back (nothing could run without it)."""

    key: str
    reason: str
    message: str
    blocks: bool = True
    trials: tuple[str, ...] = ()  # trials it holds although launched (pods that cannot start)


class JobPhase(StrEnum):
    """An MPIJob's state, from its conditions (mpi-operator pkg/controller/*status.go)."""

    CREATED = "Created"
    SUSPENDED = "Suspended"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


#: The keys of a trial's status.result that the operator reads (read_trial_result drops the rest).
RESULT_KEYS = frozenset(f.alias or name for name, f in TrialResult.model_fields.items())


@dataclass(frozen=True, slots=True)
class TrialState:
    """What the trial index keeps of one ScaleTrial."""

    name: str
    uid: str
    phase: TrialPhase | None
    reason: str = ""
    result: Mapping[str, Any] | None = None
    start_time: str | None = None
    owner: str | None = None  # uid of the owning experiment; None: not checked
    updated_at: str | None = None  # status.progress.updatedAt: rank 0's last heartbeat
    training_seconds: float | None = None  # status.progress.trainingSeconds
    # status.progress.epoch, .loss and .stepSeconds (the last finished epoch's), .steps and
    # .samplesPerSecond (the last write's): how far a running trial has come
    epoch: int | None = None
    steps: int | None = None
    samples_per_second: float | None = None
    step_seconds: float | None = None
    loss: float | None = None
    queue_seconds: float | None = None  # status.queueSeconds, once written (its results row)
    # status.times.running (the run the operator last saw start) and status.deviceSeconds (what
    # its ended runs used): the start and the sum a run's cost is added to (phases.run_seconds)
    ran_at: str | None = None
    device_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class JobState:
    """What the MPIJob index keeps of one MPIJob."""

    trial: str
    phase: JobPhase
    reason: str = ""
    message: str = ""
    completion_time: str | None = None
    owner: str | None = None  # uid of the owning trial; None: not checked
    # The trial's times (api.TrialTimes), RFC 3339: metadata.creationTimestamp; status.startTime
    # while not suspended (the MPI operator's start: creation, or the last unsuspension), which
    # `with_queue` replaces with Kueue's admission time; the Running condition's time.
    created: str | None = None
    admitted: str | None = None
    running: str | None = None
    # While suspended, the Suspended condition's time: when a run Kueue evicted stopped.
    stopped: str | None = None


#: A suspended MPIJob's JobState.reason once Kueue says why it holds the job. PREEMPTED: it was
#: admitted and ran, then Kueue evicted it for a workload of higher priority or to reclaim quota
#: its cohort lent; INTERRUPTED: evicted for another reason Kueue requeues after (its pods were
#: not all ready within WaitForPodsReady's timeout, a stopped queue, failed nodes); CHECKING:
#: quota is reserved, an admission check (e.g. a ProvisioningRequest) has not passed yet;
#: OUT_OF_TIME: Kueue deactivated it once its admitted time reached the MPIJob's
#: max-exec-time-seconds; DEACTIVATED: deactivated for any other cause (the requeuing limit of
#: WaitForPodsReady, a person): Kueue will not readmit it.
QUEUED, NEVER_ADMITTED, PREEMPTED = "KueuePending", "KueueCannotAdmit", "KueuePreempted"
INTERRUPTED, CHECKING = "KueueInterrupted", "KueueAdmissionCheck"
OUT_OF_TIME, DEACTIVATED = "KueueMaxExecTimeExceeded", "KueueDeactivated"
#: Kueue's flavor assigner says this when a request exceeds all that the ClusterQueue (with what
#: its cohort could lend) has (pkg/scheduler/flavorassigner, fitsResourceQuota: "No Fit"); less
#: than that waits for quota to free ("insufficient unused quota").
NEVER_FITS = "> maximum capacity"
#: How a held trial's reason starts (Kueue's message follows).
KUEUE_WAITING = "waiting for Kueue quota"
KUEUE_PREEMPTED = "preempted by Kueue, reruns from the start"
KUEUE_INTERRUPTED = "interrupted by Kueue, reruns from the start"
KUEUE_CHECKING = "waiting for capacity"
#: Kueue's Evicted reasons (apis/kueue/v1beta2 workload_types.go): Preempted; a deactivation is
#: "Deactivated" or "DeactivatedDueTo<cause>" (ReasonWithCause, pkg/workload/patching in v0.19).
EVICTED_PREEMPTED, EVICTED_DEACTIVATED = "Preempted", "Deactivated"
OUT_OF_TIME_CAUSE = "MaximumExecutionTimeExceeded"


@dataclass(frozen=True, slots=True)
class QueueState:
    """What the Workload index keeps of one Kueue Workload of one of our MPIJobs."""

    trial: str  # the MPIJob's (= the trial's) name
    admitted: bool
    message: str = ""  # why quota is not reserved yet (QuotaReserved=False)
    cluster_queue: str = ""
    evicted: str = ""  # Kueue's reason when it evicted the workload (Evicted=True), e.g. Preempted
    evicted_message: str = ""
    checks: str = ""  # the admission checks not passed yet, "name: message; …"
    admitted_at: str | None = None  # the Admitted condition's lastTransitionTime while True

    @property
    def preempted(self) -> str:
        """Kueue's message when it evicted the workload to preempt it, else empty."""
        return self.evicted_message if self.evicted == EVICTED_PREEMPTED else ""


def _controller_uid(meta: Mapping[str, Any]) -> str | None:
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            return sys.intern(str(ref.get("uid")))  # the same owner in a thousand entries
    return None


def condition_true(conditions: Iterable[Mapping[str, Any]], kind: str) -> Mapping[str, Any] | None:
    """The condition of type `kind` whose status is True, else None."""
    for c in conditions:
        if c.get("type") == kind and c.get("status") == "True":
            return c
    return None


#: The reason of the MPI operator's Running condition while the job runs; it keeps it (and its
#: time) when the job ends and only the status turns False (pkg/controller, filterOutCondition).
MPIJOB_RUNNING = "MPIJobRunning"


def job_state(trial: str, status: Mapping[str, Any] | None) -> JobState:
    """An MPIJob's phase from its conditions: terminal ones first, like the MPI operator; with
    when it started (status.startTime, unless suspended now) and ran (the Running condition's
    time: True now, or ended after running, not False for a suspension)."""
    status = status or {}
    conditions = list(status.get("conditions") or [])
    running = next(
        (
            c.get("lastTransitionTime")
            for c in conditions
            if c.get("type") == JobPhase.RUNNING.value
            and (c.get("status") == "True" or c.get("reason") == MPIJOB_RUNNING)
        ),
        None,
    )
    for phase in (JobPhase.FAILED, JobPhase.SUCCEEDED, JobPhase.SUSPENDED, JobPhase.RUNNING):
        c = condition_true(conditions, phase.value)
        if c is not None:
            return JobState(
                trial=trial,
                phase=phase,
                reason=str(c.get("reason") or ""),
                message=str(c.get("message") or ""),
                completion_time=status.get("completionTime"),
                admitted=status.get("startTime") if phase is not JobPhase.SUSPENDED else None,
                running=running,
                stopped=c.get("lastTransitionTime") if phase is JobPhase.SUSPENDED else None,
            )
    return JobState(trial=trial, phase=JobPhase.CREATED, admitted=status.get("startTime"))


def index_key(body: Mapping[str, Any]) -> Key | None:
    """(namespace, experiment) of a trial or MPIJob made by scalelab, else None."""
    meta = body.get("metadata") or {}
    experiment = (meta.get("labels") or {}).get(LABEL_EXPERIMENT)
    if not experiment:
        return None
    return (sys.intern(str(meta.get("namespace") or "")), sys.intern(str(experiment)))


def trial_entry(body: Mapping[str, Any]) -> dict[Key, TrialState]:
    """The trial index's entry for one ScaleTrial body."""
    key = index_key(body)
    if key is None:
        return {}
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    progress = status.get("progress") or {}
    raw_phase = str(status.get("phase") or "")
    phase = TrialPhase(raw_phase) if raw_phase in set(TrialPhase) else None
    result = status.get("result")
    return {
        key: TrialState(
            name=str(meta.get("name")),
            uid=str(meta.get("uid")),
            phase=phase,
            reason=str(status.get("reason") or ""),
            result=_known(result) if isinstance(result, Mapping) else None,
            start_time=status.get("startTime"),
            owner=_controller_uid(meta),
            updated_at=progress.get("updatedAt"),
            training_seconds=_seconds(progress.get("trainingSeconds")),
            epoch=_count(progress.get("epoch")),
            steps=_count(progress.get("steps")),
            samples_per_second=_seconds(progress.get("samplesPerSecond")),
            step_seconds=_seconds(progress.get("stepSeconds")),
            loss=_seconds(progress.get("loss")),
            queue_seconds=_seconds(status.get("queueSeconds")),
            ran_at=(status.get("times") or {}).get("running"),
            device_seconds=_seconds(status.get("deviceSeconds")),
        )
    }


def _known(result: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a result the operator reads; a trainer may report curves and more besides."""
    return {key: value for key, value in result.items() if key in RESULT_KEYS}


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def job_entry(body: Mapping[str, Any]) -> dict[Key, JobState]:
    """The MPIJob index's entry for one MPIJob body."""
    key = index_key(body)
    if key is None:
        return {}
    trial = ((body.get("metadata") or {}).get("labels") or {}).get(LABEL_TRIAL)
    if not trial:
        return {}
    meta = body.get("metadata") or {}
    state = job_state(str(trial), body.get("status"))
    return {key: replace(state, owner=_controller_uid(meta), created=meta.get("creationTimestamp"))}


def workload_entry(body: Mapping[str, Any]) -> dict[str, QueueState]:
    """The Workload index's entry (keyed by namespace) for a Kueue Workload owned by an MPIJob."""
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    owner = next(
        (
            ref
            for ref in meta.get("ownerReferences") or []
            if ref.get("kind") == "MPIJob"
            and str(ref.get("apiVersion", "")).startswith(f"{MPIJOB_GROUP}/")
        ),
        None,
    )
    if owner is None:
        return {}
    conditions = list(status.get("conditions") or [])
    reserved = next((c for c in conditions if c.get("type") == "QuotaReserved"), None)
    waiting = reserved is not None and reserved.get("status") == "False"
    # Kueue evicts an admitted workload (condition Evicted: for one of higher priority, after
    # WaitForPodsReady's timeout, ...) and requeues it, or deactivates it; its MPIJob is
    # suspended again meanwhile.
    evicted = condition_true(conditions, "Evicted") or {}
    reason = str(evicted.get("reason") or "")
    admitted = condition_true(conditions, "Admitted")
    return {
        str(meta.get("namespace") or ""): QueueState(
            trial=str(owner.get("name")),
            admitted=admitted is not None,
            message=str(reserved.get("message") or "") if waiting and reserved else "",
            cluster_queue=str((status.get("admission") or {}).get("clusterQueue") or ""),
            evicted=reason,
            evicted_message=str(evicted.get("message") or reason),
            checks=_pending_checks(status) if reserved and not waiting else "",
            admitted_at=admitted.get("lastTransitionTime") if admitted is not None else None,
        )
    }


def _pending_checks(status: Mapping[str, Any]) -> str:
    """The admission checks of a workload with quota reserved that have not passed (state
    Pending or Retry), "name: message; …"."""
    return "; ".join(
        f"{c.get('name')}: {c.get('message') or c.get('state')}"
        for c in status.get("admissionChecks") or []
        if c.get("state") in ("Pending", "Retry")
    )


def _held(job: JobState, q: QueueState) -> JobState:
    """A suspended MPIJob with Kueue's reason for holding it (see QUEUED ... DEACTIVATED)."""
    waiting = f"; {KUEUE_WAITING}: {q.message}" if q.message else ""
    if q.evicted.startswith(EVICTED_DEACTIVATED):
        cause = OUT_OF_TIME if q.evicted.endswith(OUT_OF_TIME_CAUSE) else DEACTIVATED
        return replace(job, reason=cause, message=f"{q.evicted}: {q.evicted_message}")
    if NEVER_FITS in q.message:
        return replace(job, reason=NEVER_ADMITTED, message=q.message)
    if q.preempted:
        return replace(job, reason=PREEMPTED, message=f"{q.preempted}{waiting}")
    if q.evicted:
        message = f"{q.evicted}: {q.evicted_message}{waiting}"
        return replace(job, reason=INTERRUPTED, message=message)
    if q.checks:
        return replace(job, reason=CHECKING, message=q.checks)
    return replace(job, reason=QUEUED, message=q.message)


def with_queue(jobs: Iterable[JobState], queue: Iterable[QueueState]) -> list[JobState]:
    """The MPIJobs, each suspended one that Kueue holds back carrying Kueue's reason: QUEUED
    (waits for quota to free), NEVER_ADMITTED (asks for more than the queue can ever give),
    PREEMPTED or INTERRUPTED (ran, was evicted, waits to be readmitted), CHECKING (quota
    reserved, an admission check pending), OUT_OF_TIME or DEACTIVATED (Kueue will not readmit
    it); each one Kueue admitted carrying Kueue's admission time (`JobState.admitted`)."""
    queue = list(queue)
    held = {q.trial: q for q in queue if not q.admitted and (q.message or q.evicted or q.checks)}
    admitted = {q.trial: q.admitted_at for q in queue if q.admitted_at}
    out = []
    for seen in jobs:
        when = admitted.get(seen.trial)
        job = replace(seen, admitted=when) if when is not None and when != seen.admitted else seen
        held_by = held.get(job.trial) if job.phase is JobPhase.SUSPENDED else None
        out.append(_held(job, held_by) if held_by is not None else job)
    return out


class InvalidSpecError(Exception):
    """A ScaleExperiment the operator cannot run; the message says what to fix."""


def parse(body: Mapping[str, Any]) -> ScaleExperiment:
    """Validate a body once (schema and cross-field rules) or raise InvalidSpecError."""
    meta = body.get("metadata") or {}
    document = {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": body.get("kind", EXPERIMENT_KIND),
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
        "spec": dict(body.get("spec") or {}),
    }
    try:
        return parse_experiment(document)
    except InvalidExperimentError as error:
        raise InvalidSpecError(
            "; ".join(f"{p.path}: {p.message}" if p.path else p.message for p in error.problems)
        ) from None
