"""sweep.strategy adaptive: a pilot measures B_simple, then only batch sizes near it run.

McCandlish et al. (2018) show that B_simple, measured in one run, predicts the critical batch
size: below B_crit/width a batch buys little but costs many steps, above B_crit·width it costs
GPU-seconds for no fewer steps. So the sweep runs one pilot first — the middle candidate batch
(in log order) at the fewest GPUs, repeat 0, a real grid point whose result counts like any
other; with a learningRates axis, at the first rate listed — reads the B_simple it measured at
the target (with its standard error), and Skips every
candidate batch outside [(B̂ − 2·SE)/width, (B̂ + 2·SE)·width], keeping at least `minPoints`
batches (the nearest to B̂ in log B) so the fit S = S_min(1 + B_crit/B) still has points.
Every GPU count, learning rate and repeat of a chosen batch runs.

Trials run smallest batch first, so a Diverged trial is known before larger ones start: when the
learning rate grows with the batch (lrScaling linear or sqrt), a batch above a Diverged one would
run at a rate at least as large, and is not started (the reason names the diverged trial); with a
learningRates axis, only a Diverged trial at the same or a smaller base rate rules a batch out.

If the pilot yields no B_simple (it failed, diverged or could not measure), nothing is skipped
by placement: the sweep falls back to the grid and says so.

A running trial is stopped (`dominated`) on the same modelled time-to-target and tolerance the
recommendation uses (timing.py, choice.py), so the adaptive sweep and the grid decide alike.
Pure functions; the local executor and the operator's `decide` both call `verdicts` and
`dominated`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Any

from scalelab.aggregate import Configuration, configuration
from scalelab.api import (
    FINISHED_TRIAL_PHASES,
    LrScaling,
    ResultRow,
    ScaleExperiment,
    SweepStrategy,
    TrialPhase,
)
from scalelab.choice import eligible
from scalelab.planner import PlannedTrial
from scalelab.timing import modelled

PREFIX = "adaptive: "


def is_adaptive(experiment: ScaleExperiment) -> bool:
    """True for sweep.strategy adaptive."""
    return experiment.spec.sweep.strategy is SweepStrategy.ADAPTIVE


def pilot_trial(planned: Sequence[PlannedTrial]) -> PlannedTrial | None:
    """The middle runnable batch size (lower middle in sorted order), fewest GPUs, repeat 0 (and
    the first learning rate of the plan's order)."""
    runnable = [p for p in planned if not p.skipped]
    if not runnable:
        return None
    batches = sorted({p.batch_size for p in runnable})
    middle = batches[(len(batches) - 1) // 2]
    return min((p for p in runnable if p.batch_size == middle), key=lambda p: (p.gpus, p.repeat))


@dataclass(frozen=True)
class Prediction:
    """B_crit predicted by the pilot's B_simple, and the batch range that runs."""

    value: float
    stderr: float | None
    low: float
    high: float
    trial: str


@dataclass
class Verdicts:
    """What the adaptive sweep says about the trials that have not started."""

    pilot: str | None
    waiting: set[str] = field(default_factory=set)  # not before the pilot has finished
    skip: dict[str, str] = field(default_factory=dict)  # trial → reason
    prediction: Prediction | None = None
    note: str = ""  # why placement was not applied, when it was not


def predict(experiment: ScaleExperiment, pilot: ResultRow) -> Prediction | None:
    """The batch range to run from the pilot's B_simple at the target (± 2 standard errors)."""
    value = pilot.critical_batch_size or pilot.gradient_noise_scale
    if pilot.phase is not TrialPhase.SUCCEEDED or value is None or not value > 0:
        return None
    se = (
        pilot.critical_batch_size_stderr
        if pilot.critical_batch_size is not None
        else pilot.gradient_noise_scale_stderr
    )
    width = experiment.spec.sweep.adaptive.width
    spread = 2 * se if se is not None and math.isfinite(se) else 0.0
    low = max(value - spread, value / 10) / width  # a prediction indistinguishable from 0: ×10
    return Prediction(value, se, low, (value + spread) * width, pilot.trial)


def _chosen(experiment: ScaleExperiment, batches: Sequence[int], p: Prediction) -> set[int]:
    chosen = {b for b in batches if p.low <= b <= p.high}
    nearest = sorted(batches, key=lambda b: abs(math.log(b) - math.log(p.value)))
    for b in nearest:
        if len(chosen) >= experiment.spec.sweep.adaptive.min_points:
            break
        chosen.add(b)
    return chosen


def planned_configuration(trial: PlannedTrial) -> Configuration:
    """The configuration of a planned trial (aggregate.configuration of its row)."""
    return (trial.batch_size, trial.gpus, trial.base_learning_rate)


def _diverged_below(
    experiment: ScaleExperiment, trial: PlannedTrial, rows: Mapping[str, ResultRow]
) -> ResultRow | None:
    """The largest smaller batch that Diverged (at the same or a smaller base learning rate),
    when the rate grows with the batch."""
    if experiment.spec.training.lr_scaling is LrScaling.NONE:
        return None
    rate = trial.base_learning_rate
    diverged = [
        r
        for r in rows.values()
        if r.phase is TrialPhase.DIVERGED
        and r.batch_size < trial.batch_size
        and (rate is None or r.base_learning_rate is None or r.base_learning_rate <= rate)
    ]
    return max(diverged, key=lambda r: r.batch_size, default=None)


def verdicts(
    experiment: ScaleExperiment,
    planned: Sequence[PlannedTrial],
    rows: Mapping[str, ResultRow],
    phases: Mapping[str, TrialPhase],
) -> Verdicts:
    """Which not-yet-started trials wait for the pilot, and which are skipped and why.

    `rows` are the finished trials' results by name, `phases` every trial's current phase; only
    trials that are Pending are judged (a running or finished trial is never taken back).
    """
    pilot = pilot_trial(planned)
    out = Verdicts(pilot=pilot.name if pilot else None)
    if pilot is None:
        return out
    pending = [
        p
        for p in planned
        if not p.skipped and phases.get(p.name, TrialPhase.PENDING) is TrialPhase.PENDING
    ]
    if phases.get(pilot.name) not in FINISHED_TRIAL_PHASES:
        out.waiting = {p.name for p in pending if p.name != pilot.name}
        return out
    pilot_row = rows.get(pilot.name)
    out.prediction = predict(experiment, pilot_row) if pilot_row is not None else None
    if out.prediction is None:
        why = pilot_row.gradient_noise_scale_reason if pilot_row else None
        out.note = (
            f"{PREFIX}the pilot {pilot.name} gave no B_simple ({why or 'no result'}); "
            "every candidate batch runs (grid)"
        )
    else:
        batches = sorted({p.batch_size for p in planned if not p.skipped})
        chosen = _chosen(experiment, batches, out.prediction)
        pred = out.prediction
        for p in pending:
            if p.batch_size not in chosen:
                out.skip[p.name] = (
                    f"{PREFIX}batch {p.batch_size} is outside {pred.low:.3g}–{pred.high:.3g}, "
                    f"{experiment.spec.sweep.adaptive.width:g}× around the critical batch "
                    f"{pred.value:.3g} predicted by the pilot {pred.trial}'s B_simple"
                )
    _skip_after_results(experiment, pending, rows, out.skip)
    return out


def _skip_after_results(
    experiment: ScaleExperiment,
    pending: Sequence[PlannedTrial],
    rows: Mapping[str, ResultRow],
    skip: dict[str, str],
) -> None:
    """Adds to `skip` the pending trials that finished trials rule out: a configuration of which
    a trial was stopped, and a batch above one that Diverged under a growing learning rate (a
    reason already given stays)."""
    stopped = {configuration(r): r.trial for r in rows.values() if r.phase is TrialPhase.PRUNED}
    for p in pending:
        first = stopped.get(planned_configuration(p))
        if first is not None and p.name not in skip:
            skip[p.name] = (
                f"{PREFIX}not started: {first} of this configuration was stopped (it could not "
                "be the answer)"
            )
    for p in pending:
        below = _diverged_below(experiment, p, rows)
        if below is not None and p.name not in skip:
            skip[p.name] = (
                f"{PREFIX}not started: batch {below.batch_size} ({below.trial}) Diverged, and "
                f"lrScaling {experiment.spec.training.lr_scaling.value} gives batch "
                f"{p.batch_size} a larger learning rate"
            )


@dataclass(frozen=True)
class Progress:
    """How far a running trial has come: what its last `epoch` event (or a `progress` event
    inside the next epoch) says."""

    steps: int  # optimizer steps done
    step_seconds: float | None  # its median steady step so far (None: not known yet)
    training_seconds: float | None = None  # training time so far (what it has cost)
    loss: float | None = None  # full-dataset loss at its last epoch end


def progress_of(
    batch_size: int, epochs: Sequence[Mapping[str, Any]], skip_steps: int
) -> Progress | None:
    """A running trial's progress from its epoch events so far: steps and loss of the last, and
    its step time so far: the trainer's median steady step so far (the last event's
    `stepSeconds`, what the result's stepTimeSeconds.p50 becomes), else the median of its steady
    epochs' global batch / samplesPerSecond. The trainer's steady state leaves out its first
    `skip_steps` steps (measurement.throughputSkipSteps); until an epoch that began after them,
    and after the first epoch (its call warms up: on a CPU 3 to 40 times the steady step), has
    ended, the step time is unknown (None) and nothing is judged."""
    if not epochs:
        return None
    last = epochs[-1]
    steps, loss, seconds = last.get("steps"), last.get("loss"), last.get("trainingSeconds")
    if not isinstance(steps, int) or isinstance(steps, bool):
        return None
    begun, steady = 0, []
    for e in epochs:
        done, speed = _number(e.get("steps")), _number(e.get("samplesPerSecond"))
        if begun >= max(skip_steps, 1) and speed is not None and speed > 0:
            steady.append(batch_size / speed)
        begun = int(done) if done is not None else begun
    median_step = _number(last.get("stepSeconds"))
    if median_step is None or median_step <= 0:
        median_step = median(steady) if steady else None
    return Progress(
        steps=steps,
        step_seconds=median_step if steady else None,
        training_seconds=_number(seconds),
        loss=_number(loss),
    )


def _number(value: object) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None  # type: ignore[arg-type]


def dominated(
    experiment: ScaleExperiment,
    trial: PlannedTrial,
    progress: Progress | None,
    rows: Mapping[str, ResultRow],
) -> str | None:
    """Why a running trial can no longer be the answer nor within the noise of it (None while
    it still can), judged on the modelled time-to-target the recommendation uses (timing.py).

    A finished configuration c that meets the objective (choice.eligible) has modelled time T_c
    and GPU-seconds N_c·T_c. The running trial's own modelled time will be its steps-to-target
    × its step time. It has not reached the target after `progress.steps` steps (the target is
    judged at epoch ends, and its last one's loss was above it), so its steps-to-target are more,
    and T ≥ steps × step time so far: a bound on the quantity the model uses, which neither its
    start-up, its evaluations nor a slow stopwatch enters. When that bound exceeds
    (1 + tolerance)·T_c and N·T exceeds (1 + tolerance)·N_c·T_c, the trial ends strictly
    dominated beyond the tolerance whatever it does next: never the fastest, the cheapest nor
    indistinguishable from either on point estimates, so the grid's answer is not stopped.
    Needs a targetLoss (else there is no time-to-target)."""
    target = experiment.spec.training.target_loss
    if target is None or progress is None or progress.steps <= 0 or not progress.step_seconds:
        return None
    if progress.loss is not None and progress.loss <= target:
        return None  # it reached the target at this epoch end: its result follows
    own = planned_configuration(trial)
    if any(configuration(r) == own and r.phase is TrialPhase.SUCCEEDED for r in rows.values()):
        return None  # a configuration is measured in full or not at all: no survivor bias
    objective = experiment.spec.objective
    others = [r for r in rows.values() if configuration(r) != own]
    configs = eligible(modelled(others, experiment.spec.execution.max_gpus, True), objective)
    bound = progress.steps * progress.step_seconds
    limit = 1 + objective.tolerance
    cost = "process-s" if experiment.spec.resources.gpus_per_process == 0 else "GPU-s"
    spent = progress.training_seconds
    so_far = f", {spent:.3g} s of training" if spent is not None else ""
    for c in sorted(configs, key=lambda c: c.seconds):
        if bound > limit * c.seconds and trial.gpus * bound > limit * c.gpu_seconds:
            return (
                f"{PREFIX}stopped after {progress.steps} steps{so_far} without reaching the "
                f"target: at least {bound:.3g} s modelled ({progress.steps} steps × "
                f"{progress.step_seconds:.3g} s per step, {trial.gpus * bound:.3g} {cost}); "
                f"{c.trial} reached the target in {c.seconds:.3g} s modelled ({c.gpu_seconds:.3g} "
                f"{cost}), less on both by more than the {objective.tolerance:.0%} tolerance, so "
                "this trial cannot be the answer nor within its noise"
            )
    return None
