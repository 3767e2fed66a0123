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
by placement: the sweep falls back to the grid and says so. Pure functions; the local executor
and the operator's `decide` both call `verdicts`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scalelab.aggregate import Configuration, configuration
from scalelab.api import (
    FINISHED_TRIAL_PHASES,
    LrScaling,
    ResultRow,
    ScaleExperiment,
    SweepStrategy,
    TrialPhase,
)
from scalelab.planner import PlannedTrial

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
                "enter the Pareto front)"
            )
    for p in pending:
        below = _diverged_below(experiment, p, rows)
        if below is not None and p.name not in skip:
            skip[p.name] = (
                f"{PREFIX}not started: batch {below.batch_size} ({below.trial}) Diverged, and "
                f"lrScaling {experiment.spec.training.lr_scaling.value} gives batch "
                f"{p.batch_size} a larger learning rate"
            )


def dominated(
    experiment: ScaleExperiment,
    trial: PlannedTrial,
    training_seconds: float | None,
    rows: Mapping[str, ResultRow],
) -> str | None:
    """Why a running trial can no longer enter the Pareto front of time-to-target vs
    GPU-seconds (None while it still can): another configuration reached the target in less
    time AND fewer GPU-seconds than this trial has already spent. Its final time and
    GPU-seconds can only grow, so it ends strictly dominated whatever it does next; the grid's
    recommendation (the fastest configuration) is therefore never stopped. Needs a targetLoss
    (without one there is no time-to-target to compare)."""
    if experiment.spec.training.target_loss is None or not training_seconds:
        return None
    own = planned_configuration(trial)
    if any(configuration(r) == own and r.phase is TrialPhase.SUCCEEDED for r in rows.values()):
        return None  # a configuration is measured in full or not at all: no survivor bias
    spent = (training_seconds, trial.gpus * training_seconds)
    times: dict[Configuration, list[float]] = {}
    names: dict[Configuration, str] = {}
    for r in rows.values():
        key = configuration(r)
        if r.phase is TrialPhase.SUCCEEDED and r.time_to_target_seconds and key != own:
            times.setdefault(key, []).append(r.time_to_target_seconds)
            names.setdefault(key, r.trial)
    for key, runs in sorted(times.items(), key=lambda kv: sum(kv[1]) / len(kv[1])):
        time = sum(runs) / len(runs)
        if time < spent[0] and key[1] * time < spent[1]:
            return (
                f"{PREFIX}stopped after {spent[0]:.3g} s of training ({spent[1]:.3g} GPU-s): "
                f"{names[key]} reached the target in {time:.3g} s ({key[1] * time:.3g} GPU-s), "
                "less on both, so this trial cannot enter the Pareto front"
            )
    return None
