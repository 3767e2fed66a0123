"""A ScaleExperiment's status: its phase (one outcome rule, `outcome`, decides both the phase
and the Complete condition), conditions, trial counts, the top rows of its results, the
recommendation and its GPUs; and the status of an experiment the operator refuses.

The experiment is Succeeded when every trial has finished and at least one produced a
measurement (Succeeded or Diverged), Failed when none did; a TrialsFailed condition names the
failures either way. It is Pending while missing prerequisites (kube/prerequisites.py) hold
every trial back.

Called by kube/decide.py (the last step of every pass, `experiment_status`) and
kube/operations.py (`invalid_status`, `is_active`, `generation_of`); kube/handlers.py asks
`is_active` which experiments the reconcile timer runs for. Pure.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from scalelab import aggregate
from scalelab.api import (
    BatchScope,
    Condition,
    ConditionType,
    ExperimentPhase,
    ResultRow,
    TrialCounts,
)
from scalelab.kube import compact, conditions
from scalelab.kube.observed import condition_true
from scalelab.kube.state import Found, Pass
from scalelab.planner import devices_needed


def generation_of(body: Mapping[str, Any]) -> int:
    """An object's metadata.generation (1 where the API server has not set one)."""
    return int((body.get("metadata") or {}).get("generation") or 1)


def now_rfc3339(now: float | None = None) -> str:
    """RFC 3339 UTC time, second precision (metav1.Time's wire format)."""
    return datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def outcome(counts: TrialCounts, measured: int) -> ExperimentPhase | None:
    """How the experiment ended, once no trial is pending or running: Succeeded when at least
    one trial was measured, Failed when none was; None while trials remain."""
    if counts.pending or counts.running:
        return None
    return ExperimentPhase.SUCCEEDED if measured else ExperimentPhase.FAILED


def experiment_status(p: Pass, found: Found) -> dict[str, Any]:
    """Step 5 of a pass: the experiment's status (phase, conditions, counts, the top rows within
    the budget of kube/compact.py, recommendation, GPUs); a patch and Events only when it
    changed."""
    counts = aggregate.trial_counts(found.phases.values())
    measured = [r for r in found.rows if r.phase in aggregate.MEASURED]
    ended = outcome(counts, len(measured))
    phase = ended or _unfinished_phase(p, found, counts)
    complete = conditions.complete(counts, len(measured), ended)
    wanted = [
        conditions.ready(p.planned),
        complete,
        *_stalled_conditions(p, found.stalled),
        *conditions.failed(found.rows),
        *([found.plan_note] if found.plan_note is not None else []),
        *_prerequisite_conditions(p),
    ]
    previous = p.body.get("status") or {}
    generation = generation_of(p.body)
    stamp = now_rfc3339(p.now)
    status = {
        "phase": phase.value,
        "observedGeneration": generation,
        "conditions": conditions.stamped(
            previous.get("conditions") or [], wanted, generation, stamp
        ),
        "trials": counts.model_dump(by_alias=True, mode="json"),
        **_results(p, found.rows, measured),
        "gpus": asdict(found.usage),
        "gpuSeconds": sum(
            devices_needed(p.experiment, r.gpus) * (r.seconds or 0) for r in found.rows
        ),
        "deviceSeconds": sum(p.spent().values()),
    }
    if any(previous.get(k) != v for k, v in status.items()):
        p.actions.experiment_status = status
        if ended is not None and previous.get("phase") != ended.value:
            kind = "Normal" if ended is ExperimentPhase.SUCCEEDED else "Warning"
            p.actions.events.append((kind, f"Experiment{ended.value}", complete.message))
    return status


def _unfinished_phase(p: Pass, found: Found, counts: TrialCounts) -> ExperimentPhase:
    """Pending while missing prerequisites hold every trial back (none holds an MPIJob and none
    runs), else Running."""
    idle = found.usage.requested == 0
    if p.blocking and idle and counts.running == 0:
        return ExperimentPhase.PENDING
    return ExperimentPhase.RUNNING


def _stalled_conditions(p: Pass, stalled: Sequence[str]) -> list[Condition]:
    """TrialsStalled while any trial is stalled; a Warning Event when a trial becomes stalled."""
    for name in sorted(set(stalled) - p.memory.stalled):
        p.actions.events.append(
            ("Warning", "TrialStalled", f"{name}: no progress for over {p.stall_seconds:.0f} s")
        )
    p.memory.stalled = set(stalled)
    return conditions.stalled(stalled, p.stall_seconds)


def _prerequisite_conditions(p: Pass) -> list[Condition]:
    """PrerequisitesMet=False while anything is missing; a Warning Event when it goes missing."""
    for m in p.missing:
        if m.key not in p.memory.missing:
            p.actions.events.append(("Warning", m.reason, m.message))
    p.memory.missing = {m.key for m in p.missing}
    if not p.missing:
        return []
    message = "; ".join(m.message for m in p.missing)
    return [conditions.prerequisites_missing(p.missing[0].reason, message)]


def _results(p: Pass, rows: Sequence[ResultRow], measured: Sequence[ResultRow]) -> dict[str, Any]:
    """The status's results: the top rows (the rest stay on their ScaleTrials), how many were
    left out, the recommendation and the critical batch."""
    recommendation = critical = best = None
    if measured:
        spec = p.experiment.spec
        best = aggregate.recommend(
            rows,
            spec.execution.max_gpus,
            spec.training.target_loss is not None,
            {t.name: t.spec.learning_rate for t in p.planned},
            objective=spec.objective,
            cpu=spec.resources.gpus_per_process == 0,
        )
    shown = compact.top_rows(rows, best)
    if best is not None:
        weak = p.experiment.spec.sweep.batch_scope is BatchScope.PER_PROCESS
        recommendation = compact.compact_recommendation(best).model_dump(
            by_alias=True, mode="json", exclude_defaults=True
        )
        critical = compact.compact_critical(aggregate.analysis(rows, weak), shown).model_dump(
            by_alias=True, mode="json", exclude_defaults=True
        )
    return {
        "results": [r.model_dump(by_alias=True, mode="json", exclude_defaults=True) for r in shown],
        "omittedResults": len(rows) - len(shown),
        "recommendation": recommendation,
        "criticalBatch": critical,
    }


def invalid_status(
    message: str, previous: Mapping[str, Any] | None, generation: int, now: str
) -> dict[str, Any]:
    """The status of an experiment the operator refuses: Failed, Ready=False InvalidSpec."""
    wanted = [conditions.invalid(message)]
    return {
        "phase": ExperimentPhase.FAILED.value,
        "observedGeneration": generation,
        "conditions": conditions.stamped(
            (previous or {}).get("conditions") or [], wanted, generation, now
        ),
    }


def is_active(status: Mapping[str, Any] | None) -> bool:
    """True for a planned experiment that has not finished (its reconcile timer runs)."""
    status = status or {}
    if status.get("phase") in (ExperimentPhase.SUCCEEDED, ExperimentPhase.FAILED):
        return False
    return condition_true(status.get("conditions") or [], ConditionType.READY) is not None
