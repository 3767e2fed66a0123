"""Aggregation of finished trials: scaling efficiency, GPU-seconds, counts, recommendation, fits.

Pure functions over `ResultRow`s (the rows of ScaleExperiment.status.results), so the local
executor and the kopf operator compute the same table and the same recommendation.

- scaling efficiency: strong E = thr(N,B)/((N/N₀)·thr(N₀,B)) when the sweep's batches are
  global; weak E = thr(N,b·N)/((N/N₀)·thr(N₀,b·N₀)) when they are per process. N₀ is the fewest
  processes measured at that batch (1 whenever a 1-process trial was; a sweep without one, or a
  batch too large for one GPU, gets efficiency relative to its smallest count, and
  `efficiencyBaseGpus` says which). The N₀ throughput is the mean over repeats.
- GPU-seconds: processes × time-to-target (× training time when the trial has no target time).
- recommendation: on the modelled time-to-target (timing.py: steps-to-target × median step
  time), the answer to spec.objective among the configurations within maxGPUs (choice.py: the
  best, the set the data cannot tell apart, the tie rule), the fastest and the cheapest answer,
  and the Pareto front of modelled time vs GPU-seconds. Without a target loss, "target" is
  convergence to within 1% of the best final loss of the sweep, and the steps are those run.
- uncertainty over repeats: scaling efficiency with a 95% interval per configuration; the
  recommendation's confidence and intervals from a bootstrap over repeats (timing.Draws).
- the critical batch size (predicted, fitted, 20% rule): critical.py; `analysis` joins both.

A configuration is (global batch, processes), and with a sweep.learningRates axis (batch,
processes, base learning rate) (`configuration`): every table, interval and recommendation is
then per learning rate, and the recommendation names the rate ("batch B on N GPU(s) at learning
rate η"). Throughput does not depend on the rate, but the baseline of an efficiency is still the
one at the same rate, so a diverged rate's trials never stand in for another's.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from statistics import mean, stdev

from scalelab.api import (
    CriticalBatch,
    EfficiencyInterval,
    Goal,
    ModelledConfiguration,
    Objective,
    ParetoPoint,
    Recommendation,
    ResultRow,
    TrialCounts,
    TrialPhase,
)
from scalelab.choice import answer, goal_text
from scalelab.critical import critical_batch
from scalelab.sentence import Context, noise_text, reason
from scalelab.timing import Draws, Modelled, modelled

MEASURED = frozenset({TrialPhase.SUCCEEDED, TrialPhase.DIVERGED})
SET_LIMIT = 20  # indistinguishable configurations listed (the status has a size budget)
#: Student's t, two-sided 95%, by degrees of freedom (the nearest smaller df is used).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 8: 2.306, 10: 2.228,
       15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000, 120: 1.980}  # fmt: skip
#: What shares an efficiency baseline: the global batch (strong) or the per-process batch (weak),
#: and the base learning rate.
BaseKey = tuple[int, float | None]


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


def described(batch: int, gpus: int, learning_rate: float | None, cpu: bool = False) -> str:
    """ "batch 256 on 2 GPU(s)" ("on 2 process(es)" on CPU), with " at learning rate 0.1" when
    the sweep has the axis."""
    rate = f" at learning rate {learning_rate:g}" if learning_rate is not None else ""
    return f"batch {batch} on {gpus} {'process(es)' if cpu else 'GPU(s)'}{rate}"


def efficiency_bases(rows: Sequence[ResultRow], weak: bool = False) -> dict[BaseKey, int]:
    """N₀ per baseline key: the fewest processes measured at that batch (1 when measured)."""
    bases: dict[BaseKey, int] = {}
    for row in rows:
        if row.phase in MEASURED and row.samples_per_second:
            key = _base_key(row.batch_size, row.gpus, row.base_learning_rate, weak)
            bases[key] = min(bases.get(key, row.gpus), row.gpus)
    return bases


def _base_key(batch: int, gpus: int, rate: float | None, weak: bool) -> BaseKey:
    return (batch // gpus if weak else batch, rate)


def with_scaling(rows: Sequence[ResultRow], weak: bool = False) -> list[ResultRow]:
    """Copies of `rows` with scalingEfficiency (strong, or weak; against the fewest processes
    measured at the batch, `efficiency_bases`), its base and gpuSeconds filled in."""
    bases = efficiency_bases(rows, weak)
    baseline: dict[BaseKey, list[float]] = defaultdict(list)
    for row in rows:
        key = _base_key(row.batch_size, row.gpus, row.base_learning_rate, weak)
        if row.phase in MEASURED and row.samples_per_second and bases.get(key) == row.gpus:
            baseline[key].append(row.samples_per_second)
    base = {key: mean(speeds) for key, speeds in baseline.items()}  # once per batch, not row
    out: list[ResultRow] = []
    for row in rows:
        key = _base_key(row.batch_size, row.gpus, row.base_learning_rate, weak)
        efficiency = None
        if row.phase in MEASURED and row.samples_per_second and key in base:
            efficiency = row.samples_per_second * bases[key] / (row.gpus * base[key])
        time = row.time_to_target_seconds if row.time_to_target_seconds else row.seconds
        gpu_seconds = row.gpus * time if time is not None else None
        out.append(
            row.model_copy(
                update={
                    "scaling_efficiency": efficiency,
                    "efficiency_base_gpus": bases[key] if efficiency is not None else None,
                    "gpu_seconds": gpu_seconds,
                }
            )
        )
    return out


def pareto_front(configs: Sequence[Modelled]) -> list[Modelled]:
    """Configurations no other one beats on both modelled time and GPU-seconds, fastest first."""
    front = [
        c
        for c in configs
        if not any(
            o.seconds <= c.seconds
            and o.gpu_seconds <= c.gpu_seconds
            and (o.seconds < c.seconds or o.gpu_seconds < c.gpu_seconds)
            for o in configs
        )
    ]
    return sorted(front, key=lambda c: (c.seconds, c.gpu_seconds))


def recommend(
    rows: Sequence[ResultRow],
    max_gpus: int,
    has_target: bool,
    learning_rates: dict[str, float] | None = None,
    *,
    objective: Objective | None = None,
    cpu: bool = False,
    epochs: Mapping[str, Sequence[float]] | None = None,
) -> Recommendation:
    """The objective's answer on modelled time-to-target within the GPU budget (timing.py,
    choice.py): the recommended configuration, the fastest and the cheapest, the set the data
    cannot tell apart, and the Pareto front. `cpu`: the trials ran on CPU (gpusPerProcess 0),
    so the reason speaks of processes and process-seconds. `epochs`: each trial's per-epoch step
    times (timing.epoch_step_seconds), which the bootstrap draws too."""
    objective = objective or Objective()
    configs = modelled(rows, max_gpus, has_target, epochs)
    if not configs:
        why = (
            "no trial reached the target loss within maxGPUs"
            if has_target
            else "no trial succeeded within maxGPUs"
        )
        return Recommendation(reason=why, goal=goal_text(objective))
    draws = Draws.of(rows)
    main = answer(configs, objective, draws)
    fastest = answer(configs, Objective(tolerance=objective.tolerance), draws, constrained=False)
    cheapest = answer(configs, Objective(goal=Goal.CHEAPEST, tolerance=objective.tolerance), draws)
    front = pareto_front(configs)
    picked = main.chosen
    resolved = (learning_rates or {}).get(picked.trial) if picked is not None else None
    basis = "repeats" if draws.repeated(configs) else "epochs" if draws.varies(configs) else ""
    context = Context(len(configs), max_gpus, has_target, objective.tolerance, cpu, draws, basis)
    cheapest_pick = cheapest.chosen
    return Recommendation(
        confidence=main.confidence,
        trial=picked.trial if picked else None,
        batch_size=picked.batch_size if picked else None,
        gpus=picked.gpus if picked else None,
        learning_rate=resolved,
        base_learning_rate=picked.learning_rate if picked else None,
        reason=reason(main, cheapest_pick, resolved, context),
        goal=main.goal,
        fastest=_modelled(fastest.chosen, draws),
        cheapest=_modelled(cheapest.chosen, draws),
        indistinguishable=[
            m for c in main.members[:SET_LIMIT] if (m := _modelled(c, draws)) is not None
        ],
        indistinguishable_count=len(main.members),
        noise=noise_text(context, main),
        pareto=[_pareto_point(c) for c in front],
    )


def _pareto_point(c: Modelled) -> ParetoPoint:
    """The API form of a configuration on the Pareto front (modelled time, measured beside)."""
    return ParetoPoint(
        trial=c.trial,
        batch_size=c.batch_size,
        gpus=c.gpus,
        base_learning_rate=c.learning_rate,
        time_to_target_seconds=c.seconds,
        gpu_seconds=c.gpu_seconds,
        measured_seconds=c.measured,
    )


def _modelled(c: Modelled | None, draws: Draws) -> ModelledConfiguration | None:
    """The API form of a modelled configuration, with its 95% interval where repeats give one."""
    if c is None:
        return None
    low = high = None
    if draws.varies([c]):
        values = sorted(draws.seconds(c))
        low, high = values[int(0.025 * len(values))], values[int(0.975 * len(values)) - 1]
    return ModelledConfiguration(
        trial=c.trial,
        batch_size=c.batch_size,
        gpus=c.gpus,
        base_learning_rate=c.learning_rate,
        modelled_seconds=c.seconds,
        low=low,
        high=high,
        gpu_seconds=c.gpu_seconds,
        measured_seconds=c.measured,
        steps_to_target=c.steps,
        steps_source=c.source,
        step_seconds=c.step_time,
        scaling_efficiency=c.efficiency,
    )


def _t95(df: int) -> float:
    return T95[max(k for k in T95 if k <= df)] if df >= 1 else math.inf


def efficiency_intervals(rows: Sequence[ResultRow], weak: bool = False) -> list[EfficiencyInterval]:
    """Scaling efficiency per configuration (batch, GPUs > N₀[, learning rate]) as a ratio of
    mean throughputs, with a 95% interval from both means' standard errors (delta method,
    Student's t on the fewer runs). N₀: `efficiency_bases`."""
    bases = efficiency_bases(rows, weak)
    speeds: dict[Configuration, list[float]] = defaultdict(list)
    for r in rows:
        if r.phase in MEASURED and r.samples_per_second:
            speeds[configuration(r)].append(r.samples_per_second)
    out = []
    for (batch, gpus, rate), runs in sorted(speeds.items(), key=lambda kv: order(kv[0])):
        n0 = bases.get(_base_key(batch, gpus, rate, weak), gpus)
        base = speeds.get((batch // gpus * n0 if weak else batch, n0, rate))
        if gpus == n0 or not base:
            continue
        value = mean(runs) * n0 / (gpus * mean(base))
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
                base_gpus=n0,
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
