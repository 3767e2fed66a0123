"""The modelled time-to-target of each configuration: steps-to-target of its batch × its median
step time, and the bootstrap draws of that product over repeats.

Time-to-target is two things multiplied, with very different noise: the steps to the target at
batch B (a property of model, data and seed) and the time per step at (B, N) (the hardware; a
median over thousands of steps, which a neighbour's burst or a slow start-up barely moves,
unlike the stopwatch of one trial). So a configuration's time is modelled as

    T(B, N) = S(B) × t(B, N)

- S(B): the mean steps-to-target of the trials of batch B (at the same base learning rate) that
  reached the target, at the fewest processes that did (more processes at the same global batch
  repeat the same arithmetic, not a new draw); where no trial of batch B reached it, the fit
  S(B) = S_min(1 + B_crit/B) of critical.py over the other batches, unless a trial of this
  configuration already ran that many steps without reaching it (then the fit is contradicted
  and the configuration is left out). Without a targetLoss there are no steps-to-target: the
  converged trials' measured training time stands ("time"), as before the model.
- t(B, N): the median over the repeats of each trial's median steady-state step time
  (`ResultRow.stepSeconds`, the trainer's stepTimeSeconds.p50; where a row lacks it, global
  batch / samplesPerSecond, the steady-state mean step time).
- A configuration without a step time or step count (rows written before these fields) keeps
  its measured mean time-to-target ("time").

Bootstrap (`Draws`): each resample draws every batch's steps-to-target runs and every
configuration's trials with replacement (the same batch draw for all configurations of that
batch, so their comparison is one of step times only), and, where the caller passes each trial's
per-epoch step times (`epochs`: results.json keeps the samplesPerSecond curve; the status rows do
not), each drawn trial's step time is its median × the median of its epochs' step times (relative
to their median) drawn with replacement: a bootstrap over repeats and over step times at epoch
granularity, so even one repeat has an interval. Seeded: the same rows give the same draws.
Pure; called by choice.py and adaptive.py.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from statistics import mean, median

from scalelab.api import ResultRow, TrialPhase
from scalelab.critical import CriticalBatchFit, fit_critical_batch, steps_by_batch

RESAMPLES = 1000
NO_TARGET_SLACK = 1.01  # without a targetLoss: within 1% of the best final loss counts as there
MEASURED, FIT, TIME = "measured", "fit", "time"

#: A configuration: global batch, processes, and the base learning rate (None without the axis).
Key = tuple[int, int, float | None]


def key_of(row: ResultRow) -> Key:
    """The configuration a row measures."""
    return (row.batch_size, row.gpus, row.base_learning_rate)


def step_seconds(row: ResultRow) -> float | None:
    """A trial's median step time, else its steady-state mean (global batch / throughput)."""
    if row.step_seconds is not None and row.step_seconds > 0:
        return row.step_seconds
    if row.samples_per_second is not None and row.samples_per_second > 0:
        return row.batch_size / row.samples_per_second
    return None


@dataclass(frozen=True)
class Modelled:
    """One configuration's modelled time-to-target and what it rests on."""

    batch_size: int
    gpus: int
    learning_rate: float | None
    trial: str  # the first repeat's name
    seconds: float  # modelled time-to-target
    source: str  # MEASURED | FIT | TIME: where the step count came from
    steps: float | None = None
    step_time: float | None = None
    step_runs: tuple[float, ...] = ()  # each repeat's step time
    # each repeat's per-epoch step times over their median (empty where the row has no curve)
    spreads: tuple[tuple[float, ...], ...] = ()
    time_runs: tuple[float, ...] = ()  # each repeat's measured time (the TIME source's draws)
    measured: float | None = None  # mean measured time-to-target
    efficiency: float | None = None  # mean scaling efficiency over the repeats

    @property
    def key(self) -> Key:
        return (self.batch_size, self.gpus, self.learning_rate)

    @property
    def gpu_seconds(self) -> float:
        return self.gpus * self.seconds

    @property
    def batch_key(self) -> tuple[int, float | None]:
        return (self.batch_size, self.learning_rate)


def _converged(usable: Sequence[ResultRow]) -> list[ResultRow]:
    """Without a target: the trials within 1% of the best final loss of the sweep."""
    losses = [r.final_loss for r in usable if r.final_loss is not None]
    if not losses:
        return []
    bar = min(losses) * NO_TARGET_SLACK if min(losses) > 0 else min(losses)
    return [r for r in usable if r.final_loss is not None and r.final_loss <= bar]


def batch_steps(rows: Iterable[ResultRow]) -> dict[tuple[int, float | None], list[float]]:
    """Steps-to-target per (batch, base rate): the reaching trials at the fewest processes."""
    by_gpus: dict[tuple[int, float | None], dict[int, list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in rows:
        if r.phase is TrialPhase.SUCCEEDED and r.steps_to_target:
            by_gpus[(r.batch_size, r.base_learning_rate)][r.gpus].append(float(r.steps_to_target))
    return {k: v[min(v)] for k, v in by_gpus.items()}


def _fit(rows: Sequence[ResultRow]) -> CriticalBatchFit | None:
    means = {b: mean(v) for b, v in steps_by_batch(rows).items()}
    return fit_critical_batch(list(means), list(means.values())) if means else None


def epoch_step_seconds(batch_size: int, samples_per_second: Sequence[object]) -> list[float]:
    """Each epoch's seconds per step from a trial's samplesPerSecond curve (global batch /
    throughput), without the first epoch when there are 3 or more (it carries the start-up)."""
    values = [
        batch_size / float(v)
        for v in samples_per_second
        if isinstance(v, int | float) and not isinstance(v, bool) and v > 0 and math.isfinite(v)
    ]
    return values[1:] if len(values) >= 3 else values


def modelled(
    rows: Sequence[ResultRow],
    max_gpus: int,
    has_target: bool,
    epochs: Mapping[str, Sequence[float]] | None = None,
) -> list[Modelled]:
    """The modelled configurations within maxGPUs, in (batch, processes, rate) order. A
    configuration with a repeat the adaptive sweep stopped is out (the mean of the rest would be
    biased towards the fast ones)."""
    stopped = {key_of(r) for r in rows if r.phase is TrialPhase.PRUNED}
    usable = [
        r
        for r in rows
        if r.phase is TrialPhase.SUCCEEDED and r.gpus <= max_gpus and key_of(r) not in stopped
    ]
    if not has_target:
        usable = _converged(usable)
    grouped: dict[Key, list[ResultRow]] = defaultdict(list)
    for r in usable:
        grouped[key_of(r)].append(r)
    steps = batch_steps(rows) if has_target else {}
    reached_batches = {b for b, _ in steps}
    fit = _fit(rows) if has_target else None
    out = []
    for key in sorted(grouped, key=lambda k: (k[0], k[1], k[2] or 0.0)):
        m = _one(
            key,
            grouped[key],
            has_target=has_target,
            steps=steps.get((key[0], key[2])),
            fit=fit,
            reached_batches=reached_batches,
            epochs=epochs or {},
        )
        if m is not None:
            out.append(m)
    return out


def _one(
    key: Key,
    runs: Sequence[ResultRow],
    *,
    has_target: bool,
    steps: Sequence[float] | None,
    fit: CriticalBatchFit | None,
    reached_batches: set[int],
    epochs: Mapping[str, Sequence[float]],
) -> Modelled | None:
    """One configuration's model from its trials (see the module docstring for the rules)."""
    batch, gpus, rate = key
    times = [
        t
        for r in runs
        if (t := r.time_to_target_seconds if has_target else r.seconds) is not None
        and math.isfinite(t)
    ]
    timed = [(r, s) for r in runs if (s := step_seconds(r)) is not None]
    step_runs = tuple(s for _, s in timed)
    spreads = tuple(_spread(epochs.get(r.trial, ())) for r, _ in timed)
    efficiencies = [r.scaling_efficiency for r in runs if r.scaling_efficiency is not None]
    common = Modelled(
        batch_size=batch,
        gpus=gpus,
        learning_rate=rate,
        trial=runs[0].trial,
        seconds=mean(times) if times else 0.0,
        source=TIME,
        time_runs=tuple(times),
        measured=mean(times) if times else None,
        efficiency=mean(efficiencies) if efficiencies else None,
    )
    count, source = _steps(runs, has_target, steps, fit, batch in reached_batches)
    if step_runs and count is not None:
        t = median(step_runs)
        return replace(
            common,
            seconds=count * t,
            source=source,
            steps=count,
            step_time=t,
            step_runs=step_runs,
            spreads=spreads if any(len(set(x)) > 1 for x in spreads) else (),
        )
    return common if times else None


def _spread(values: Sequence[float]) -> tuple[float, ...]:
    """Per-epoch step times relative to their median (1.0 alone without a curve)."""
    centre = median(values) if values else 0.0
    return tuple(v / centre for v in values) if centre > 0 else (1.0,)


def _steps(
    runs: Sequence[ResultRow],
    has_target: bool,
    steps: Sequence[float] | None,
    fit: CriticalBatchFit | None,
    batch_reached: bool,
) -> tuple[float | None, str]:
    """The configuration's step count and where it came from (None: no usable count)."""
    if not has_target:  # no steps-to-target: the measured training time stands
        return None, TIME
    if steps:
        return mean(steps), MEASURED
    if fit is None or batch_reached:  # another rate of this batch reached it, this one did not
        return None, FIT
    predicted = fit.steps(runs[0].batch_size)
    most = max((r.steps or 0 for r in runs), default=0)
    return (predicted if predicted > most else None), FIT


@dataclass
class Draws:
    """Bootstrap draws of modelled times, computed once per batch and configuration asked for."""

    steps: dict[tuple[int, float | None], list[float]]  # the batch's steps-to-target runs
    resamples: int = RESAMPLES
    _batch: dict[tuple[int, float | None], list[float]] = field(default_factory=dict)
    _config: dict[Key, list[float]] = field(default_factory=dict)

    @staticmethod
    def of(rows: Sequence[ResultRow], resamples: int = RESAMPLES) -> Draws:
        return Draws(steps=batch_steps(rows), resamples=resamples)

    def repeated(self, configs: Iterable[Modelled]) -> bool:
        """Whether any configuration rests on two runs or more."""
        return any(
            len(c.step_runs) > 1
            or (c.source == MEASURED and len(self.steps.get(c.batch_key, ())) > 1)
            or (c.source == TIME and len(c.time_runs) > 1)
            for c in configs
        )

    def varies(self, configs: Iterable[Modelled]) -> bool:
        """Whether the draws vary: repeats, or per-epoch step times within a trial."""
        configs = list(configs)
        return self.repeated(configs) or any(c.spreads for c in configs)

    def seconds(self, c: Modelled) -> list[float]:
        """`resamples` draws of c's modelled time (paired with every other configuration's)."""
        if c.key not in self._config:
            self._config[c.key] = self._draw(c)
        return self._config[c.key]

    def _draw(self, c: Modelled) -> list[float]:
        rng = random.Random(f"config {c.key}")
        n = self.resamples
        if c.source == TIME:
            k = len(c.time_runs)
            return [math.fsum(rng.choices(c.time_runs, k=k)) / k for _ in range(n)]
        steps = self._steps(c) if c.source == MEASURED else [c.steps or 0.0] * n
        k = len(c.step_runs)
        if not c.spreads:
            if k == 1:
                return [s * c.step_runs[0] for s in steps]
            return [s * median(rng.choices(c.step_runs, k=k)) for s in steps]
        # over repeats, then within each drawn repeat over its epochs' step times
        trials = list(zip(c.step_runs, c.spreads, strict=True))
        out = []
        for s in steps:
            drawn = rng.choices(trials, k=k) if k > 1 else trials
            times = [t * median(rng.choices(f, k=len(f))) for t, f in drawn]
            out.append(s * median(times))
        return out

    def _steps(self, c: Modelled) -> list[float]:
        if c.batch_key not in self._batch:
            runs = self.steps.get(c.batch_key) or [c.steps or 0.0]
            rng = random.Random(f"batch {c.batch_key}")
            k = len(runs)
            self._batch[c.batch_key] = [
                math.fsum(rng.choices(runs, k=k)) / k if k > 1 else runs[0]
                for _ in range(self.resamples)
            ]
        return self._batch[c.batch_key]

    def bounds(self, c: Modelled) -> tuple[float, float]:
        """The smallest and largest value any draw of c can take (without drawing)."""
        if c.source == TIME:
            return min(c.time_runs), max(c.time_runs)
        runs = self.steps.get(c.batch_key) if c.source == MEASURED else None
        s = runs or [c.steps or 0.0]
        spreads = c.spreads or tuple((1.0,) for _ in c.step_runs)
        pairs = list(zip(c.step_runs, spreads, strict=True))
        low = min(t * min(f) for t, f in pairs)
        high = max(t * max(f) for t, f in pairs)
        return min(s) * low, max(s) * high
