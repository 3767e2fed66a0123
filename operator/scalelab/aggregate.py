"""Aggregation of finished trials: scaling efficiency, GPU-seconds, counts, recommendation, fits.

Pure functions over `ResultRow`s (the rows of ScaleExperiment.status.results), so the local
executor and the kopf operator compute the same table and the same recommendation.

- scaling efficiency: strong E = thr(N,B)/(N·thr(1,B)) when the sweep's batches are global;
  weak E = thr(N,b·N)/(N·thr(1,b)) when they are per process. The 1-process throughput is the
  mean over repeats of that grid point.
- GPU-seconds: processes × time-to-target (× training time when the trial has no target time).
- recommendation: the fastest configuration to the target within maxGPUs, and the Pareto front
  of time-to-target vs GPU-seconds. Without a target loss, "target" is convergence to within 1%
  of the best final loss of the sweep, and time is the training time.
- fit of steps-to-target S(B) = S_min(1 + B_crit/B) (McCandlish et al. 2018).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import mean

from scalelab.api import (
    ParetoPoint,
    Recommendation,
    ResultRow,
    TrialCounts,
    TrialPhase,
)

MEASURED = frozenset({TrialPhase.SUCCEEDED, TrialPhase.DIVERGED})
NO_TARGET_SLACK = 1.01  # without a targetLoss: within 1% of the best final loss counts as there


def trial_counts(phases: Iterable[TrialPhase]) -> TrialCounts:
    """Trials by phase."""
    counts = TrialCounts()
    for phase in phases:
        counts.total += 1
        field = phase.value.lower()
        setattr(counts, field, getattr(counts, field) + 1)
    return counts


def with_scaling(rows: Sequence[ResultRow], weak: bool = False) -> list[ResultRow]:
    """Copies of `rows` with scalingEfficiency (strong, or weak) and gpuSeconds filled in."""
    baseline: dict[int, list[float]] = defaultdict(list)
    for row in rows:
        if row.gpus == 1 and row.phase in MEASURED and row.samples_per_second:
            baseline[row.batch_size].append(row.samples_per_second)
    out: list[ResultRow] = []
    for row in rows:
        key = row.batch_size // row.gpus if weak else row.batch_size
        efficiency = None
        if row.phase in MEASURED and row.samples_per_second and baseline.get(key):
            efficiency = row.samples_per_second / (row.gpus * mean(baseline[key]))
        time = row.time_to_target_seconds if row.time_to_target_seconds else row.seconds
        gpu_seconds = row.gpus * time if time is not None else None
        out.append(
            row.model_copy(update={"scaling_efficiency": efficiency, "gpu_seconds": gpu_seconds})
        )
    return out


@dataclass(frozen=True)
class _Config:
    batch_size: int
    gpus: int
    trial: str
    time: float
    gpu_seconds: float


def _candidates(rows: Sequence[ResultRow], max_gpus: int, has_target: bool) -> list[_Config]:
    usable = [r for r in rows if r.phase is TrialPhase.SUCCEEDED and r.gpus <= max_gpus]
    if has_target:
        timed = [(r, r.time_to_target_seconds) for r in usable]
    else:
        losses = [r.final_loss for r in usable if r.final_loss is not None]
        if not losses:
            return []
        bar = min(losses) * NO_TARGET_SLACK if min(losses) > 0 else min(losses)
        timed = [(r, r.seconds) for r in usable if r.final_loss is not None and r.final_loss <= bar]
    grouped: dict[tuple[int, int], list[tuple[ResultRow, float]]] = defaultdict(list)
    for row, time in timed:
        if time is not None and math.isfinite(time):
            grouped[(row.batch_size, row.gpus)].append((row, time))
    configs = []
    for (batch, gpus), runs in sorted(grouped.items()):
        time = mean(t for _, t in runs)
        configs.append(_Config(batch, gpus, runs[0][0].trial, time, gpus * time))
    return configs


def pareto_front(configs: Sequence[_Config]) -> list[_Config]:
    """Configurations no other one beats on both time and GPU-seconds, fastest first."""
    front = [
        c
        for c in configs
        if not any(
            o.time <= c.time
            and o.gpu_seconds <= c.gpu_seconds
            and (o.time < c.time or o.gpu_seconds < c.gpu_seconds)
            for o in configs
        )
    ]
    return sorted(front, key=lambda c: (c.time, c.gpu_seconds))


def recommend(
    rows: Sequence[ResultRow],
    max_gpus: int,
    has_target: bool,
    learning_rates: dict[str, float] | None = None,
) -> Recommendation:
    """The fastest configuration to the target within the GPU budget, with the Pareto front."""
    configs = _candidates(rows, max_gpus, has_target)
    if not configs:
        why = (
            "no trial reached the target loss within maxGPUs"
            if has_target
            else "no trial succeeded within maxGPUs"
        )
        return Recommendation(reason=why)
    front = pareto_front(configs)
    best = front[0]
    cheapest = min(front, key=lambda c: c.gpu_seconds)
    goal = "the target loss" if has_target else "convergence (within 1% of the best final loss)"
    reason = (
        f"batch {best.batch_size} on {best.gpus} GPU(s) reaches {goal} fastest "
        f"({best.time:.3g} s, {best.gpu_seconds:.3g} GPU-s) among {len(configs)} "
        f"configuration(s) within maxGPUs={max_gpus}"
    )
    if cheapest is not best:
        reason += (
            f"; batch {cheapest.batch_size} on {cheapest.gpus} GPU(s) is cheapest "
            f"({cheapest.gpu_seconds:.3g} GPU-s, {cheapest.time:.3g} s)"
        )
    return Recommendation(
        trial=best.trial,
        batch_size=best.batch_size,
        gpus=best.gpus,
        learning_rate=(learning_rates or {}).get(best.trial),
        reason=reason,
        pareto=[
            ParetoPoint(
                trial=c.trial,
                batch_size=c.batch_size,
                gpus=c.gpus,
                time_to_target_seconds=c.time,
                gpu_seconds=c.gpu_seconds,
            )
            for c in front
        ],
    )


@dataclass(frozen=True)
class CriticalBatchFit:
    """S(B) = S_min(1 + B_crit/B), fitted to steps-to-target; r2 of log S."""

    s_min: float
    b_crit: float
    r2: float

    def steps(self, batch: float) -> float:
        """Predicted steps-to-target at `batch`."""
        return self.s_min * (1 + self.b_crit / batch)


def fit_critical_batch(batches: Sequence[float], steps: Sequence[float]) -> CriticalBatchFit | None:
    """Least squares of S = a + c/B with relative residuals; None below 2 distinct batches.

    S_min = a and B_crit = c/a. Relative residuals weight small and large step counts alike,
    which matters because S spans orders of magnitude across a batch sweep.
    """
    points = [(float(b), float(s)) for b, s in zip(batches, steps, strict=True) if b > 0 and s > 0]
    if len({b for b, _ in points}) < 2:
        return None
    # Weighted normal equations of [1, 1/B]·[a, c] ≈ S with weights 1/S².
    s11 = s12 = s22 = t1 = t2 = 0.0
    for b, s in points:
        w = 1.0 / (s * s)
        x = 1.0 / b
        s11 += w
        s12 += w * x
        s22 += w * x * x
        t1 += w * s
        t2 += w * x * s
    det = s11 * s22 - s12 * s12
    if det == 0:
        return None
    a = (t1 * s22 - t2 * s12) / det
    c = (s11 * t2 - s12 * t1) / det
    if a <= 0:
        # No plateau within the sweep (steps still fall ∝ 1/B): B_crit lies beyond it.
        a = min(s for _, s in points) * 1e-3
        c = mean(s * b for b, s in points)
    c = max(c, 0.0)
    fit = CriticalBatchFit(s_min=a, b_crit=c / a, r2=0.0)
    logs = [math.log(s) for _, s in points]
    predicted = [math.log(fit.steps(b)) for b, _ in points]
    centre = mean(logs)
    total = sum((v - centre) ** 2 for v in logs)
    residual = sum((v - p) ** 2 for v, p in zip(logs, predicted, strict=True))
    r2 = 1 - residual / total if total > 0 else 1.0
    return CriticalBatchFit(s_min=fit.s_min, b_crit=fit.b_crit, r2=r2)
