"""What each kopf handler does: snapshot the indexes, decide (kube/decide.py, pure), carry the
actions out in a worker thread (kube/apply.py), post Events, update metrics.
Each entry point takes the id of the kopf handler that called it (kube/handlers.py): the
`handler` label of the reconcile metrics.

Runs in kopf's event loop; the indexes are read there (kopf mutates them on the same loop), and
the synchronous API client (kube/rest.py) runs in a thread so one slow call never stalls the
watches.
Errors follow the house taxonomy: an invalid spec is a `kopf.PermanentError` plus a
Ready=False/InvalidSpec condition; an API failure is a `kopf.TemporaryError` retried later.

An experiment's results are archived (kube/archive.py) by the pass that finishes it, and on
RESUME of a finished one whose archive is missing (one that failed, or finished before this
version); the archive's name is deterministic, so replicas and restarts write it once.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, NoReturn, cast

import kopf
from lightkube import ApiError

from scalelab.api import (
    API_VERSION,
    FINISHED_TRIAL_PHASES,
    TRIAL_KIND,
    ExperimentPhase,
    ScaleExperiment,
)
from scalelab.kube import apply, queue, rest
from scalelab.kube.apply import NOT_FOUND, Kube
from scalelab.kube.archive import Archiver
from scalelab.kube.decide import decide
from scalelab.kube.metrics import OperatorMetrics, Snapshot, device_of
from scalelab.kube.observed import (
    QUEUED,
    InvalidSpecError,
    JobPhase,
    JobState,
    Key,
    Missing,
    TrialState,
    parse,
    with_queue,
)
from scalelab.kube.prerequisites import MPIJOB_API, Prerequisites
from scalelab.kube.settings import Config
from scalelab.kube.state import Decision, Memory, Usage
from scalelab.kube.status import generation_of, invalid_status, is_active, now_rfc3339
from scalelab.planner import PlannedTrial
from scalelab.planner import plan as plan_trials
from scalelab.results.model import result_row

RETRY_SECONDS = 5.0
FINISHED = (ExperimentPhase.SUCCEEDED, ExperimentPhase.FAILED)
#: The memo key set once a pass of this process finished the experiment.
FINISHED_HERE = "finished"


@dataclass
class Context:
    """What every handler needs, built once by `scalelab operator` and passed in kopf's memo."""

    kube: Kube
    config: Config
    metrics: OperatorMetrics
    accounts: set[str] = field(default_factory=set)  # namespaces with the trainer account
    archiver: Archiver = field(default_factory=Archiver)
    prerequisites: Prerequisites = field(init=False)

    def __post_init__(self) -> None:
        self.prerequisites = Prerequisites(self.config.prerequisites_recheck_seconds)


@dataclass(frozen=True)
class Indexes:
    """kopf's in-memory indexes a pass reads: trials and MPIJobs by (namespace, experiment),
    Kueue Workloads by namespace."""

    trials: Any
    jobs: Any
    workloads: Any

    def seen(self, key: Key) -> tuple[list[TrialState], list[JobState]]:
        """This experiment's trials and MPIJobs, suspended ones with Kueue's reason."""
        jobs = with_queue(self.jobs.get(key, []), self.workloads.get(key[0], []))
        return list(self.trials.get(key, [])), jobs


@dataclass
class PlanCache:
    """The parsed spec and plan of one generation (parsing 1,000 points every tick is waste)."""

    generation: int
    experiment: ScaleExperiment
    trials: list[PlannedTrial]


def context(memo: kopf.Memo) -> Context:
    """The operator context from a handler's memo."""
    ctx = memo["ctx"]
    assert isinstance(ctx, Context)
    return ctx


def _memory(memo: kopf.Memo) -> Memory:
    if "memory" not in memo:
        memo["memory"] = Memory()
    memory = memo["memory"]
    assert isinstance(memory, Memory)
    return memory


def _planned(memo: kopf.Memo, body: kopf.Body, *, keep: bool = True) -> PlanCache:
    """The plan of the body's generation: the cached one, else parsed (and cached if `keep`)."""
    generation = generation_of(body)
    cached = memo.get("plan")
    if isinstance(cached, PlanCache) and cached.generation == generation:
        return cached
    experiment = parse(body)
    fresh = PlanCache(generation, experiment, plan_trials(experiment))
    if keep:
        memo["plan"] = fresh
    return fresh


def _key(body: kopf.Body) -> Key:
    return (str(body.metadata.namespace), str(body.metadata.name))


async def _reject(ctx: Context, handler: str, body: kopf.Body, error: InvalidSpecError) -> NoReturn:
    namespace, name = _key(body)
    generation = generation_of(body)
    status = invalid_status(str(error), body.get("status"), generation, now_rfc3339())
    await _call(ctx, handler, apply.patch_experiment_status, ctx.kube, namespace, name, status)
    kopf.warn(body, reason="InvalidSpec", message=str(error))
    raise kopf.PermanentError(f"invalid spec: {error}")


async def plan(memo: kopf.Memo, body: kopf.Body, indexes: Indexes, handler: str) -> None:
    """PLAN/RESUME: validate once, ensure the trainer account, first reconciliation."""
    ctx = context(memo)
    status = body.get("status") or {}
    finished = status.get("phase") in (ExperimentPhase.SUCCEEDED, ExperimentPhase.FAILED)
    try:
        cache = _planned(memo, body, keep=not finished)  # a finished one is planned no more
    except InvalidSpecError as error:
        if finished:
            return  # refused before this operator started; the condition says why
        await _reject(ctx, handler, body, error)
    if finished:
        # Nothing to run, but the finished results go back into /metrics after a restart (an
        # error: kopf retries the resume).
        await _archive(ctx, handler, body)
        snapshot = await _finished_snapshot(ctx, handler, body, cache, indexes)
        ctx.metrics.observe(*_key(body), snapshot)
        await _retire(ctx, handler, body)
        return
    namespace, _ = _key(body)
    if namespace not in ctx.accounts:
        await _call(ctx, handler, apply.ensure_trainer_account, ctx.kube, namespace, ctx.config)
        ctx.accounts.add(namespace)
    if is_active(status):
        return  # the RECONCILE timer is already on it
    await _pass(ctx, handler, memo, body, cache=cache, indexes=indexes)
    kopf.event(body, type="Normal", reason="Planned", message=f"{len(cache.trials)} trials planned")


async def _finished_snapshot(
    ctx: Context, handler: str, body: kopf.Body, cache: PlanCache, indexes: Indexes
) -> Snapshot:
    """A finished experiment's metrics: from its results archive (its trials are retired from
    the indexes once it exists), else from the indexes (not retired yet)."""
    key, experiment = _key(body), cache.experiment
    queue = ctx.config.local_queue(experiment.spec.execution) or ""
    device = device_of(experiment)
    uid = str(body.metadata.uid)
    results = await _call(ctx, handler, ctx.archiver.read, ctx.kube, *key, uid)
    if results is not None:
        phases = {r.name: r.phase for r in results.trials}
        rows = [result_row(r) for r in results.trials if r.phase in FINISHED_TRIAL_PHASES]
        return Snapshot(phases, Usage(), rows, queue=queue, device=device)
    seen = decide(experiment, body, *indexes.seen(key), Memory(), planned=cache.trials)
    return Snapshot(seen.phases, seen.usage, seen.rows, queue=queue, device=device)


async def reconcile(memo: kopf.Memo, body: kopf.Body, indexes: Indexes, handler: str) -> None:
    """RECONCILE: one pass of admission, phases and status; none once a pass of this process
    finished the experiment (its trials leave the indexes then, `_retire`, and the timer may
    tick once more before kopf sees the finished status: a pass on empty indexes would plan
    the experiment again)."""
    if memo.get(FINISHED_HERE):
        return
    ctx = context(memo)
    try:
        cache = _planned(memo, body)
    except InvalidSpecError as error:
        await _reject(ctx, handler, body, error)
    await _pass(ctx, handler, memo, body, cache=cache, indexes=indexes)


async def _pass(
    ctx: Context,
    handler: str,
    memo: kopf.Memo,
    body: kopf.Body,
    *,
    cache: PlanCache,
    indexes: Indexes,
) -> None:
    """One reconciliation pass: what is missing, decide, apply, then Events and metrics."""
    key = _key(body)
    seen_trials, seen_jobs = indexes.seen(key)
    memory = _memory(memo)
    ctx.metrics.reconciles.labels(handler).inc()
    started = time.monotonic()
    starting = [j.trial for j in seen_jobs if j.phase is JobPhase.CREATED]
    missing: list[Missing] = await _call(
        ctx, handler, ctx.prerequisites.missing, ctx.kube, cache.experiment, key[0], ctx.config,
        starting,
    )  # fmt: skip
    local_queue = ctx.config.local_queue(cache.experiment.spec.execution)
    positions: dict[str, queue.Position] = {}
    if local_queue and any(j.reason == QUEUED for j in seen_jobs):  # one GET, only while held
        positions = await _call(
            ctx, handler, queue.read_positions, ctx.kube.api, key[0], local_queue
        )
    decision = decide(
        cache.experiment,
        body,
        seen_trials,
        seen_jobs,
        memory,
        planned=cache.trials,
        stall_seconds=ctx.config.stall_seconds,
        missing=missing,
        positions=positions,
    )
    await _apply(ctx, handler, memo, body, decision)
    _post_events(body, key[0], decision)
    ctx.metrics.observe(
        *key,
        Snapshot(
            decision.phases,
            decision.usage,
            decision.rows,
            len(decision.stalled),
            local_queue or "",
            tuple(m.key for m in decision.missing),
            device_of(cache.experiment),
        ),
        spent=sum(decision.actions.spent.values()),  # written: the runs that ended count once
    )
    ctx.metrics.reconcile_seconds.labels(handler).observe(time.monotonic() - started)
    if (decision.actions.experiment_status or {}).get("phase") in FINISHED:
        await _finish(ctx, handler, memo, body)


async def _finish(ctx: Context, handler: str, memo: kopf.Memo, body: kopf.Body) -> None:
    """After the pass that finished the experiment, and after its metrics (they never wait on
    the archive: seconds at 1,000 trials): no more passes here, archive, retire."""
    memo[FINISHED_HERE] = True
    try:
        await _archive(ctx, handler, body)
        await _retire(ctx, handler, body)
    except Exception as error:  # the status is written: RESUME retries at the next start
        kopf.warn(body, reason="ResultsNotArchived", message=f"{type(error).__name__}: {error}")


async def _apply(
    ctx: Context, handler: str, memo: kopf.Memo, body: kopf.Body, decision: Decision
) -> None:
    """Carry a decision's actions out; after a failure, forget what may not have been written."""
    try:
        await _call(
            ctx, handler, apply.apply, ctx.kube, decision.actions, _key(body)[0],
            owner=dict(body), memory=_memory(memo), config=ctx.config,
        )  # fmt: skip
    except BaseException as error:
        memo["memory"] = Memory()  # forget what may not have been written; indexes decide
        cause = error.__cause__
        if isinstance(cause, ApiError) and rest.code(cause) == NOT_FOUND:
            ctx.prerequisites.forget(MPIJOB_API.key)  # an MPIJob create may have found no API
        raise


async def _archive(ctx: Context, handler: str, body: kopf.Body) -> None:
    """Archive a finished experiment's results unless its archive exists; an Event says where."""
    namespace, name = _key(body)
    made = await _call(
        ctx, handler, ctx.archiver.ensure, ctx.kube, namespace, name, str(body.metadata.uid)
    )
    if made:
        message = f"configmap {made} keeps the results after the experiment is deleted"
        kopf.event(body, type="Normal", reason="ResultsArchived", message=message)


async def _retire(ctx: Context, handler: str, body: kopf.Body) -> None:
    """Label a finished, archived experiment's ScaleTrials and MPIJobs out of the watches
    (apply.retire): nothing of them stays in this process, nor is listed by a later one."""
    namespace, name = _key(body)
    await _call(ctx, handler, apply.retire, ctx.kube, namespace, name, str(body.metadata.uid))


def _post_events(body: kopf.Body, namespace: str, decision: Decision) -> None:
    """The decision's Events: on the experiment, and on single ScaleTrials."""
    for kind, reason, message in decision.actions.events:
        kopf.event(body, type=kind, reason=reason, message=message)
    for e in decision.actions.trial_events:
        meta = {"name": e.trial, "namespace": namespace, "uid": e.uid}
        raw = {"apiVersion": API_VERSION, "kind": TRIAL_KIND, "metadata": meta}
        trial = kopf.Body(cast(kopf.RawBody, raw))
        kopf.event(trial, type=e.type, reason=e.reason, message=e.message)


async def _call(ctx: Context, handler: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a blocking API function in a thread and return its result; API errors become a retry
    later. Every failure (an API error or no connection at all) counts against the calling
    handler's id."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except ApiError as error:
        ctx.metrics.reconcile_errors.labels(handler).inc()
        raise kopf.TemporaryError(
            f"API error {rest.code(error)}: {rest.reason(error)}", delay=RETRY_SECONDS
        ) from error
    except Exception:
        ctx.metrics.reconcile_errors.labels(handler).inc()
        raise  # kopf retries it with the handler's backoff


def forget(memo: kopf.Memo, body: kopf.Body) -> None:
    """FORGET: a deleted experiment's series go away."""
    context(memo).metrics.forget(*_key(body))


def unload(memo: kopf.Memo, body: kopf.Body) -> None:
    """FORGET, on every other event: once the body shows the experiment finished (the timer no
    longer runs it), drop its plan and pass memory, so that finished experiments hold no
    per-trial state here (the metrics keep their results)."""
    if (body.get("status") or {}).get("phase") in FINISHED:
        memo.pop("plan", None)
        memo.pop("memory", None)
