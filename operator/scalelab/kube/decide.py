"""What the operator should do next for one ScaleExperiment, as pure functions of what it sees.

The experiment is the scheduler: only it sees every trial, so it admits trials under
`maxConcurrentTrials` and `maxGPUs`, turns MPIJob conditions into trial phases, and folds
trial results into its status. `decide` is called by kube/operations.py with the experiment
body, the snapshot of its trials and MPIJobs (kopf indexes, kube/observed.py) and what this
process wrote recently; the output is a `Decision` whose `Actions` kube/apply.py carries out.
Each step of a pass takes the one `Pass` (kube/state.py). Nothing here talks to the API, so
every rule is unit tested.

Failure budget: each trial is retried by its MPIJob's launcher Job (`execution.backoffLimit`);
a trial whose MPIJob fails is Failed for good and the others go on (kube/status.py says how the
experiment ends).

Missing prerequisites (kube/prerequisites.py: no MPIJob API, no Kueue API for a queueName, no
trainer ServiceAccount) are named by a PrerequisitesMet=False condition and a Warning Event
saying what is missing and how to install it. Those that block (no MPIJob API, no trainer
account) hold every launch back: the experiment is Pending and its waiting trials say why. A
missing Kueue does not: the MPIJobs are created suspended, for Kueue to admit once installed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from scalelab import adaptive, aggregate
from scalelab.api import (
    FINISHED_TRIAL_PHASES,
    BatchScope,
    Condition,
    ResultRow,
    ScaleExperiment,
    TrialPhase,
)
from scalelab.kube import conditions
from scalelab.kube.observed import (
    JobPhase,
    JobState,
    Missing,
    TrialState,
)
from scalelab.kube.phases import (
    BLOCKED,
    KUEUE_PENDING,
    LAUNCHED,
    QUIET,
    WAITING,
    WAITING_FOR_PILOT,
    parse_time,
    queue_seconds,
    row,
    run_seconds,
    trial_phase,
    trial_times,
)
from scalelab.kube.queue import Position, with_position
from scalelab.kube.state import Decision, Found, Memory, Pass, Seen, TrialEvent, Usage
from scalelab.kube.status import experiment_status, now_rfc3339
from scalelab.planner import PlannedTrial, devices_needed, plan


def decide(
    experiment: ScaleExperiment,
    body: Mapping[str, Any],
    trials: Iterable[TrialState],
    jobs: Iterable[JobState],
    memory: Memory,
    *,
    now: float | None = None,
    planned: Sequence[PlannedTrial] | None = None,
    stall_seconds: float = 0.0,
    missing: Sequence[Missing] = (),
    positions: Mapping[str, Position] | None = None,
) -> Decision:
    """One reconciliation of a planned experiment, in five steps: create the missing trials,
    read each trial's phase, admit trials into free capacity, patch changed trial statuses, and
    write the experiment's status. A trial that Kueue can never admit is Skipped and its
    suspended MPIJob deleted (it would run, unobserved, if the queue's quota grew later).

    A Running trial whose rank 0 has not reported progress (or, before its first report, that
    started) more than `stall_seconds` ago is flagged stalled: an Event once, a TrialsStalled
    condition while it lasts, a metric. Hung collectives leave MPIJobs Running forever otherwise.
    With `missing` prerequisites nothing is launched and the experiment says what to install.
    `positions` (kube/queue.py, by trial): where Kueue's queue holds each trial waiting for
    quota, shown in its reason.
    """
    p = Pass(
        experiment=experiment,
        body=body,
        planned=list(planned if planned is not None else plan(experiment)),
        seen=Seen.owned(str((body.get("metadata") or {}).get("uid") or ""), trials, jobs),
        memory=memory,
        now=time.time() if now is None else now,
        stall_seconds=stall_seconds,
        missing=list(missing),
    )
    create_missing_trials(p)
    observe_phases(p)
    _place_in_queue(p, positions or {})
    plan_note = prune(p)
    p.actions.delete_jobs = _jobs_to_delete(p)
    admission = hold(p) if p.blocking else admit(p)
    patch_trial_statuses(p)
    final = {name: phase for name, (phase, _) in p.phases.items()}
    usage = replace(
        admission,
        running=_gpus_in(p, final, JobPhase.RUNNING),
        suspended=_gpus_in(p, final, JobPhase.SUSPENDED),
    )
    found = Found(final, result_rows(p), _stalled(p, final), usage, plan_note)
    status = experiment_status(p, found)
    return Decision(
        actions=p.actions,
        phases=final,
        usage=usage,
        rows=list(found.rows),
        status=status,
        stalled=list(found.stalled),
        missing=list(missing),
    )


def _jobs_to_delete(p: Pass) -> list[str]:
    """The MPIJobs of trials that will not run: Skipped (never fits), Pruned, or Failed while
    suspended (Kueue deactivated it: it would run, unobserved, if someone reactivated it)."""
    return [
        t.name
        for t in p.planned
        if (job := p.seen.jobs.get(t.name)) is not None
        and (
            p.phases[t.name][0] in (TrialPhase.SKIPPED, TrialPhase.PRUNED)
            or (p.phases[t.name][0] is TrialPhase.FAILED and job.phase is JobPhase.SUSPENDED)
        )
    ]


def _place_in_queue(p: Pass, positions: Mapping[str, Position]) -> None:
    """A Pending trial's reason says where Kueue's queue holds it, when it is known."""
    for name, (phase, reason) in p.phases.items():
        if phase is TrialPhase.PENDING and name in positions:
            p.phases[name] = (phase, with_position(reason, positions[name]))


def _gpus_in(p: Pass, phases: Mapping[str, TrialPhase], state: JobPhase) -> int:
    """GPUs of the unfinished trials whose MPIJob is in `state`."""
    return sum(
        devices_needed(p.experiment, t.gpus)
        for t in p.planned
        if (j := p.seen.jobs.get(t.name)) is not None
        and j.phase is state
        and phases[t.name] not in FINISHED_TRIAL_PHASES
    )


def create_missing_trials(p: Pass) -> None:
    """Step 1: ask for the trials that should exist and don't (first pass, or someone deleted
    one); note the uid of every trial that exists (seen, or created by this process)."""
    for t in p.planned:
        trial = p.seen.trials.get(t.name)
        if trial is not None:
            p.uids[t.name] = trial.uid
            p.memory.created.pop(t.name, None)
        elif t.name in p.memory.created:
            p.uids[t.name] = p.memory.created[t.name]
        else:
            p.actions.create_trials.append(t)


def observe_phases(p: Pass) -> None:
    """Step 2: every trial's phase and reason from its MPIJob and its reported result."""
    for t in p.planned:
        job = p.seen.jobs.get(t.name)
        if job is not None:
            p.memory.launched.discard(t.name)
        p.phases[t.name] = trial_phase(t, p.seen.trials.get(t.name), job, p.now)
        launched = job is None and t.name in p.memory.launched
        if launched and p.phases[t.name][0] is TrialPhase.PENDING:
            p.phases[t.name] = (TrialPhase.PENDING, LAUNCHED)


def prune(p: Pass) -> Condition | None:
    """Step 2½, strategy adaptive only: trials wait for the pilot, then those its B_simple
    places out of range (or above a diverged batch) become Skipped with the reason, and a
    running trial that can no longer enter the Pareto front becomes Pruned (decide deletes its
    MPIJob); returns the AdaptivePlan condition that says where the sweep stands."""
    if not adaptive.is_adaptive(p.experiment):
        return None
    started = {t.name for t in p.planned if t.name in p.memory.launched or t.name in p.seen.jobs}
    current = {
        name: TrialPhase.RUNNING if name in started and phase is TrialPhase.PENDING else phase
        for name, (phase, _) in p.phases.items()
    }
    rows = {
        t.name: row(t, *p.phases[t.name], p.seen.trials.get(t.name))
        for t in p.planned
        if p.phases[t.name][0] in FINISHED_TRIAL_PHASES
    }
    v = adaptive.verdicts(p.experiment, p.planned, rows, current)
    for name in v.waiting:
        p.phases[name] = (TrialPhase.PENDING, f"{WAITING_FOR_PILOT} {v.pilot}")
    for name, reason in v.skip.items():
        p.phases[name] = (TrialPhase.SKIPPED, reason)
    for t in p.planned:
        trial = p.seen.trials.get(t.name)
        if p.phases[t.name][0] is TrialPhase.RUNNING and trial is not None:
            why = adaptive.dominated(p.experiment, t, _progress(p, t, trial), rows)
            if why is not None:
                p.phases[t.name] = (TrialPhase.PRUNED, why)  # its MPIJob goes (delete_jobs)
    return conditions.adaptive_plan(v)


def _progress(p: Pass, t: PlannedTrial, trial: TrialState) -> adaptive.Progress | None:
    """A running trial's progress from its status.progress: steps, the last epoch end's loss and
    its step time so far, the trainer's median steady step (`stepSeconds`; from a trainer
    without it, global batch / samplesPerSecond, a mean), once an epoch after the first that
    began after the trainer's warm-up steps (measurement.throughputSkipSteps) has ended, as far
    as the epochs' mean length tells (adaptive.progress_of is the exact rule on the events)."""
    speed, epoch, steps = trial.samples_per_second, trial.epoch, trial.steps
    if steps is None or epoch is None or epoch < 2:
        return None
    if steps * (epoch - 1) / epoch < max(p.experiment.spec.measurement.throughput_skip_steps, 1):
        return None
    step = trial.step_seconds or (t.batch_size / speed if speed is not None and speed > 0 else None)
    return adaptive.Progress(steps, step, trial.training_seconds, trial.loss)


def _holds_slot(p: Pass, name: str) -> bool:
    """An unfinished trial launched by this process or with an MPIJob: it holds a slot."""
    unfinished = p.phases[name][0] not in FINISHED_TRIAL_PHASES
    return unfinished and (name in p.memory.launched or p.seen.jobs.get(name) is not None)


def admit(p: Pass) -> Usage:
    """Step 3: launch trials under maxConcurrentTrials and maxGPUs (capacity-aware: a smaller
    trial that fits goes ahead of a bigger one that does not); GPUs requested and queued. A trial
    this pass creates is launched in it too, its uid "" until apply has it (the first wave goes
    out with the first pass, not one timer interval later)."""
    execution = p.experiment.spec.execution
    creating = {t.name for t in p.actions.create_trials}
    active = [t for t in p.planned if _holds_slot(p, t.name)]
    used = sum(devices_needed(p.experiment, t.gpus) for t in active)
    queued = 0
    for t in p.planned:
        if t.skipped or _holds_slot(p, t.name) or p.phases[t.name][0] in FINISHED_TRIAL_PHASES:
            continue
        if p.phases[t.name][1].startswith(WAITING_FOR_PILOT):
            continue  # strategy adaptive: not before the pilot has measured B_simple
        need = devices_needed(p.experiment, t.gpus)
        if (
            (t.name in p.uids or t.name in creating)
            and len(active) < execution.max_concurrent_trials
            and used + need <= execution.max_gpus
        ):
            p.actions.launch.append((t, p.uids.get(t.name, "")))
            p.memory.launched.add(t.name)
            active.append(t)
            used += need
            p.phases[t.name] = (TrialPhase.PENDING, LAUNCHED)
        else:
            queued += need
    return Usage(requested=used, queued=queued)


def hold(p: Pass) -> Usage:
    """Step 3 without the cluster's prerequisites: launch nothing; every trial waiting for a
    slot says what is missing instead, and so does a launched one whose pods cannot start
    (`Missing.trials`: its image cannot be pulled)."""
    blocking = p.blocking
    why = BLOCKED + "; ".join(m.message for m in blocking)
    used = queued = 0
    for t in p.planned:
        phase, reason = p.phases[t.name]
        if phase in FINISHED_TRIAL_PHASES:
            continue
        need = devices_needed(p.experiment, t.gpus)
        if t.name in p.memory.launched or p.seen.jobs.get(t.name) is not None:
            used += need
            held = [m.message for m in blocking if t.name in m.trials]
            if held and phase is TrialPhase.PENDING and reason == LAUNCHED:
                p.phases[t.name] = (TrialPhase.PENDING, BLOCKED + "; ".join(held))
        elif phase is TrialPhase.PENDING and reason == WAITING:
            p.phases[t.name] = (TrialPhase.PENDING, why)
            queued += need
    return Usage(requested=used, queued=queued)


#: How the reasons of a trial held back start (a missing prerequisite, Kueue): written when changed.
HELD_REASONS = (BLOCKED, *KUEUE_PENDING.values())


def _reason_news(old: str, new: str) -> bool:
    """A Pending trial's reason is rewritten when it enters or leaves a missing prerequisite, when
    Kueue says why it waits, or when a trial without a reason gets one beyond the QUIET ones
    (other reason changes ride along with the next phase)."""
    return old != new and (
        old.startswith(BLOCKED) or new.startswith(HELD_REASONS) or (not old and new not in QUIET)
    )


def _blocked_conditions(reason: str, stamp: str) -> list[dict[str, Any]]:
    """A trial's PrerequisitesMet=False while missing prerequisites hold it; [] once not."""
    if not reason.startswith(BLOCKED):
        return []
    condition = conditions.prerequisites_missing(
        "PrerequisitesMissing", reason.removeprefix(BLOCKED)
    ).model_copy(update={"last_transition_time": stamp})
    return [condition.model_dump(by_alias=True, mode="json", exclude_none=True)]


def patch_trial_statuses(p: Pass) -> None:
    """Step 4: a status patch per trial whose phase changed, once per transition (the index may
    lag behind our own writes; a reason rides along with its phase, and so do the trial's times,
    `trial_times`). Kueue's reason for holding a trial is written when it changes too: it is
    what the user must read, and it comes after the trial turned Pending."""
    stamp = now_rfc3339(p.now)
    for t in p.planned:
        if t.name not in p.uids:
            continue
        phase, reason = p.phases[t.name]
        trial = p.seen.trials.get(t.name)
        # A trial the index does not show yet was just created: it shows the API's default.
        shown = (trial.phase, trial.reason) if trial is not None else (TrialPhase.PENDING, "")
        if shown[0] is phase and not _reason_news(shown[1], reason):
            p.memory.written.pop(t.name, None)
            continue
        written = p.memory.written.get(t.name)
        if written is not None and written[0] is phase and not _reason_news(written[1], reason):
            continue
        patch: dict[str, Any] = {"phase": phase.value, "reason": reason}
        patch |= trial_times(p.seen.jobs.get(t.name), trial, phase, stamp)
        patch |= _spend(p, t, written[0] if written is not None else shown[0], stamp)
        was = written[1] if written is not None else trial.reason if trial is not None else ""
        if reason.startswith(BLOCKED) or was.startswith(BLOCKED):
            patch["conditions"] = _blocked_conditions(reason, stamp)
        if reason.startswith(BLOCKED) and reason != was:  # held back: the trial's own Event
            why = reason.removeprefix(BLOCKED)
            p.actions.trial_events.append(
                TrialEvent(t.name, p.uids[t.name], "Warning", "PrerequisitesMissing", why)
            )
        if phase is TrialPhase.RUNNING and (trial is None or not trial.start_time):
            patch["startTime"] = stamp
        if phase in FINISHED_TRIAL_PHASES and phase is not TrialPhase.SKIPPED:
            patch["completionTime"] = stamp
            if phase is TrialPhase.FAILED:
                p.actions.events.append(("Warning", "TrialFailed", f"{t.name}: {reason}"))
        p.actions.trial_status[t.name] = patch
        p.memory.written[t.name] = (phase, reason)


def _spend(p: Pass, t: PlannedTrial, was: TrialPhase | None, stamp: str) -> dict[str, Any]:
    """status.deviceSeconds with the run that ends at this write added (devices × its seconds,
    phases.run_seconds), to ride along with the write; noted for the operator's counter."""
    phase_now = p.phases[t.name]
    ran = run_seconds(p.seen.jobs.get(t.name), p.seen.trials.get(t.name), was, phase_now, stamp)
    if ran is None:
        return {}
    spent = devices_needed(p.experiment, t.gpus) * ran
    total = p.spent([t.name])[t.name] + spent
    p.actions.spent[t.name] = spent
    p.memory.spent[t.name] = total
    return {"deviceSeconds": total}


def result_rows(p: Pass) -> list[ResultRow]:
    """The results table: one row per finished trial, with scaling efficiency. A row is built
    again only when its trial's phase, reason or result changed (`memory.rows`): reading 1,000
    results every pass was half of a pass. Its queue wait is the trial's (status.queueSeconds),
    or its MPIJob's before the status shows it; every run's device-seconds, `Pass.spent`."""
    rows, spent = [], p.spent()
    for t in p.planned:
        phase, reason = p.phases[t.name]
        if phase not in FINISHED_TRIAL_PHASES:
            continue
        trial = p.seen.trials.get(t.name)
        queued = trial.queue_seconds if trial is not None else None
        if queued is None:
            queued = queue_seconds(p.seen.jobs.get(t.name))
        used = spent.get(t.name) or None
        key = (
            phase,
            reason,
            queued,
            used,
            *((trial.result, trial.training_seconds) if trial else (None, None)),
        )
        cached = p.memory.rows.get(t.name)
        if cached is None or cached[0] != key:
            built = row(t, phase, reason, trial, queued=queued, spent=used)
            cached = p.memory.rows[t.name] = (key, built)
        rows.append(cached[1])
    weak = p.experiment.spec.sweep.batch_scope is BatchScope.PER_PROCESS
    return aggregate.with_scaling(rows, weak=weak)


def _stalled(p: Pass, phases: Mapping[str, TrialPhase]) -> list[str]:
    """The Running trials whose rank 0 reported no progress (or, before its first report, that
    started) more than `stall_seconds` ago; none when stall detection is off."""
    if p.stall_seconds <= 0:
        return []
    out = []
    for t in p.planned:
        seen = p.seen.trials.get(t.name)
        if phases[t.name] is not TrialPhase.RUNNING or seen is None:
            continue
        last = parse_time(seen.updated_at) or parse_time(seen.start_time)
        if last is not None and p.now - last > p.stall_seconds:
            out.append(t.name)
    return out
