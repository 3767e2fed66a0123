"""Predicted step time, time-to-target and GPU-seconds at GPU counts the sweep did not measure.

Per batch, a step-time model over the process count N is fitted to the measured step times and
evaluated up to 4× the largest measured count (within maxGPUs). Time-to-target is the batch's
steps-to-target × the predicted step time (the modelled time-to-target of a measured
configuration, timing.py, is the same product); GPU-seconds is N × that. The model
(docs/scaling-model.md says why, and where it fails):

- strong scaling (batchScope global, global batch B fixed): t(N) = compute/N + comm·log2 N
  [+ serial]: forward and backward over B/N examples, one gradient allreduce whose cost grows
  with log2 N (a tree or hierarchical allreduce; a bound on a larger network's congestion),
  and work every process repeats (fitted only from 4 distinct counts, so that a fit never has
  as many parameters as points);
- weak scaling (batchScope perProcess, b per process, global b·N): t(N) = compute + comm·log2 N.

comm·log2 N is 0 at N = 1. Coefficients are ≥ 0 (least squares over every subset of terms,
relative residuals). The ring allreduce's saturating 2(N−1)/N is fitted beside log2 N: log2 N
is the central prediction (on published figures the ring shape misses VGG-16's fall from 128
to 512 GPUs by 11 points: bench/scaling_prediction.py) and the interval covers both.

Interval: a 95% percentile bootstrap. Each resample draws, at every measured count, that
count's step times with replacement (each epoch's, scaled to its trial's median step time and
pooled over the trials, where the results file keeps the curves; else each trial's) and fits
the model to their medians; steps-to-target are drawn from the batch's repeats (the S(B) fit of
critical.py refitted where used). The interval is the union of the 2.5–97.5% ranges under
both shapes: model form as well as measurement noise.

Pure functions over `ResultRow`s (no numpy: the operator runs without it), called by
results/model.py (the results file), report/predictions.py (the report) and
bench/scaling_prediction.py (validation on published figures and on a held-out count).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from statistics import mean, median
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from scalelab.api import ResultRow, TrialPhase
from scalelab.critical import fit_critical_batch, steps_by_batch

MEASURED = frozenset({TrialPhase.SUCCEEDED, TrialPhase.DIVERGED})
EXTRAPOLATION = 4  # predict up to this many times the largest measured count
RESAMPLES = 400
LOW, HIGH = 0.025, 0.975
SERIAL_FROM = 4  # distinct counts needed before the serial term is fitted
MODEL_TEXT = {
    False: "t(N) = compute/N + comm·log2 N (+ serial from 4 counts); global batch fixed",
    True: "t(N) = compute + comm·log2 N; per-process batch fixed, global batch b·N",
}


def log2_shape(gpus: float) -> float:
    """Communication growth of a tree or hierarchical allreduce: log2 N (0 at N = 1)."""
    return math.log2(gpus)


def ring_shape(gpus: float) -> float:
    """Bandwidth term of a ring allreduce: 2(N−1)/N (0 at N = 1, saturates at 2)."""
    return 2 * (gpus - 1) / gpus


SHAPES: dict[str, Callable[[float], float]] = {"log2": log2_shape, "ring": ring_shape}


@dataclass(frozen=True)
class StepModel:
    """t(N) = serial + compute·share(N) + comm·shape(N); share is 1/N (strong) or 1 (weak)."""

    compute: float
    comm: float
    serial: float = 0.0
    weak: bool = False
    shape: str = "log2"

    def step_seconds(self, gpus: float) -> float:
        """Predicted seconds per optimizer step on `gpus` processes."""
        share = 1.0 if self.weak else 1.0 / gpus
        return self.serial + self.compute * share + self.comm * SHAPES[self.shape](gpus)

    def efficiency(self, gpus: float, base: float) -> float:
        """Scaling efficiency at `gpus` against `base` processes (strong: throughput per
        process; weak: step time ratio)."""
        ratio = self.step_seconds(base) / self.step_seconds(gpus)
        return ratio if self.weak else ratio * base / gpus


def _solve(matrix: list[list[float]], rhs: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting; None when (nearly) singular."""
    n = len(rhs)
    a = [[*row, value] for row, value in zip(matrix, rhs, strict=True)]
    scale = max((abs(v) for row in matrix for v in row), default=0.0) or 1.0
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        if abs(a[pivot][col]) <= 1e-12 * scale:
            return None
        a[col], a[pivot] = a[pivot], a[col]
        for r in range(col + 1, n):
            factor = a[r][col] / a[col][col]
            for c in range(col, n + 1):
                a[r][c] -= factor * a[col][c]
    out = [0.0] * n
    for r in range(n - 1, -1, -1):
        out[r] = (a[r][n] - sum(a[r][c] * out[c] for c in range(r + 1, n))) / a[r][r]
    return out


def _weighted_lstsq(columns: Sequence[Sequence[float]], y: Sequence[float]) -> list[float] | None:
    """Least squares of Σ ((y − Xβ)/y)²: relative residuals, as critical.py fits S(B)."""
    w = [1.0 / (v * v) for v in y]
    k = len(columns)
    normal = [
        [sum(wi * ci * cj for wi, ci, cj in zip(w, columns[i], columns[j], strict=True))
         for j in range(k)]
        for i in range(k)
    ]  # fmt: skip
    rhs = [sum(wi * ci * yi for wi, ci, yi in zip(w, columns[i], y, strict=True)) for i in range(k)]
    return _solve(normal, rhs)


def _nonnegative_fit(
    columns: Mapping[str, Sequence[float]], y: Sequence[float], required: str
) -> dict[str, float] | None:
    """Relative least squares with every coefficient ≥ 0, by trying every subset of columns
    that keeps `required` (at most 3 columns: 4 subsets) and keeping the best feasible one."""
    names = [n for n in columns if n != required]
    best: tuple[float, dict[str, float]] | None = None
    # The unconstrained optimum, when feasible, is the constrained one: try it first (it
    # usually is, and the bootstrap fits hundreds of times).
    for size in (len(names), *range(len(names))):
        for extra in combinations(names, size):
            chosen = [required, *extra]
            coef = _weighted_lstsq([columns[n] for n in chosen], y)
            if coef is None or coef[0] <= 0 or any(c < 0 for c in coef[1:]):
                continue
            fitted = dict(zip(chosen, coef, strict=True))
            if size == len(names):
                return fitted
            sse = sum(
                ((v - sum(fitted[n] * columns[n][i] for n in chosen)) / v) ** 2
                for i, v in enumerate(y)
            )
            if best is None or sse < best[0] - 1e-15:
                best = (sse, fitted)
    return None if best is None else best[1]


def fit_step_model(
    points: Mapping[int, float], weak: bool = False, shape: str = "log2"
) -> StepModel | None:
    """The step-time model through `points` (process count → step seconds); None below 2
    distinct counts or when nothing positive fits."""
    counts = sorted(n for n, t in points.items() if n > 0 and t > 0 and math.isfinite(t))
    if len(counts) < 2:
        return None
    y = [points[n] for n in counts]
    columns: dict[str, list[float]] = {
        "compute": [1.0 if weak else 1.0 / n for n in counts],
        "comm": [SHAPES[shape](n) for n in counts],
    }
    if not weak and len(counts) >= SERIAL_FROM:
        columns["serial"] = [1.0] * len(counts)
    fitted = _nonnegative_fit(columns, y, required="compute")
    if fitted is None:
        return None
    return StepModel(
        compute=fitted["compute"],
        comm=fitted.get("comm", 0.0),
        serial=fitted.get("serial", 0.0),
        weak=weak,
        shape=shape,
    )


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of `values` by linear interpolation."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def curve_step_seconds(batch_size: int, samples_per_second: Sequence[Any]) -> list[float]:
    """Each epoch's seconds per step from a trial's samplesPerSecond curve (global batch /
    global throughput), without the first epoch when there are 3 or more: it carries the
    start-up (graph tracing, allocator warm-up) that the trainer's steady state leaves out."""
    values = [
        batch_size / float(v)
        for v in samples_per_second
        if isinstance(v, int | float) and not isinstance(v, bool) and v > 0 and math.isfinite(v)
    ]
    return values[1:] if len(values) >= 3 else values


# --- the measurements of one batch ------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """One batch's step-time observations by process count: the global batch (strong scaling)
    or the per-process batch (weak)."""

    batch: int
    weak: bool
    observations: Mapping[int, tuple[float, ...]]  # what the bootstrap draws from
    trial_steps: Mapping[int, tuple[float, ...]] | None = None  # each trial's step time

    def global_batch(self, gpus: int) -> int:
        """The global batch of this series on `gpus` processes."""
        return self.batch * gpus if self.weak else self.batch

    def medians(self) -> dict[int, float]:
        """The median over trials of the step time at each measured count (timing.py's
        t(B, N), what the central fit goes through)."""
        steps = self.trial_steps or self.observations
        return {n: median(v) for n, v in steps.items()}


def row_step_seconds(row: ResultRow) -> float | None:
    """A trial's steady-state seconds per step: the trainer's median (stepSeconds), else
    global batch / global throughput (the mean), as timing.py takes it."""
    if row.phase not in MEASURED:
        return None
    if row.step_seconds is not None and row.step_seconds > 0:
        return row.step_seconds
    speed = row.samples_per_second
    if not speed or speed <= 0 or not math.isfinite(speed):
        return None
    return row.batch_size / speed


def collect_series(
    rows: Sequence[ResultRow], weak: bool, step_samples: Mapping[str, Sequence[float]] | None = None
) -> list[Series]:
    """Step-time observations per batch and count. The central fit goes through the median of
    the trials' step times (`row_step_seconds`, timing.py's t(B, N)). The bootstrap draws from
    each trial's per-epoch step times where `step_samples` has them (trial name → seconds),
    scaled to that trial's step time and pooled over the count's trials, so that it sees the
    spread within runs as well as between them (a bootstrap over 2 runs alone only ever
    spans those 2); else from the trials' step times. Throughput does not depend on the
    learning rate, so a learningRates axis adds observations, not series."""
    found: dict[int, dict[int, list[tuple[str, float]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        step = row_step_seconds(row)
        if step is not None:
            key = row.batch_size // row.gpus if weak else row.batch_size
            found[key][row.gpus].append((row.trial, step))
    out = []
    for batch, by_count in sorted(found.items()):
        trial_steps = {n: tuple(t for _, t in trials) for n, trials in sorted(by_count.items())}
        observations = {}
        for n, trials in sorted(by_count.items()):
            pooled: list[float] = []
            for name, step in trials:
                epochs = [v for v in (step_samples or {}).get(name, ()) if v > 0]
                centre = median(epochs) if epochs else step
                pooled.extend(step * v / centre for v in epochs or [step])
            observations[n] = tuple(pooled)
        out.append(Series(batch, weak, observations, trial_steps))
    return out


def prediction_counts(measured: Sequence[int], max_gpus: int) -> list[int]:
    """Counts to predict: doublings of the largest measured count, and the limit itself, up to
    4× the largest measured and within maxGPUs."""
    largest = max(measured)
    limit = min(EXTRAPOLATION * largest, max_gpus)
    counts = []
    n = largest * 2
    while n <= limit:
        counts.append(n)
        n *= 2
    if limit > largest and limit not in counts:
        counts.append(limit)
    return sorted(counts)


# --- steps to target ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StepsSource:
    """Steps-to-target per global batch: measured repeats, the S(B) fit between and beyond them,
    or (without a target loss) the steps the trials ran."""

    samples: Mapping[int, Sequence[float]]
    source: str  # "measured" (to the target) or "run" (no target: the steps trained)

    def central(self) -> Callable[[int], float | None]:
        """Steps at a global batch from the repeats' means (and their S(B) fit)."""
        return self._steps({b: mean(v) for b, v in self.samples.items()})

    def resampled(self, rng: random.Random) -> Callable[[int], float | None]:
        """Steps at a global batch after drawing every batch's repeats with replacement."""
        return self._steps({b: mean(rng.choices(v, k=len(v))) for b, v in self.samples.items()})

    def _steps(self, means: Mapping[int, float]) -> Callable[[int], float | None]:
        fit = None
        if self.source == "measured" and len(means) >= 2:
            fit = fit_critical_batch(list(means), list(means.values()))

        def steps(batch: int) -> float | None:
            if batch in means:
                return means[batch]
            return fit.steps(batch) if fit is not None else None

        return steps

    def kind(self, batch: int) -> str | None:
        """Where the steps at `batch` come from: measured, fit, run, or None."""
        if batch in self.samples:
            return self.source
        return "fit" if self.source == "measured" and len(self.samples) >= 2 else None


def steps_source(rows: Sequence[ResultRow]) -> StepsSource:
    """Steps-to-target per global batch (critical.py's choice: at the fewest processes, at the
    best learning rate); without any, the steps each batch's measured trials ran."""
    reached = steps_by_batch(rows)
    if reached:
        return StepsSource(reached, "measured")
    ran: dict[int, list[float]] = defaultdict(list)
    for row in rows:
        if row.phase in MEASURED and row.steps:
            ran[row.batch_size].append(float(row.steps))
    return StepsSource(dict(ran), "run")


# --- the predictions, JSON-ready ----------------------------------------------------------------


class PredictionModel(BaseModel):
    """camelCase in results.json, as the rest of the file; unknown keys ignored."""

    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True)


class PredictedPoint(PredictionModel):
    """One process count of a batch: the model's value (measured counts too, beside the
    measurement) with its 95% interval, and why it may not hold there."""

    gpus: int
    batch_size: int  # the global batch at this count
    measured: bool
    step_seconds: float
    step_seconds_low: float
    step_seconds_high: float
    efficiency: float  # against the smallest count measured for this batch
    steps_to_target: float | None = None
    steps_source: str | None = None  # measured, fit (S(B)), run (no target: the steps trained)
    time_to_target_seconds: float | None = None
    time_to_target_low: float | None = None
    time_to_target_high: float | None = None
    gpu_seconds: float | None = None
    gpu_seconds_low: float | None = None
    gpu_seconds_high: float | None = None
    warnings: list[str] = Field(default_factory=list)


class BatchPrediction(PredictionModel):
    """The fit of one batch over process counts and its points, measured and predicted."""

    batch_size: int  # global batch (scope global) or per-process batch (scope perProcess)
    scope: str
    measured_gpus: list[int]
    observations: int  # step-time observations behind the fit
    compute_seconds: float
    comm_seconds: float  # per unit of log2 N
    serial_seconds: float
    ring_comm_seconds: float  # the same fit with the ring shape 2(N−1)/N
    max_relative_residual: float  # of the central fit at the measured counts
    points: list[PredictedPoint] = Field(default_factory=list)


class ScalingPredictions(PredictionModel):
    """results.json `scalingPredictions`: every batch measured on 2 or more counts."""

    model: str
    interval: str
    resamples: int
    max_gpus: int
    batches: list[BatchPrediction] = Field(default_factory=list)
    caveats: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class Context:
    """What the point warnings need besides the series (cores: of a local CPU run's host)."""

    smallest_per_process: float
    largest_steps_batch: int | None
    cores: int | None = None
    processes_per_worker: int | None = None


def _draws(
    series: Series, counts: Sequence[int], steps: StepsSource, resamples: int, seed: int
) -> dict[str, dict[int, tuple[list[float], list[float]]]]:
    """Bootstrap step times and times-to-target per shape and count (see the module doc)."""
    out: dict[str, dict[int, tuple[list[float], list[float]]]] = {}
    for shape in SHAPES:
        rng = random.Random(seed)
        by_count: dict[int, tuple[list[float], list[float]]] = {n: ([], []) for n in counts}
        for _ in range(resamples):
            medians = {
                n: median(rng.choices(obs, k=len(obs))) for n, obs in series.observations.items()
            }
            model = fit_step_model(medians, series.weak, shape)
            steps_of = steps.resampled(rng)
            if model is None:
                continue
            for n in counts:
                t = model.step_seconds(n)
                by_count[n][0].append(t)
                s = steps_of(series.global_batch(n))
                if s is not None:
                    by_count[n][1].append(s * t)
        out[shape] = by_count
    return out


def _interval(central: float, per_shape: Sequence[list[float]]) -> tuple[float, float]:
    """The union of the shapes' 2.5–97.5% ranges, widened to hold the central value."""
    lows = [quantile(v, LOW) for v in per_shape if v]
    highs = [quantile(v, HIGH) for v in per_shape if v]
    return min([central, *lows]), max([central, *highs])


def point_warnings(series: Series, gpus: int, steps_kind: str | None, ctx: Context) -> list[str]:
    """Why the model may not hold at `gpus` (each a sentence a reader can act on)."""
    out = []
    measured = max(series.observations)
    per_process = series.batch if series.weak else series.batch / gpus
    if not series.weak and per_process < ctx.smallest_per_process:
        out.append(
            f"{per_process:g} examples per process, fewer than any trial measured "
            f"({ctx.smallest_per_process:g}): the model assumes compute shrinks ∝ 1/N, but a "
            "GPU with too little work per step is underused, so expect a longer step"
        )
    if ctx.cores is not None and gpus > ctx.cores:
        out.append(
            f"{gpus} processes on {ctx.cores} cores: compute stops dividing once processes "
            "share cores, which the model does not know"
        )
    ppw = ctx.processes_per_worker
    if ppw is not None and measured <= ppw < gpus:
        out.append(
            f"every measured count fits in one worker ({ppw} processes per worker); {gpus} "
            "cross the network between workers, which the fit has not seen (expect more "
            "communication)"
        )
    batch = series.global_batch(gpus)
    if steps_kind == "fit" and ctx.largest_steps_batch is not None:
        beyond = batch > ctx.largest_steps_batch
        out.append(
            f"steps-to-target at batch {batch} from the fit S(B) = S_min(1 + B_crit/B)"
            + (f", beyond the largest batch run to the target ({ctx.largest_steps_batch})"
               if beyond else "")
        )  # fmt: skip
    if steps_kind is None:
        out.append(f"no steps-to-target at batch {batch}: no time or GPU-seconds predicted")
    return out


def _point(
    series: Series,
    gpus: int,
    *,
    central: StepModel,
    draws: Mapping[str, Mapping[int, tuple[list[float], list[float]]]],
    steps: StepsSource,
    ctx: Context,
) -> PredictedPoint:
    """One count's predicted point from the central fit and the bootstrap draws."""
    t = central.step_seconds(gpus)
    t_low, t_high = _interval(t, [d[gpus][0] for d in draws.values()])
    batch = series.global_batch(gpus)
    kind = steps.kind(batch)
    s = steps.central()(batch)
    time = s * t if s is not None else None
    point = PredictedPoint(
        gpus=gpus,
        batch_size=batch,
        measured=gpus in series.observations,
        step_seconds=t,
        step_seconds_low=t_low,
        step_seconds_high=t_high,
        efficiency=central.efficiency(gpus, min(series.observations)),
        steps_to_target=s,
        steps_source=kind if s is not None else None,
        warnings=point_warnings(series, gpus, kind if s is not None else None, ctx),
    )
    if time is None:
        return point
    low, high = _interval(time, [d[gpus][1] for d in draws.values()])
    return point.model_copy(
        update={
            "time_to_target_seconds": time,
            "time_to_target_low": low,
            "time_to_target_high": high,
            "gpu_seconds": gpus * time,
            "gpu_seconds_low": gpus * low,
            "gpu_seconds_high": gpus * high,
        }
    )


def predict_series(
    series: Series,
    counts: Sequence[int],
    *,
    steps: StepsSource,
    ctx: Context,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> BatchPrediction | None:
    """The fit of one series and its points at the measured counts and `counts`; None when
    the series has fewer than 2 counts."""
    medians = series.medians()
    central = fit_step_model(medians, series.weak, "log2")
    ring = fit_step_model(medians, series.weak, "ring")
    if central is None or ring is None:
        return None
    wanted = sorted(
        {*series.observations, *(n for n in counts if series.weak or series.batch % n == 0)}
    )
    draws = _draws(series, wanted, steps, resamples, seed)
    residual = max(abs(central.step_seconds(n) - t) / t for n, t in medians.items())
    return BatchPrediction(
        batch_size=series.batch,
        scope="perProcess" if series.weak else "global",
        measured_gpus=sorted(series.observations),
        observations=sum(len(v) for v in series.observations.values()),
        compute_seconds=central.compute,
        comm_seconds=central.comm,
        serial_seconds=central.serial,
        ring_comm_seconds=ring.comm,
        max_relative_residual=residual,
        points=[
            _point(series, n, central=central, draws=draws, steps=steps, ctx=ctx) for n in wanted
        ],
    )


CAVEATS = (
    "Memory: the model knows nothing of GPU memory. Weak scaling keeps each GPU's batch, so a "
    "batch that fits on one GPU fits on more; strong scaling shrinks it. A batch that did not "
    "fit where it was measured is not predicted at all.",
    "Network topology: the communication term is fitted on the counts measured, so it knows "
    "only their interconnect. Going from one node (NVLink or PCIe) to several (Ethernet, "
    "InfiniBand) adds a slower link, and a congested or oversubscribed network slows it more.",
    "Batch too small per GPU: strong scaling assumes compute shrinks ∝ 1/N. Below the smallest "
    "per-process batch measured, a GPU has too little work per step to run at full speed.",
    "Noise: the interval is the bootstrap over the step times and repeats measured, plus both "
    "communication shapes. A machine shared with other jobs moves the step times themselves.",
)


def predictions(
    rows: Sequence[ResultRow],
    *,
    weak: bool,
    max_gpus: int,
    step_samples: Mapping[str, Sequence[float]] | None = None,
    cores: int | None = None,
    processes_per_worker: int | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> ScalingPredictions:
    """Predicted step time, time-to-target and GPU-seconds per batch, at the measured counts
    and up to 4× the largest measured within `max_gpus` (seeded: the same rows, the same
    intervals)."""
    series = collect_series(rows, weak, step_samples)
    steps = steps_source(rows)
    per_process = [r.batch_size / r.gpus for r in rows if row_step_seconds(r) is not None]
    ctx = Context(
        smallest_per_process=min(per_process, default=0.0),
        largest_steps_batch=max(steps.samples, default=None),
        cores=cores,
        processes_per_worker=processes_per_worker,
    )
    batches = []
    for s in series:
        if len(s.observations) < 2:
            continue
        counts = prediction_counts(list(s.observations), max_gpus)
        fitted = predict_series(s, counts, steps=steps, ctx=ctx, resamples=resamples, seed=seed)
        if fitted is not None:
            batches.append(fitted)
    interval = (
        f"95% bootstrap ({resamples} resamples): each measured count's step times drawn with "
        "replacement (each epoch's, scaled to its trial's median and pooled over repeats, where "
        "the curves are kept; else each trial's), steps-to-target from the repeats; the union "
        "of the log2 N and ring-allreduce fits"
    )
    return ScalingPredictions(
        model=MODEL_TEXT[weak],
        interval=interval,
        resamples=resamples,
        max_gpus=max_gpus,
        batches=batches,
        caveats=list(CAVEATS),
    )


# --- validation on a held-out count -------------------------------------------------------------


@dataclass(frozen=True)
class HoldoutCheck:
    """The largest measured count of a batch, predicted from the others and then compared: its
    modelled time-to-target (its own steps × median step time, as a measured configuration's)
    and the wall-clock time-to-target its trials reported."""

    batch: int
    fitted_gpus: tuple[int, ...]
    predicted: PredictedPoint
    measured_step_seconds: float
    measured_time_seconds: float | None
    wall_time_seconds: float | None

    @property
    def inside(self) -> bool | None:
        """Whether the measured modelled time-to-target lies in the predicted interval."""
        p, value = self.predicted, self.measured_time_seconds
        if value is None or p.time_to_target_low is None or p.time_to_target_high is None:
            return None
        return p.time_to_target_low <= value <= p.time_to_target_high


def holdout(
    rows: Sequence[ResultRow],
    *,
    weak: bool,
    step_samples: Mapping[str, Sequence[float]] | None = None,
    cores: int | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> list[HoldoutCheck]:
    """For every batch measured on 3 or more counts: fit on all but the largest, predict it.
    The prediction sees no row of the held-out count (its steps-to-target included: a weak
    sweep's global batch there may come from the S(B) fit)."""
    measured_steps = steps_source(rows).central()
    checks = []
    for full in collect_series(rows, weak, step_samples):
        if len(full.observations) < 3:
            continue
        held = max(full.observations)
        series = Series(
            full.batch,
            weak,
            {n: v for n, v in full.observations.items() if n != held},
            {n: v for n, v in (full.trial_steps or {}).items() if n != held},
        )
        fit_rows = [r for r in rows if not (r.gpus == held and _in_series(r, full))]
        steps = steps_source(fit_rows)
        ctx = Context(
            smallest_per_process=min(
                (r.batch_size / r.gpus for r in fit_rows if row_step_seconds(r) is not None),
                default=0.0,
            ),
            largest_steps_batch=max(steps.samples, default=None),
            cores=cores,
        )
        fitted = predict_series(
            series, [held], steps=steps, ctx=ctx, resamples=resamples, seed=seed
        )
        if fitted is None:
            continue
        measured_step = full.medians()[held]
        own = measured_steps(full.global_batch(held))
        walls = [
            r.time_to_target_seconds
            for r in rows
            if r.gpus == held and _in_series(r, full) and r.time_to_target_seconds is not None
        ]
        checks.append(
            HoldoutCheck(
                batch=full.batch,
                fitted_gpus=tuple(sorted(series.observations)),
                predicted=next(p for p in fitted.points if p.gpus == held),
                measured_step_seconds=measured_step,
                measured_time_seconds=own * measured_step if own is not None else None,
                wall_time_seconds=mean(walls) if walls else None,
            )
        )
    return checks


def _in_series(row: ResultRow, series: Series) -> bool:
    key = row.batch_size // row.gpus if series.weak else row.batch_size
    return key == series.batch
