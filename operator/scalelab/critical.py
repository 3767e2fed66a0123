"""The critical batch size three ways, each with its uncertainty, for the status and the report.

- predicted: B_simple measured by the trainer at the target loss (McCandlish et al. 2018, §2.2:
  B_crit ≈ B_simple), the median over the trials, with the range of the per-trial values;
- fitted: least squares of steps-to-target S(B) = S_min(1 + B_crit/B) (McCandlish et al. 2018,
  eq. 2.11) with a 95% bootstrap interval over repeats (each batch's repeats resampled);
- 20% over linear (Zhang et al. 2024): the batch at which S(B)·B first exceeds S(B₀)·B₀ of the
  smallest batch by 20%, interpolated in log B between measured batches. Under the fitted model
  this is B ≈ 1.2·B₀ + 0.2·B_crit, so it sits well below the fitted value; both are reported.

With a sweep.learningRates axis, S(B) is the steps-to-target of each batch at its best learning
rate: the rate at which the most repeats reached the target, then the fewest mean steps (as
Shallue et al. 2019 and McCandlish et al. 2018 measure S(B), with the learning rate tuned per
batch). One fit per rate was the alternative; but a rate too large for large batches diverges
there and one too small crawls at them, so a fixed rate's S(B) measures the rate as much as the
batch, and the critical batch of the workload is where the best-tuned steps stop falling. The
rate chosen per batch is in `steps` (BatchSteps.baseLearningRate).

When no measured batch exceeds linear scaling by 20%, every batch still scales (near) perfectly:
the answer is "B_crit is beyond the largest batch measured", never an extrapolated number (a fit
through a straight line of S ∝ 1/B puts B_crit anywhere above the data with R² = 1).
Pure functions over `ResultRow`s, no numpy (the operator runs without it); called by
aggregate.py (status, results file) and report/plots.py.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import mean, median, stdev

from scalelab.api import BatchSteps, CriticalBatch, ResultRow, TrialPhase

TWENTY_PERCENT = 1.2  # Zhang et al. 2024: 20% more steps·batch than linear scaling
BOOTSTRAP_RESAMPLES = 1000
AGREEMENT_FACTOR = 2.0  # B_simple "predicts" B_crit when within this factor of the fit


@dataclass(frozen=True)
class CriticalBatchFit:
    """S(B) = S_min(1 + B_crit/B), fitted to steps-to-target; r2 of log S.

    `plateau` is False when the data show no floor at all (S still falls ∝ 1/B everywhere):
    then B_crit lies beyond the sweep and `b_crit` is only a placeholder above it.
    """

    s_min: float
    b_crit: float
    r2: float
    plateau: bool = True

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
    plateau = a > 0
    if not plateau:
        # No plateau within the sweep (steps still fall ∝ 1/B): B_crit lies beyond it.
        a = min(s for _, s in points) * 1e-3
        c = mean(s * b for b, s in points)
    c = max(c, 0.0)
    fit = CriticalBatchFit(s_min=a, b_crit=c / a, r2=0.0, plateau=plateau)
    logs = [math.log(s) for _, s in points]
    predicted = [math.log(fit.steps(b)) for b, _ in points]
    centre = mean(logs)
    total = sum((v - centre) ** 2 for v in logs)
    residual = sum((v - p) ** 2 for v, p in zip(logs, predicted, strict=True))
    r2 = 1 - residual / total if total > 0 else 1.0
    return CriticalBatchFit(s_min=fit.s_min, b_crit=fit.b_crit, r2=r2, plateau=plateau)


def best_rate_steps(rows: Sequence[ResultRow]) -> dict[int, tuple[float | None, list[float]]]:
    """Per global batch, (base learning rate, steps-to-target of its trials that reached it):
    at the fewest GPUs of that batch (the same global batch on more processes repeats the same
    arithmetic, not a new draw, so it would understate the spread) and, with a learningRates
    axis, at the batch's best rate (most repeats at the target, then fewest mean steps)."""
    fewest: dict[int, int] = {}
    for r in rows:
        fewest[r.batch_size] = min(fewest.get(r.batch_size, r.gpus), r.gpus)
    by_rate: dict[int, dict[float | None, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.phase is TrialPhase.SUCCEEDED and r.steps_to_target and r.gpus == fewest[r.batch_size]:
            by_rate[r.batch_size][r.base_learning_rate].append(float(r.steps_to_target))
    return {
        batch: min(rates.items(), key=lambda kv: (-len(kv[1]), mean(kv[1]), kv[0] or 0.0))
        for batch, rates in sorted(by_rate.items())
    }


def steps_by_batch(rows: Sequence[ResultRow]) -> dict[int, list[float]]:
    """Steps-to-target per global batch as the fit takes them (`best_rate_steps`)."""
    return {batch: steps for batch, (_, steps) in best_rate_steps(rows).items()}


def twenty_percent_batch(means: Mapping[int, float]) -> float | None:
    """The batch where S(B)·B first reaches 1.2·S(B₀)·B₀ (B₀ the smallest), or None."""
    batches = sorted(means)
    if len(batches) < 2:
        return None
    reference = means[batches[0]] * batches[0]
    previous_b, previous_r = float(batches[0]), 1.0
    for b in batches[1:]:
        ratio = means[b] * b / reference
        if ratio >= TWENTY_PERCENT:
            share = (TWENTY_PERCENT - previous_r) / (ratio - previous_r)
            return math.exp(math.log(previous_b) + share * (math.log(b) - math.log(previous_b)))
        previous_b, previous_r = float(b), ratio
    return None


def _percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of `values` by linear interpolation; inf stays inf."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    if ordered[hi] == math.inf:
        return math.inf if pos > lo or ordered[lo] == math.inf else ordered[lo]
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def bootstrap_b_crit(
    samples: Mapping[int, Sequence[float]], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> list[float]:
    """Fitted B_crit of `resamples` resamples (each batch's repeats drawn with replacement);
    inf where a resample shows no plateau. Seeded: the same rows give the same interval."""
    rng = random.Random(seed)
    batches = sorted(samples)
    out = []
    for _ in range(resamples):
        means = [mean(rng.choices(samples[b], k=len(samples[b]))) for b in batches]
        fit = fit_critical_batch(batches, means)
        out.append(fit.b_crit if fit is not None and fit.plateau else math.inf)
    return out


def _noise_predictions(rows: Sequence[ResultRow]) -> list[float]:
    """Each measured trial's B_simple at the target (else at its end)."""
    values = []
    for r in rows:
        if r.phase is TrialPhase.SUCCEEDED:
            value = r.critical_batch_size or r.gradient_noise_scale
            if value is not None and value > 0 and math.isfinite(value):
                values.append(value)
    return values


def _step_rows(points: Mapping[int, tuple[float | None, Sequence[float]]]) -> list[BatchSteps]:
    return [
        BatchSteps(
            batch_size=b,
            base_learning_rate=rate,
            runs=len(v),
            mean=mean(v),
            stdev=stdev(v) if len(v) > 1 else None,
        )
        for b, (rate, v) in points.items()
    ]


def critical_batch(rows: Sequence[ResultRow]) -> CriticalBatch:
    """Predicted, fitted and 20%-rule B_crit of an experiment's rows, with the verdict."""
    points = best_rate_steps(rows)
    samples = {batch: steps for batch, (_, steps) in points.items()}
    noise = _noise_predictions(rows)
    out = CriticalBatch(
        predicted=median(noise) if noise else None,
        predicted_low=min(noise) if noise else None,
        predicted_high=max(noise) if noise else None,
        steps=_step_rows(points),
        largest_batch=max(samples) if samples else None,
    )
    means = {b: mean(v) for b, v in samples.items()}
    fit = fit_critical_batch(list(means), list(means.values()))
    if fit is None:
        return out.model_copy(update={"summary": _summary(out, fit, repeated=False)})
    twenty = twenty_percent_batch(means)
    beyond = twenty is None
    repeated = max(len(v) for v in samples.values()) >= 2
    low = high = None
    if repeated:
        draws = bootstrap_b_crit(samples)
        low, high = _percentile(draws, 0.025), _percentile(draws, 0.975)
        low = low if math.isfinite(low) else None  # JSON (and the API server) has no infinity
    out = out.model_copy(
        update={
            "fitted": None if beyond or not fit.plateau else fit.b_crit,
            "fitted_low": low,
            "fitted_high": None if beyond or high is None or math.isinf(high) else high,
            "fit_r2": fit.r2,
            "twenty_percent": twenty,
            "beyond_range": beyond,
        }
    )
    return out.model_copy(update={"summary": _summary(out, fit, repeated)})


def _summary(c: CriticalBatch, fit: CriticalBatchFit | None, repeated: bool) -> str:
    """One sentence: what B_crit is, how sure, and whether B_simple agrees."""
    predicted = (
        f"B_simple predicts {c.predicted:.3g} (trials {c.predicted_low:.3g}–{c.predicted_high:.3g})"
        if c.predicted is not None
        else "no trial measured B_simple"
    )
    if fit is None:
        return f"B_crit needs steps-to-target at 2 or more batch sizes; {predicted}"
    if c.beyond_range:
        bound = (
            f"; the bootstrap puts it above {c.fitted_low:.3g}"
            if c.fitted_low is not None and math.isfinite(c.fitted_low)
            else ""
        )
        return (
            f"B_crit is beyond the largest batch measured ({c.largest_batch}): every batch "
            f"reaches the target within 20% of linear scaling{bound}; {predicted}"
        )
    interval = (
        f" (95% CI {c.fitted_low:.3g}–"
        + (f"{c.fitted_high:.3g}" if c.fitted_high is not None else "unbounded")
        + ")"
        if repeated and c.fitted_low is not None
        else " (one run per batch: no interval; repeats ≥ 2 give one)"
    )
    fitted = (
        f"B_crit ≈ {c.fitted:.3g}{interval} by the fit S = S_min(1 + B_crit/B), R² {c.fit_r2:.3f}"
        if c.fitted is not None
        else "the fit finds no plateau"
    )
    twenty = f", {c.twenty_percent:.3g} by the 20%-over-linear rule"
    smallest = min(s.batch_size for s in c.steps)
    if c.fitted is not None and c.fitted < smallest:
        fitted += f" (below the smallest batch measured, {smallest}: more batch buys few steps)"
    agreement = ""
    if c.predicted is not None and c.fitted:
        ratio = c.predicted / c.fitted
        within = 1 / AGREEMENT_FACTOR <= ratio <= AGREEMENT_FACTOR
        agreement = f": {'within' if within else 'outside'} 2× of the fit (ratio {ratio:.2g})"
    return f"{fitted}{twenty}; {predicted}{agreement}"
