"""The conditions scalelab writes, built from plain values (their types: `ConditionType` in
the scalelab.api package, which says when each is True and when False), and `stamped`, which
turns the wanted ones into a status's conditions.

Called by kube/status.py (the experiment's conditions) and kube/decide.py (AdaptivePlan, and a
trial's PrerequisitesMet); pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from scalelab.adaptive import Verdicts
from scalelab.api import (
    Condition,
    ConditionStatus,
    ConditionType,
    ExperimentPhase,
    ResultRow,
    TrialCounts,
    TrialPhase,
)
from scalelab.kube import compact
from scalelab.planner import PlannedTrial

#: At most this many trials are named in the TrialsFailed and TrialsStalled condition messages.
FAILED_NAMED = 5


def stamped(
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


def first_named(names: Sequence[str]) -> str:
    """The first FAILED_NAMED names, comma-separated, then how many more there are."""
    more = f" and {len(names) - FAILED_NAMED} more" if len(names) > FAILED_NAMED else ""
    return ", ".join(names[:FAILED_NAMED]) + more


def ready(trials: Sequence[PlannedTrial]) -> Condition:
    """Ready=True once the sweep is valid and planned."""
    skipped = sum(t.skipped for t in trials)
    return Condition(
        type=ConditionType.READY,
        status=ConditionStatus.TRUE,
        reason="Planned",
        message=f"{len(trials)} trials planned, {skipped} skipped",
    )


def invalid(message: str) -> Condition:
    """Ready=False InvalidSpec: the operator refuses the spec; `message` says what to change."""
    return Condition(
        type=ConditionType.READY,
        status=ConditionStatus.FALSE,
        reason="InvalidSpec",
        message=message,
    )


def complete(counts: TrialCounts, measured: int, outcome: ExperimentPhase | None) -> Condition:
    """Complete: True with the experiment's `outcome` as its reason once it has one (no trial
    pending or running; kube/status.py decides which), False while trials remain."""
    if outcome is not None:
        return Condition(
            type=ConditionType.COMPLETE,
            status=ConditionStatus.TRUE,
            reason=outcome.value,
            message=f"{measured} of {counts.total} trials measured"
            if outcome is ExperimentPhase.SUCCEEDED
            else "no trial produced a measurement",
        )
    finished = counts.total - counts.pending - counts.running
    return Condition(
        type=ConditionType.COMPLETE,
        status=ConditionStatus.FALSE,
        reason="TrialsRunning",
        message=f"{finished}/{counts.total} trials finished, {counts.running} running",
    )


def stalled(names: Sequence[str], stall_seconds: float) -> list[Condition]:
    """TrialsStalled naming the first stalled trials, while any."""
    if not names:
        return []
    return [
        Condition(
            type=ConditionType.TRIALS_STALLED,
            status=ConditionStatus.TRUE,
            reason="NoProgress",
            message=f"no progress for over {stall_seconds:.0f} s: {first_named(names)}",
        )
    ]


def failed(rows: Sequence[ResultRow]) -> list[Condition]:
    """TrialsFailed naming the first failures, while any trial failed."""
    failures = [r for r in rows if r.phase is TrialPhase.FAILED]
    if not failures:
        return []
    named = first_named([f"{r.trial} ({compact.cut(r.reason)})" for r in failures])
    return [
        Condition(
            type=ConditionType.TRIALS_FAILED,
            status=ConditionStatus.TRUE,
            reason="TrialFailed",
            message=f"{len(failures)} failed: {named}",
        )
    ]


def prerequisites_missing(reason: str, message: str) -> Condition:
    """PrerequisitesMet=False: something the sweep (or one trial) needs is missing."""
    return Condition(
        type=ConditionType.PREREQUISITES_MET,
        status=ConditionStatus.FALSE,
        reason=reason,
        message=message,
    )


def adaptive_plan(verdicts: Verdicts) -> Condition:
    """AdaptivePlan (strategy adaptive): True once the pilot's B_simple placed the batches; False
    with the reason when the pilot gave no prediction, or while the pilot runs."""
    prediction, note = verdicts.prediction, verdicts.note
    if prediction is not None:
        return Condition(
            type=ConditionType.ADAPTIVE_PLAN,
            status=ConditionStatus.TRUE,
            reason="Placed",
            message=f"pilot {prediction.trial}: B_simple {prediction.value:.3g}; batches "
            f"{prediction.low:.3g}–{prediction.high:.3g} run",
        )
    if note:
        return Condition(
            type=ConditionType.ADAPTIVE_PLAN,
            status=ConditionStatus.FALSE,
            reason="NoPrediction",
            message=note,
        )
    return Condition(
        type=ConditionType.ADAPTIVE_PLAN,
        status=ConditionStatus.FALSE,
        reason="PilotRunning",
        message=f"waiting for the pilot {verdicts.pilot} to measure B_simple",
    )
