"""What the operator should do next for one ScaleExperiment, as pure functions of what it sees.

The experiment is the scheduler: only it sees every trial, so it admits trials under
`maxConcurrentTrials` and `maxGPUs`, turns MPIJob conditions into trial phases, and folds
trial results into its status. Inputs are the experiment body, the snapshot of its trials and
MPIJobs (kopf indexes) and what this process wrote recently; the output is an `Actions` value
that kube/apply.py carries out. Nothing here talks to the API, so every rule is unit tested.

Failure budget: each trial is retried by its MPIJob's launcher Job (`execution.backoffLimit`);
a trial whose MPIJob fails is Failed for good and the others go on. The experiment is Succeeded
when every trial has finished and at least one produced a measurement (Succeeded or Diverged),
Failed when every runnable trial failed; a `TrialsFailed` condition names the failures either way.

Missing prerequisites (kube/prerequisites.py: no MPIJob API, no Kueue API for a queueName, no
trainer ServiceAccount) are named by a PrerequisitesMet=False condition and a Warning Event
saying what is missing and how to install it. Those that block (no MPIJob API, no trainer
account) hold every launch back: the experiment is Pending and its waiting trials say why. A
missing Kueue does not: the MPIJobs are created suspended, for Kueue to admit once installed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from scalelab import adaptive, aggregate
from scalelab.api import (
    API_VERSION,
    EXPERIMENT_KIND,
    FINISHED_TRIAL_PHASES,
    BatchScope,
    Condition,
    ConditionStatus,
    ExperimentPhase,
    ResultRow,
    ScaleExperiment,
    TrialCounts,
    TrialPhase,
    read_trial_result,
)
from scalelab.kube import compact
from scalelab.kube.mpijob import LABEL_EXPERIMENT, LABEL_TRIAL, MPIJOB_GROUP, trial_labels
from scalelab.planner import PlannedTrial, devices_needed, plan
from scalelab.validation import InvalidExperimentError, parse_experiment

#: A finished MPIJob whose trial has no result yet may be waiting on a slower watch; after this
#: long the trial is Failed with reason NoResult. Unit: seconds.
RESULT_GRACE_SECONDS = 30.0
#: At most this many trials are named in the TrialsFailed and TrialsStalled condition messages.
FAILED_NAMED = 5

Key = tuple[str, str]  # (namespace, experiment)
#: The phases a trainer's result may report (docs/trial-contract.md).
REPORTED_PHASES = frozenset({TrialPhase.SUCCEEDED, TrialPhase.DIVERGED, TrialPhase.FAILED})
LAUNCHED = "MPIJob created, waiting for its pods"
WAITING_FOR_PILOT = f"{adaptive.PREFIX}waiting for the pilot"
WAITING = "waiting for a slot under maxConcurrentTrials and maxGPUs"
BLOCKED = "blocked until installed: "


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


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class JobState:
    """What the MPIJob index keeps of one MPIJob."""

    trial: str
    phase: JobPhase
    reason: str = ""
    message: str = ""
    completion_time: str | None = None
    owner: str | None = None  # uid of the owning trial; None: not checked


#: Kueue's Workload API (kueue.x-k8s.io/v1beta2, served since Kueue 0.15, stored since 0.16).
KUEUE_GROUP, KUEUE_VERSION, KUEUE_WORKLOADS = "kueue.x-k8s.io", "v1beta2", "workloads"
#: A suspended MPIJob's JobState.reason once Kueue says why it holds the job (PREEMPTED: it
#: was admitted and ran, then Kueue evicted it for a workload of higher priority).
QUEUED, NEVER_ADMITTED, PREEMPTED = "KueuePending", "KueueCannotAdmit", "KueuePreempted"
#: Kueue's flavor assigner says this when a request exceeds all that the ClusterQueue (with what
#: its cohort could lend) has (pkg/scheduler/flavorassigner, fitsResourceQuota: "No Fit"); less
#: than that waits for quota to free ("insufficient unused quota").
NEVER_FITS = "> maximum capacity"
#: How a held trial's reason starts (Kueue's message follows).
KUEUE_WAITING = "waiting for Kueue quota"
KUEUE_PREEMPTED = "preempted by Kueue, reruns from the start"


@dataclass(frozen=True)
class QueueState:
    """What the Workload index keeps of one Kueue Workload of one of our MPIJobs."""

    trial: str  # the MPIJob's (= the trial's) name
    admitted: bool
    message: str = ""  # why quota is not reserved yet (QuotaReserved=False)
    cluster_queue: str = ""
    preempted: str = ""  # Kueue's message when it evicted the workload to preempt it


def _controller_uid(meta: Mapping[str, Any]) -> str | None:
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


# ----------------------------------------------------------------------------------- indexes


def _condition_true(conditions: Iterable[Mapping[str, Any]], kind: str) -> Mapping[str, Any] | None:
    for c in conditions:
        if c.get("type") == kind and c.get("status") == "True":
            return c
    return None


def job_state(trial: str, status: Mapping[str, Any] | None) -> JobState:
    """An MPIJob's phase from its conditions: terminal ones first, like the MPI operator."""
    status = status or {}
    conditions = list(status.get("conditions") or [])
    for phase in (JobPhase.FAILED, JobPhase.SUCCEEDED, JobPhase.SUSPENDED, JobPhase.RUNNING):
        c = _condition_true(conditions, phase.value)
        if c is not None:
            return JobState(
                trial=trial,
                phase=phase,
                reason=str(c.get("reason") or ""),
                message=str(c.get("message") or ""),
                completion_time=status.get("completionTime"),
            )
    return JobState(trial=trial, phase=JobPhase.CREATED)


def index_key(body: Mapping[str, Any]) -> Key | None:
    """(namespace, experiment) of a trial or MPIJob made by scalelab, else None."""
    meta = body.get("metadata") or {}
    experiment = (meta.get("labels") or {}).get(LABEL_EXPERIMENT)
    if not experiment:
        return None
    return (str(meta.get("namespace") or ""), str(experiment))


def trial_entry(body: Mapping[str, Any]) -> dict[Key, TrialState]:
    """The trial index's entry for one ScaleTrial body."""
    key = index_key(body)
    if key is None:
        return {}
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    raw_phase = str(status.get("phase") or "")
    phase = TrialPhase(raw_phase) if raw_phase in set(TrialPhase) else None
    result = status.get("result")
    return {
        key: TrialState(
            name=str(meta.get("name")),
            uid=str(meta.get("uid")),
            phase=phase,
            reason=str(status.get("reason") or ""),
            result=result if isinstance(result, Mapping) else None,
            start_time=status.get("startTime"),
            owner=_controller_uid(meta),
            updated_at=(status.get("progress") or {}).get("updatedAt"),
            training_seconds=_seconds((status.get("progress") or {}).get("trainingSeconds")),
        )
    }


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def job_entry(body: Mapping[str, Any]) -> dict[Key, JobState]:
    """The MPIJob index's entry for one MPIJob body."""
    key = index_key(body)
    if key is None:
        return {}
    trial = ((body.get("metadata") or {}).get("labels") or {}).get(LABEL_TRIAL)
    if not trial:
        return {}
    state = job_state(str(trial), body.get("status"))
    return {key: replace(state, owner=_controller_uid(body.get("metadata") or {}))}


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
    # Kueue evicts an admitted workload to make room for one of higher priority (condition
    # Evicted, reason Preempted) and requeues it; its MPIJob is suspended again meanwhile.
    evicted = _condition_true(conditions, "Evicted")
    preempted = evicted is not None and evicted.get("reason") == "Preempted"
    return {
        str(meta.get("namespace") or ""): QueueState(
            trial=str(owner.get("name")),
            admitted=_condition_true(conditions, "Admitted") is not None,
            message=str(reserved.get("message") or "") if waiting and reserved else "",
            cluster_queue=str((status.get("admission") or {}).get("clusterQueue") or ""),
            preempted=str(evicted.get("message") or "Preempted") if preempted and evicted else "",
        )
    }


def with_queue(jobs: Iterable[JobState], queue: Iterable[QueueState]) -> list[JobState]:
    """The MPIJobs, each suspended one that Kueue holds back carrying Kueue's reason: QUEUED
    (waits for quota to free), NEVER_ADMITTED (asks for more than the queue can ever give) or
    PREEMPTED (ran, was evicted for a workload of higher priority, waits to be readmitted)."""
    held = {q.trial: q for q in queue if not q.admitted and (q.message or q.preempted)}
    out = []
    for job in jobs:
        q = held.get(job.trial)
        if job.phase is JobPhase.SUSPENDED and q is not None:
            if NEVER_FITS in q.message:
                out.append(replace(job, reason=NEVER_ADMITTED, message=q.message))
            elif q.preempted:
                waiting = f"; {KUEUE_WAITING}: {q.message}" if q.message else ""
                out.append(replace(job, reason=PREEMPTED, message=f"{q.preempted}{waiting}"))
            else:
                out.append(replace(job, reason=QUEUED, message=q.message))
        else:
            out.append(job)
    return out


# ---------------------------------------------------------------------------------- validity


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


# ------------------------------------------------------------------------------------ trials


def trial_body(trial: PlannedTrial, namespace: str, owner: Mapping[str, Any]) -> dict[str, Any]:
    """The ScaleTrial object of one planned grid point, owned by the experiment."""
    meta = owner.get("metadata") or {}
    return {
        "apiVersion": owner.get("apiVersion", "scalelab.dev/v1alpha1"),
        "kind": "ScaleTrial",
        "metadata": {
            "name": trial.name,
            "namespace": namespace,
            "labels": trial_labels(trial),
            "ownerReferences": [
                {
                    "apiVersion": owner.get("apiVersion", "scalelab.dev/v1alpha1"),
                    "kind": "ScaleExperiment",
                    "name": meta.get("name"),
                    "uid": meta.get("uid"),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": trial.spec.model_dump(by_alias=True, mode="json", exclude_none=True),
    }


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def generation_of(body: Mapping[str, Any]) -> int:
    """An object's metadata.generation (1 where the API server has not set one)."""
    return int((body.get("metadata") or {}).get("generation") or 1)


def now_rfc3339(now: float | None = None) -> str:
    """RFC 3339 UTC time, second precision (metav1.Time's wire format)."""
    return datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


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
        finished = _parse_time(job.completion_time)
        if finished is not None and now - finished > RESULT_GRACE_SECONDS:
            return TrialPhase.FAILED, "NoResult: the trainer exited 0 but never reported a result"
        return TrialPhase.RUNNING, "finished; waiting for the trainer's result"
    if job.phase is JobPhase.SUSPENDED:
        if job.reason == NEVER_ADMITTED:
            return TrialPhase.SKIPPED, f"Kueue can never admit it: {job.message}"
        if job.reason == QUEUED:
            return TrialPhase.PENDING, f"{KUEUE_WAITING}: {job.message}"
        if job.reason == PREEMPTED:  # its pods are gone; the trainer starts over when readmitted
            return TrialPhase.PENDING, f"{KUEUE_PREEMPTED}: {job.message}"
        return TrialPhase.PENDING, f"MPIJob suspended ({job.reason or 'queued'})"
    if job.phase is JobPhase.RUNNING:
        return TrialPhase.RUNNING, ""
    return TrialPhase.PENDING, LAUNCHED


def _row(
    planned: PlannedTrial, phase: TrialPhase, reason: str, trial: TrialState | None
) -> ResultRow:
    result = read_trial_result(trial.result if trial is not None else None)
    measured: dict[str, Any] = {}
    if result is not None:
        measured = result.model_dump(
            include={
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
            }
        )
    if phase is TrialPhase.PRUNED and trial is not None:  # what it spent before it was stopped
        measured["seconds"] = trial.training_seconds
    return ResultRow(
        trial=planned.name,
        batch_size=planned.batch_size,
        gpus=planned.gpus,
        repeat=planned.repeat,
        phase=phase,
        reason=reason,
        pruned=phase in (TrialPhase.SKIPPED, TrialPhase.PRUNED)
        and reason.startswith(adaptive.PREFIX),
        **measured,
    )


# ---------------------------------------------------------------------------------- decisions


@dataclass
class Memory:
    """What this process wrote recently, until the watches (indexes) show it (per experiment)."""

    launched: set[str] = field(default_factory=set)
    created: dict[str, str] = field(default_factory=dict)  # trial name → uid
    written: dict[str, tuple[TrialPhase, str]] = field(default_factory=dict)
    stalled: set[str] = field(default_factory=set)  # trials already reported as stalled
    missing: set[str] = field(default_factory=set)  # prerequisites already reported missing
    #: trial name → (what its row was built from, the row): finished trials' rows, reused
    rows: dict[str, tuple[tuple[Any, ...], ResultRow]] = field(default_factory=dict)


@dataclass(frozen=True)
class TrialEvent:
    """An Event whose object is one ScaleTrial (kubectl describe st shows it)."""

    trial: str
    uid: str
    type: str
    reason: str
    message: str


@dataclass
class Actions:
    """Everything one reconciliation asks the API for, in order."""

    create_trials: list[PlannedTrial] = field(default_factory=list)
    #: (trial, trial uid); uid "" for a trial created in the same pass (apply learns it then)
    launch: list[tuple[PlannedTrial, str]] = field(default_factory=list)
    delete_jobs: list[str] = field(default_factory=list)  # MPIJobs of trials Skipped late
    trial_status: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → status patch
    experiment_status: dict[str, Any] | None = None
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    trial_events: list[TrialEvent] = field(default_factory=list)  # Events on one ScaleTrial


@dataclass(frozen=True)
class Usage:
    """GPUs of one experiment's trials by state (for the operator's metrics)."""

    requested: int = 0  # trials with an MPIJob that has not finished
    running: int = 0  # of those, MPIJob Running
    queued: int = 0  # runnable trials not admitted yet
    suspended: int = 0  # of the requested, MPIJob suspended (held by Kueue)


@dataclass
class Decision:
    """The result of one reconciliation: what to do, and what it saw."""

    actions: Actions
    phases: dict[str, TrialPhase]
    usage: Usage
    rows: list[ResultRow]
    status: dict[str, Any]
    stalled: list[str] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)


def _conditions(
    previous: Sequence[Mapping[str, Any]], wanted: Sequence[Condition], generation: int, now: str
) -> list[dict[str, Any]]:
    """Kubernetes-style conditions; lastTransitionTime moves only when status flips."""
    old = {c.get("type"): c for c in previous}
    out = []
    for c in wanted:
        prior = old.get(c.type)
        changed = prior is None or prior.get("status") != c.status.value
        stamp = now if changed else prior.get("lastTransitionTime") or now  # type: ignore[union-attr]
        out.append(
            c.model_copy(
                update={"last_transition_time": stamp, "observed_generation": generation}
            ).model_dump(by_alias=True, mode="json", exclude_none=True)
        )
    return out


def _first_named(names: Sequence[str]) -> str:
    """The first FAILED_NAMED names, comma-separated, then how many more there are."""
    more = f" and {len(names) - FAILED_NAMED} more" if len(names) > FAILED_NAMED else ""
    return ", ".join(names[:FAILED_NAMED]) + more


def ready_condition(trials: Sequence[PlannedTrial]) -> Condition:
    """Ready=True once the sweep is valid and planned."""
    skipped = sum(t.skipped for t in trials)
    return Condition(
        type="Ready",
        status=ConditionStatus.TRUE,
        reason="Planned",
        message=f"{len(trials)} trials planned, {skipped} skipped",
    )


def invalid_status(
    message: str, previous: Mapping[str, Any] | None, generation: int, now: str
) -> dict[str, Any]:
    """The status of an experiment the operator refuses: Failed, Ready=False InvalidSpec."""
    wanted = [
        Condition(type="Ready", status=ConditionStatus.FALSE, reason="InvalidSpec", message=message)
    ]
    return {
        "phase": ExperimentPhase.FAILED.value,
        "observedGeneration": generation,
        "conditions": _conditions(
            (previous or {}).get("conditions") or [], wanted, generation, now
        ),
    }


def is_active(status: Mapping[str, Any] | None) -> bool:
    """True for a planned experiment that has not finished (its reconcile timer runs)."""
    status = status or {}
    if status.get("phase") in (ExperimentPhase.SUCCEEDED, ExperimentPhase.FAILED):
        return False
    ready = _condition_true(status.get("conditions") or [], "Ready")
    return ready is not None


@dataclass(frozen=True)
class _Seen:
    """The trials and MPIJobs one pass sees, by trial name, that belong to this experiment."""

    trials: dict[str, TrialState]
    jobs: dict[str, JobState]

    @classmethod
    def owned(cls, uid: str, trials: Iterable[TrialState], jobs: Iterable[JobState]) -> _Seen:
        """Objects left by an earlier experiment of the same name (deleted, not yet garbage
        collected) belong to another owner: invisible here until they are gone (creates get 409
        meanwhile)."""
        by_trial = {t.name: t for t in trials if t.owner in (None, uid)}
        by_job = {
            j.trial: j
            for j in jobs
            if j.owner is None or (j.trial in by_trial and by_trial[j.trial].uid == j.owner)
        }
        return cls(by_trial, by_job)


Phases = dict[str, tuple[TrialPhase, str]]


def decide(  # noqa: PLR0917 - the inputs of one pass, all required
    experiment: ScaleExperiment,
    body: Mapping[str, Any],
    trials: Iterable[TrialState],
    jobs: Iterable[JobState],
    memory: Memory,
    now: float | None = None,
    planned: Sequence[PlannedTrial] | None = None,
    stall_seconds: float = 0.0,
    missing: Sequence[Missing] = (),
) -> Decision:
    """One reconciliation of a planned experiment, in five steps: create the missing trials,
    read each trial's phase, admit trials into free capacity, patch changed trial statuses, and
    write the experiment's status. A trial that Kueue can never admit is Skipped and its
    suspended MPIJob deleted (it would run, unobserved, if the queue's quota grew later).

    A Running trial whose rank 0 has not reported progress (or, before its first report, that
    started) more than `stall_seconds` ago is flagged stalled: an Event once, a TrialsStalled
    condition while it lasts, a metric. Hung collectives leave MPIJobs Running forever otherwise.
    With `missing` prerequisites nothing is launched and the experiment says what to install.
    """
    now = time.time() if now is None else now
    planned = list(planned if planned is not None else plan(experiment))
    seen = _Seen.owned(str((body.get("metadata") or {}).get("uid") or ""), trials, jobs)
    actions = Actions()
    uids = create_missing_trials(planned, seen, memory, actions)
    phases = observe_phases(planned, seen, memory, now)
    plan_note = prune(experiment, planned, seen, memory, phases)
    actions.delete_jobs = [
        p.name
        for p in planned
        if p.name in seen.jobs and phases[p.name][0] in (TrialPhase.SKIPPED, TrialPhase.PRUNED)
    ]
    blocking = [m for m in missing if m.blocks]
    if blocking:
        admission = hold(experiment, planned, seen, memory, phases, blocking)
    else:
        admission = admit(experiment, planned, seen, memory, uids, phases, actions)
    patch_trial_statuses(planned, seen, memory, uids, phases, now_rfc3339(now), actions)
    final = {name: phase for name, (phase, _) in phases.items()}
    rows = result_rows(experiment, planned, seen, phases, memory)
    stalled = _stalled(planned, final, seen.trials, now, stall_seconds)
    usage = replace(
        admission,
        running=_gpus_in(experiment, planned, seen, final, JobPhase.RUNNING),
        suspended=_gpus_in(experiment, planned, seen, final, JobPhase.SUSPENDED),
    )
    blocked = Blocked(list(missing), admission.requested == 0)
    status = experiment_status(
        experiment, body, planned, final, rows, (stalled, stall_seconds), blocked, memory, now,
        actions, usage, plan_note,
    )  # fmt: skip
    return Decision(
        actions=actions,
        phases=final,
        usage=usage,
        rows=rows,
        status=status,
        stalled=stalled,
        missing=list(missing),
    )


def _gpus_in(
    experiment: ScaleExperiment,
    planned: Sequence[PlannedTrial],
    seen: _Seen,
    phases: Mapping[str, TrialPhase],
    state: JobPhase,
) -> int:
    """GPUs of the unfinished trials whose MPIJob is in `state`."""
    return sum(
        devices_needed(experiment, p.gpus)
        for p in planned
        if (j := seen.jobs.get(p.name)) is not None
        and j.phase is state
        and phases[p.name] not in FINISHED_TRIAL_PHASES
    )


def create_missing_trials(
    planned: Sequence[PlannedTrial], seen: _Seen, memory: Memory, actions: Actions
) -> dict[str, str]:
    """Step 1: ask for the trials that should exist and don't (first pass, or someone deleted
    one); return the uid of every trial that exists (seen, or created by this process)."""
    uids: dict[str, str] = {}
    for p in planned:
        trial = seen.trials.get(p.name)
        if trial is not None:
            uids[p.name] = trial.uid
            memory.created.pop(p.name, None)
        elif p.name in memory.created:
            uids[p.name] = memory.created[p.name]
        else:
            actions.create_trials.append(p)
    return uids


def observe_phases(
    planned: Sequence[PlannedTrial], seen: _Seen, memory: Memory, now: float
) -> Phases:
    """Step 2: every trial's phase and reason from its MPIJob and its reported result."""
    phases: Phases = {}
    for p in planned:
        job = seen.jobs.get(p.name)
        if job is not None:
            memory.launched.discard(p.name)
        phases[p.name] = trial_phase(p, seen.trials.get(p.name), job, now)
        if job is None and p.name in memory.launched and phases[p.name][0] is TrialPhase.PENDING:
            phases[p.name] = (TrialPhase.PENDING, LAUNCHED)
    return phases


def prune(
    experiment: ScaleExperiment,
    planned: Sequence[PlannedTrial],
    seen: _Seen,
    memory: Memory,
    phases: Phases,
) -> Condition | None:
    """Step 2½, strategy adaptive only: trials wait for the pilot, then those its B_simple
    places out of range (or above a diverged batch) become Skipped with the reason, and a
    running trial that can no longer enter the Pareto front becomes Pruned (decide deletes its
    MPIJob); returns the AdaptivePlan condition that says where the sweep stands."""
    if not adaptive.is_adaptive(experiment):
        return None
    started = {p.name for p in planned if p.name in memory.launched or p.name in seen.jobs}
    current = {
        name: TrialPhase.RUNNING if name in started and phase is TrialPhase.PENDING else phase
        for name, (phase, _) in phases.items()
    }
    rows = {
        p.name: _row(p, *phases[p.name], seen.trials.get(p.name))
        for p in planned
        if phases[p.name][0] in FINISHED_TRIAL_PHASES
    }
    v = adaptive.verdicts(experiment, planned, rows, current)
    for name in v.waiting:
        phases[name] = (TrialPhase.PENDING, f"{WAITING_FOR_PILOT} {v.pilot}")
    for name, reason in v.skip.items():
        phases[name] = (TrialPhase.SKIPPED, reason)
    for p in planned:
        trial = seen.trials.get(p.name)
        if phases[p.name][0] is TrialPhase.RUNNING and trial is not None:
            why = adaptive.dominated(experiment, p, trial.training_seconds, rows)
            if why is not None:
                phases[p.name] = (TrialPhase.PRUNED, why)  # its MPIJob goes (delete_jobs)
    if v.prediction is not None:
        pred = v.prediction
        return Condition(
            type="AdaptivePlan",
            status=ConditionStatus.TRUE,
            reason="Placed",
            message=f"pilot {pred.trial}: B_simple {pred.value:.3g}; batches "
            f"{pred.low:.3g}–{pred.high:.3g} run",
        )
    if v.note:
        return Condition(
            type="AdaptivePlan", status=ConditionStatus.FALSE, reason="NoPrediction",
            message=v.note,
        )  # fmt: skip
    return Condition(
        type="AdaptivePlan",
        status=ConditionStatus.FALSE,
        reason="PilotRunning",
        message=f"waiting for the pilot {v.pilot} to measure B_simple",
    )


def admit(  # noqa: PLR0917 - one step of decide, its state passed explicitly
    experiment: ScaleExperiment,
    planned: Sequence[PlannedTrial],
    seen: _Seen,
    memory: Memory,
    uids: Mapping[str, str],
    phases: Phases,
    actions: Actions,
) -> Usage:
    """Step 3: launch trials under maxConcurrentTrials and maxGPUs (capacity-aware: a smaller
    trial that fits goes ahead of a bigger one that does not); GPUs requested and queued. A trial
    this pass creates is launched in it too, its uid "" until apply has it (the first wave goes
    out with the first pass, not one timer interval later)."""
    execution = experiment.spec.execution
    creating = {p.name for p in actions.create_trials}

    def holds_slot(name: str) -> bool:
        unfinished = phases[name][0] not in FINISHED_TRIAL_PHASES
        return unfinished and (name in memory.launched or seen.jobs.get(name) is not None)

    active = [p for p in planned if holds_slot(p.name)]
    used = sum(devices_needed(experiment, p.gpus) for p in active)
    queued = 0
    for p in planned:
        if p.skipped or holds_slot(p.name) or phases[p.name][0] in FINISHED_TRIAL_PHASES:
            continue
        if phases[p.name][1].startswith(WAITING_FOR_PILOT):
            continue  # strategy adaptive: not before the pilot has measured B_simple
        need = devices_needed(experiment, p.gpus)
        if (
            (p.name in uids or p.name in creating)
            and len(active) < execution.max_concurrent_trials
            and used + need <= execution.max_gpus
        ):
            actions.launch.append((p, uids.get(p.name, "")))
            memory.launched.add(p.name)
            active.append(p)
            used += need
            phases[p.name] = (TrialPhase.PENDING, LAUNCHED)
        else:
            queued += need
    return Usage(requested=used, queued=queued)


def hold(  # noqa: PLR0917 - step 3 of decide when prerequisites are missing
    experiment: ScaleExperiment,
    planned: Sequence[PlannedTrial],
    seen: _Seen,
    memory: Memory,
    phases: Phases,
    missing: Sequence[Missing],
) -> Usage:
    """Step 3 without the cluster's prerequisites: launch nothing; every trial waiting for a
    slot says what is missing instead, and so does a launched one whose pods cannot start
    (`Missing.trials`: its image cannot be pulled)."""
    why = BLOCKED + "; ".join(m.message for m in missing)
    used = queued = 0
    for p in planned:
        phase, reason = phases[p.name]
        if phase in FINISHED_TRIAL_PHASES:
            continue
        need = devices_needed(experiment, p.gpus)
        if p.name in memory.launched or seen.jobs.get(p.name) is not None:
            used += need
            held = [m.message for m in missing if p.name in m.trials]
            if held and phase is TrialPhase.PENDING and reason == LAUNCHED:
                phases[p.name] = (TrialPhase.PENDING, BLOCKED + "; ".join(held))
        elif phase is TrialPhase.PENDING and reason == WAITING:
            phases[p.name] = (TrialPhase.PENDING, why)
            queued += need
    return Usage(requested=used, queued=queued)


#: What a Pending trial without a reason is doing: waiting for a slot, or launched and waiting for
#: its pods (its MPIJob says which). Not worth a write of its own, of 3 per trial in all.
QUIET = frozenset({WAITING, LAUNCHED})


def _reason_news(old: str, new: str) -> bool:
    """A Pending trial's reason is rewritten when it enters or leaves a missing prerequisite, when
    Kueue says why it waits, or when a trial without a reason gets one beyond the QUIET ones
    (other reason changes ride along with the next phase)."""
    return old != new and (
        old.startswith(BLOCKED)
        or new.startswith((BLOCKED, KUEUE_WAITING, KUEUE_PREEMPTED))
        or (not old and new not in QUIET)
    )


def _blocked_conditions(reason: str, stamp: str) -> list[dict[str, Any]]:
    """A trial's PrerequisitesMet=False while missing prerequisites hold it; [] once not."""
    if not reason.startswith(BLOCKED):
        return []
    condition = Condition(
        type="PrerequisitesMet",
        status=ConditionStatus.FALSE,
        reason="PrerequisitesMissing",
        message=reason.removeprefix(BLOCKED),
        last_transition_time=stamp,
    )
    return [condition.model_dump(by_alias=True, mode="json", exclude_none=True)]


def patch_trial_statuses(  # noqa: PLR0917 - one step of decide, its state passed explicitly
    planned: Sequence[PlannedTrial],
    seen: _Seen,
    memory: Memory,
    uids: Mapping[str, str],
    phases: Phases,
    stamp: str,
    actions: Actions,
) -> None:
    """Step 4: a status patch per trial whose phase changed, once per transition (the index may
    lag behind our own writes; a reason rides along with its phase). Kueue's reason for holding
    a trial is written when it changes too: it is what the user must read, and it comes after
    the trial turned Pending."""
    for p in planned:
        if p.name not in uids:
            continue
        phase, reason = phases[p.name]
        trial = seen.trials.get(p.name)
        # A trial the index does not show yet was just created: it shows the API's default.
        shown = (trial.phase, trial.reason) if trial is not None else (TrialPhase.PENDING, "")
        if shown[0] is phase and not _reason_news(shown[1], reason):
            memory.written.pop(p.name, None)
            continue
        written = memory.written.get(p.name)
        if written is not None and written[0] is phase and not _reason_news(written[1], reason):
            continue
        patch: dict[str, Any] = {"phase": phase.value, "reason": reason}
        was = written[1] if written is not None else trial.reason if trial is not None else ""
        if reason.startswith(BLOCKED) or was.startswith(BLOCKED):
            patch["conditions"] = _blocked_conditions(reason, stamp)
        if reason.startswith(BLOCKED) and reason != was:  # held back: the trial's own Event
            why = reason.removeprefix(BLOCKED)
            actions.trial_events.append(
                TrialEvent(p.name, uids[p.name], "Warning", "PrerequisitesMissing", why)
            )
        if phase is TrialPhase.RUNNING and (trial is None or not trial.start_time):
            patch["startTime"] = stamp
        if phase in FINISHED_TRIAL_PHASES and phase is not TrialPhase.SKIPPED:
            patch["completionTime"] = stamp
            if phase is TrialPhase.FAILED:
                actions.events.append(("Warning", "TrialFailed", f"{p.name}: {reason}"))
        actions.trial_status[p.name] = patch
        memory.written[p.name] = (phase, reason)


def result_rows(
    experiment: ScaleExperiment,
    planned: Sequence[PlannedTrial],
    seen: _Seen,
    phases: Phases,
    memory: Memory,
) -> list[ResultRow]:
    """The results table: one row per finished trial, with scaling efficiency. A row is built
    again only when its trial's phase, reason or result changed (`memory.rows`): reading 1,000
    results every pass was half of a pass."""
    rows = []
    for p in planned:
        phase, reason = phases[p.name]
        if phase not in FINISHED_TRIAL_PHASES:
            continue
        trial = seen.trials.get(p.name)
        key = (phase, reason, *((trial.result, trial.training_seconds) if trial else (None, None)))
        cached = memory.rows.get(p.name)
        if cached is None or cached[0] != key:
            cached = memory.rows[p.name] = (key, _row(p, phase, reason, trial))
        rows.append(cached[1])
    weak = experiment.spec.sweep.batch_scope is BatchScope.PER_PROCESS
    return aggregate.with_scaling(rows, weak=weak)


def _progress_conditions(
    counts: TrialCounts, measured: int, stalled: Sequence[str], stall_seconds: float
) -> list[Condition]:
    """Complete (True once no trial is pending or running) and, while any, TrialsStalled."""
    finished = counts.total - counts.pending - counts.running
    if counts.pending == 0 and counts.running == 0:
        outcome = ExperimentPhase.SUCCEEDED if measured else ExperimentPhase.FAILED
        complete = Condition(
            type="Complete",
            status=ConditionStatus.TRUE,
            reason=outcome.value,
            message=f"{measured} of {counts.total} trials measured"
            if measured
            else "no trial produced a measurement",
        )
    else:
        complete = Condition(
            type="Complete",
            status=ConditionStatus.FALSE,
            reason="TrialsRunning",
            message=f"{finished}/{counts.total} trials finished, {counts.running} running",
        )
    if not stalled:
        return [complete]
    return [
        complete,
        Condition(
            type="TrialsStalled",
            status=ConditionStatus.TRUE,
            reason="NoProgress",
            message=f"no progress for over {stall_seconds:.0f} s: {_first_named(stalled)}",
        ),
    ]


def _failed_conditions(rows: Sequence[ResultRow]) -> list[Condition]:
    """TrialsFailed naming the first failures, while any trial failed."""
    failed = [r for r in rows if r.phase is TrialPhase.FAILED]
    if not failed:
        return []
    named = _first_named([f"{r.trial} ({compact.cut(r.reason)})" for r in failed])
    return [
        Condition(
            type="TrialsFailed",
            status=ConditionStatus.TRUE,
            reason="TrialFailed",
            message=f"{len(failed)} failed: {named}",
        )
    ]


@dataclass(frozen=True)
class Blocked:
    """The prerequisites a pass found missing, and whether nothing holds an MPIJob meanwhile."""

    missing: list[Missing]
    idle: bool


def _prerequisite_conditions(blocked: Blocked, memory: Memory, actions: Actions) -> list[Condition]:
    """PrerequisitesMet=False while anything is missing; a Warning Event when it goes missing."""
    for m in blocked.missing:
        if m.key not in memory.missing:
            actions.events.append(("Warning", m.reason, m.message))
    memory.missing = {m.key for m in blocked.missing}
    if not blocked.missing:
        return []
    return [
        Condition(
            type="PrerequisitesMet",
            status=ConditionStatus.FALSE,
            reason=blocked.missing[0].reason,
            message="; ".join(m.message for m in blocked.missing),
        )
    ]


def experiment_status(  # noqa: PLR0917 - the last step of decide, its state passed explicitly
    experiment: ScaleExperiment,
    body: Mapping[str, Any],
    planned: Sequence[PlannedTrial],
    phases: Mapping[str, TrialPhase],
    rows: Sequence[ResultRow],
    stalls: tuple[Sequence[str], float],
    blocked: Blocked,
    memory: Memory,
    now: float,
    actions: Actions,
    usage: Usage,
    plan_note: Condition | None = None,
) -> dict[str, Any]:
    """Step 5: the experiment's status (phase, conditions, counts, the top rows within the budget
    of kube/compact.py, recommendation, GPUs); a
    patch and Events only when it changed. Pending while missing prerequisites hold every
    trial back."""
    stalled, stall_seconds = stalls
    counts = aggregate.trial_counts(phases.values())
    measured = [r for r in rows if r.phase in aggregate.MEASURED]
    done = counts.pending == 0 and counts.running == 0
    if done:
        outcome = ExperimentPhase.SUCCEEDED if measured else ExperimentPhase.FAILED
    elif any(m.blocks for m in blocked.missing) and blocked.idle and counts.running == 0:
        outcome = ExperimentPhase.PENDING
    else:
        outcome = ExperimentPhase.RUNNING
    for name in sorted(set(stalled) - memory.stalled):
        actions.events.append(
            ("Warning", "TrialStalled", f"{name}: no progress for over {stall_seconds:.0f} s")
        )
    memory.stalled = set(stalled)
    wanted = [
        ready_condition(planned),
        *_progress_conditions(counts, len(measured), stalled, stall_seconds),
        *_failed_conditions(rows),
        *([plan_note] if plan_note is not None else []),
        *_prerequisite_conditions(blocked, memory, actions),
    ]
    recommendation = critical = best = None
    if measured:
        best = aggregate.recommend(
            rows,
            experiment.spec.execution.max_gpus,
            experiment.spec.training.target_loss is not None,
            {p.name: p.spec.learning_rate for p in planned},
        )
    shown = compact.top_rows(rows, best)  # the rest stay on their ScaleTrials
    if best is not None:
        weak = experiment.spec.sweep.batch_scope is BatchScope.PER_PROCESS
        recommendation = compact.compact_recommendation(best).model_dump(
            by_alias=True, mode="json", exclude_defaults=True
        )
        critical = compact.compact_critical(aggregate.analysis(rows, weak), shown).model_dump(
            by_alias=True, mode="json", exclude_defaults=True
        )
    previous = body.get("status") or {}
    generation = generation_of(body)
    stamp = now_rfc3339(now)
    conditions = _conditions(previous.get("conditions") or [], wanted, generation, stamp)
    status = {
        "phase": outcome.value,
        "observedGeneration": generation,
        "conditions": conditions,
        "trials": counts.model_dump(by_alias=True, mode="json"),
        "results": [r.model_dump(by_alias=True, mode="json", exclude_defaults=True) for r in shown],
        "omittedResults": len(rows) - len(shown),
        "recommendation": recommendation,
        "criticalBatch": critical,
        "gpus": asdict(usage),
        "gpuSeconds": sum(devices_needed(experiment, r.gpus) * (r.seconds or 0) for r in rows),
    }
    if any(previous.get(k) != v for k, v in status.items()):
        actions.experiment_status = status
        if done and previous.get("phase") != outcome.value:
            kind = "Normal" if outcome is ExperimentPhase.SUCCEEDED else "Warning"
            actions.events.append((kind, f"Experiment{outcome.value}", conditions[1]["message"]))
    return status


def _stalled(
    planned: Sequence[PlannedTrial],
    phases: Mapping[str, TrialPhase],
    trials: Mapping[str, TrialState],
    now: float,
    stall_seconds: float,
) -> list[str]:
    if stall_seconds <= 0:
        return []
    out = []
    for p in planned:
        seen = trials.get(p.name)
        if phases[p.name] is not TrialPhase.RUNNING or seen is None:
            continue
        last = _parse_time(seen.updated_at) or _parse_time(seen.start_time)
        if last is not None and now - last > stall_seconds:
            out.append(p.name)
    return out
