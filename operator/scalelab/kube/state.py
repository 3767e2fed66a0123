"""The values one reconciliation pass carries: what it starts from (`Pass`), what it remembers
between passes (`Memory`), what it asks the API for (`Actions`) and what it found (`Usage`,
`Decision`).

kube/decide.py builds a `Pass` and hands it to each of its steps (kube/status.py writes the
last one); kube/apply.py carries the `Actions` out; kube/operations.py keeps the `Memory` in
kopf's memo and reports the `Decision` to kube/metrics.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from scalelab.api import Condition, ResultRow, ScaleExperiment, TrialPhase
from scalelab.kube.observed import JobState, Missing, TrialState
from scalelab.planner import PlannedTrial

#: Every trial's phase and reason, by name, as a pass works them out.
Phases = dict[str, tuple[TrialPhase, str]]


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
    #: trial name → the status.deviceSeconds last written, until the trial index shows it
    spent: dict[str, float] = field(default_factory=dict)


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
    #: trial name → device-seconds of its run that ended in this pass (the patch adds them to its
    #: status.deviceSeconds; kube/operations.py counts them once written)
    spent: dict[str, float] = field(default_factory=dict)


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


@dataclass(frozen=True)
class Seen:
    """The trials and MPIJobs one pass sees, by trial name, that belong to this experiment."""

    trials: dict[str, TrialState]
    jobs: dict[str, JobState]

    @classmethod
    def owned(cls, uid: str, trials: Iterable[TrialState], jobs: Iterable[JobState]) -> Seen:
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


@dataclass(frozen=True)
class Pass:
    """One reconciliation of one experiment, handed to each step of kube/decide.py in turn.

    Its fields are never replaced; the steps fill the containers in order: `uids` (step 1: the
    uid of every trial that exists), `phases` (step 2 on: every trial's phase and reason, which
    later steps may change), `actions` (what to ask the API for) and `memory` (what this process
    wrote, kept between passes).
    """

    experiment: ScaleExperiment
    body: Mapping[str, Any]
    planned: Sequence[PlannedTrial]
    seen: Seen
    memory: Memory
    now: float
    stall_seconds: float = 0.0  # 0: no stall detection
    missing: Sequence[Missing] = ()  # prerequisites the cluster lacks
    actions: Actions = field(default_factory=Actions)
    uids: dict[str, str] = field(default_factory=dict)
    phases: Phases = field(default_factory=dict)

    @property
    def blocking(self) -> list[Missing]:
        """The missing prerequisites that hold every launch back."""
        return [m for m in self.missing if m.blocks]

    def spent(self, names: Iterable[str] | None = None) -> dict[str, float]:
        """Each trial's status.deviceSeconds (every planned one, or `names`): as the index shows
        it, or as this process last wrote it while the index lags (the sum only grows); a
        written value the index shows is forgotten."""
        out = {}
        for name in (t.name for t in self.planned) if names is None else names:
            trial = self.seen.trials.get(name)
            shown = (trial.device_seconds or 0.0) if trial is not None else 0.0
            written = self.memory.spent.get(name)
            if written is not None and shown >= written:
                del self.memory.spent[name]
            out[name] = max(shown, written or 0.0)
        return out


@dataclass(frozen=True)
class Found:
    """What the steps of a pass found, for the experiment's status (its last step)."""

    phases: Mapping[str, TrialPhase]  # every trial's final phase
    rows: Sequence[ResultRow]  # the results table
    stalled: Sequence[str]  # Running trials without progress for over stall_seconds
    usage: Usage
    plan_note: Condition | None = None  # AdaptivePlan, with strategy adaptive
