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
- uncertainty over repeats: scaling efficiency with a 95% interval per configuration, and the
  recommendation's confidence (share of bootstrap resamples that pick the same configuration).
- the critical batch size (predicted, fitted, 20% rule): critical.py; `analysis` joins both.

A configuration is (global batch, processes), and with a sweep.learningRates axis (batch,
processes, base learning rate) (`configuration`): every table, interval and recommendation is
then per learning rate, and the recommendation names the rate ("batch B on N GPU(s) at learning
rate η"). Throughput does not depend on the rate, but the 1-process baseline of an efficiency is
still the one at the same rate, so a diverged rate's trials never stand in for another's.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import mean, stdev

from scalelab.api import (
    CriticalBatch,
    EfficiencyInterval,
    ParetoPoint,
    Recommendation,
    ResultRow,
    TrialCounts,
    TrialPhase,
)
from scalelab.critical import critical_batch

MEASURED = frozenset({TrialPhase.SUCCEEDED, TrialPhase.DIVERGED})
NO_TARGET_SLACK = 1.01  # without a targetLoss: within 1% of the best final loss counts as there
CONFIDENCE_RESAMPLES = 1000
#: Student's t, two-sided 95%, by degrees of freedom (the nearest smaller df is used).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 8: 2.306, 10: 2.228,
       15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000, 120: 1.980}  # fmt: skip


def trial_counts(phases: Iterable[TrialPhase]) -> TrialCounts:
    """Trials by phase."""
    counts = TrialCounts()
    for phase in phases:
        counts.total += 1
        field = phase.value.lower()
        setattr(counts, field, getattr(counts, field) + 1)
    return counts


#: A configuration: global batch, processes, and the base learning rate of a sweep with a
#: learningRates axis (None without one).
Configuration = tuple[int, int, float | None]


def configuration(row: ResultRow) -> Configuration:
    """The configuration a row measures: its repeats are the runs of the same configuration."""
    return (row.batch_size, row.gpus, row.base_learning_rate)


def order(key: Configuration) -> tuple[int, int, float]:
    """Sort key of configurations: batch, then processes, then learning rate."""
    return (key[0], key[1], key[2] or 0.0)


def described(batch: int, gpus: int, learning_rate: float | None) -> str:
    """ "batch 256 on 2 GPU(s)", with " at learning rate 0.1" when the sweep has the axis."""
    rate = f" at learning rate {learning_rate:g}" if learning_rate is not None else ""
    return f"batch {batch} on {gpus} GPU(s){rate}"


def with_scaling(rows: Sequence[ResultRow], weak: bool = False) -> list[ResultRow]:
    """Copies of `rows` with scalingEfficiency (strong, or weak) and gpuSeconds filled in."""
    baseline: dict[tuple[int, float | None], list[float]] = defaultdict(list)
    for row in rows:
        if row.gpus == 1 and row.phase in MEASURED and row.samples_per_second:
            baseline[(row.batch_size, row.base_learning_rate)].append(row.samples_per_second)
    base = {key: mean(speeds) for key, speeds in baseline.items()}  # once per batch, not row
    out: list[ResultRow] = []
    for row in rows:
        key = (row.batch_size // row.gpus if weak else row.batch_size, row.base_learning_rate)
        efficiency = None
        if row.phase in MEASURED and row.samples_per_second and key in base:
            efficiency = row.samples_per_second / (row.gpus * base[key])
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
    times: tuple[float, ...] = ()  # each repeat's time (the bootstrap resamples these)
    learning_rate: float | None = None  # the base rate, with a learningRates axis

    @property
    def text(self) -> str:
        return described(self.batch_size, self.gpus, self.learning_rate)


def _candidates(rows: Sequence[ResultRow], max_gpus: int, has_target: bool) -> list[_Config]:
    # A configuration with a repeat the adaptive sweep stopped is out: the mean of its other
    # repeats would be biased towards the fast ones.
    stopped = {configuration(r) for r in rows if r.phase is TrialPhase.PRUNED}
    usable = [
        r
        for r in rows
        if r.phase is TrialPhase.SUCCEEDED
        and r.gpus <= max_gpus
        and configuration(r) not in stopped
    ]
    if has_target:
        timed = [(r, r.time_to_target_seconds) for r in usable]
    else:
        losses = [r.final_loss for r in usable if r.final_loss is not None]
        if not losses:
            return []
        bar = min(losses) * NO_TARGET_SLACK if min(losses) > 0 else min(losses)
        timed = [(r, r.seconds) for r in usable if r.final_loss is not None and r.final_loss <= bar]
    grouped: dict[Configuration, list[tuple[ResultRow, float]]] = defaultdict(list)
    for row, time in timed:
        if time is not None and math.isfinite(time):
            grouped[configuration(row)].append((row, time))
    configs = []
    for (batch, gpus, rate), runs in sorted(grouped.items(), key=lambda kv: order(kv[0])):
        time = mean(t for _, t in runs)
        times = tuple(t for _, t in runs)
        configs.append(_Config(batch, gpus, runs[0][0].trial, time, gpus * time, times, rate))
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
    resolved = (learning_rates or {}).get(best.trial)
    confidence = recommendation_confidence(configs, best)
    reason = _reason(
        configs,
        front,
        resolved=resolved,
        confidence=confidence,
        max_gpus=max_gpus,
        has_target=has_target,
    )
    return Recommendation(
        confidence=confidence,
        trial=best.trial,
        batch_size=best.batch_size,
        gpus=best.gpus,
        learning_rate=resolved,
        base_learning_rate=best.learning_rate,
        reason=reason,
        pareto=[
            ParetoPoint(
                trial=c.trial,
                batch_size=c.batch_size,
                gpus=c.gpus,
                base_learning_rate=c.learning_rate,
                time_to_target_seconds=c.time,
                gpu_seconds=c.gpu_seconds,
            )
            for c in front
        ],
    )


def _reason(
    configs: Sequence[_Config],
    front: Sequence[_Config],
    *,
    resolved: float | None,
    confidence: float | None,
    max_gpus: int,
    has_target: bool,
) -> str:
    """The recommendation as a sentence: the fastest, the cheapest, and how sure it is."""
    best = front[0]
    cheapest = min(front, key=lambda c: c.gpu_seconds)
    goal = "the target loss" if has_target else "convergence (within 1% of the best final loss)"
    scaled = (
        f" (scaled to {resolved:g} at this batch)"
        if best.learning_rate is not None
        and resolved is not None
        and not math.isclose(resolved, best.learning_rate, rel_tol=1e-9)
        else ""
    )
    reason = (
        f"{best.text}{scaled} reaches {goal} fastest "
        f"({best.time:.3g} s, {best.gpu_seconds:.3g} GPU-s) among {len(configs)} "
        f"configuration(s) within maxGPUs={max_gpus}"
    )
    if cheapest is not best:
        reason += (
            f"; {cheapest.text} is cheapest "
            f"({cheapest.gpu_seconds:.3g} GPU-s, {cheapest.time:.3g} s)"
        )
    if confidence is None:
        return (
            reason + "; one run per configuration, so no confidence figure (repeats ≥ 2 give one)"
        )
    return reason + (
        f"; {confidence:.0%} of {CONFIDENCE_RESAMPLES} bootstrap resamples over repeats pick it too"
    )


def recommendation_confidence(configs: Sequence[_Config], best: _Config) -> float | None:
    """Share of bootstrap resamples (each configuration's repeats drawn with replacement) in
    which `best` is still the fastest; None when no configuration has two runs."""
    if max(len(c.times) for c in configs) < 2:
        return None
    # A resample's mean lies between a configuration's fastest and slowest run, so only those
    # whose fastest run beats best's slowest can ever win (keeps 1000-point sweeps cheap).
    rivals = [c for c in configs if c is best or min(c.times or (c.time,)) <= max(best.times)]
    rng = random.Random(0)
    wins = 0
    # math.fsum/n, not statistics.mean: the same mean to the last bit or one ulp, without the
    # exact Fractions that made this loop most of the operator's CPU at 1,000 points.
    for _ in range(CONFIDENCE_RESAMPLES):
        times = [
            (math.fsum(rng.choices(c.times, k=len(c.times))) / len(c.times), c.gpu_seconds, c)
            for c in rivals
        ]
        fastest = min(times, key=lambda t: (t[0], t[1]))[2]
        wins += fastest is best
    return wins / CONFIDENCE_RESAMPLES


def _t95(df: int) -> float:
    return T95[max(k for k in T95 if k <= df)] if df >= 1 else math.inf


def efficiency_intervals(rows: Sequence[ResultRow], weak: bool = False) -> list[EfficiencyInterval]:
    """Scaling efficiency per configuration (batch, GPUs > 1[, learning rate]) as a ratio of
    mean throughputs, with a 95% interval from both means' standard errors (delta method,
    Student's t on the fewer runs)."""
    speeds: dict[Configuration, list[float]] = defaultdict(list)
    for r in rows:
        if r.phase in MEASURED and r.samples_per_second:
            speeds[configuration(r)].append(r.samples_per_second)
    out = []
    for (batch, gpus, rate), runs in sorted(speeds.items(), key=lambda kv: order(kv[0])):
        base = speeds.get((batch // gpus if weak else batch, 1, rate))
        if gpus == 1 or not base:
            continue
        value = mean(runs) / (gpus * mean(base))
        low = high = None
        if len(runs) > 1 and len(base) > 1:
            rel = math.sqrt(
                (stdev(runs) / mean(runs)) ** 2 / len(runs)
                + (stdev(base) / mean(base)) ** 2 / len(base)
            )
            half = _t95(min(len(runs), len(base)) - 1) * rel * value
            low, high = value - half, value + half
        out.append(
            EfficiencyInterval(
                batch_size=batch,
                gpus=gpus,
                base_learning_rate=rate,
                runs=len(runs),
                mean=value,
                low=low,
                high=high,
            )
        )
    return out


def analysis(rows: Sequence[ResultRow], weak: bool = False) -> CriticalBatch:
    """The critical batch size (critical.py) with the efficiency intervals beside it."""
    return critical_batch(rows).model_copy(update={"efficiency": efficiency_intervals(rows, weak)})
