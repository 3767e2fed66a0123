"""The critical batch size with its uncertainty: fit + bootstrap, the 20% rule, "beyond the
sweep" instead of extrapolation, efficiency intervals and the recommendation's confidence."""

from __future__ import annotations

import random

import pytest

from scalelab.aggregate import analysis, efficiency_intervals, recommend, with_scaling
from scalelab.api import ResultRow, TrialPhase
from scalelab.critical import critical_batch, twenty_percent_batch

pytestmark = pytest.mark.unit


def rows_of(
    steps: dict[int, list[float]], noise: float | None = None, gpus: int = 1
) -> list[ResultRow]:
    return [
        ResultRow(
            trial=f"t-b{b}-g{gpus}-r{r}",
            batch_size=b,
            gpus=gpus,
            repeat=r,
            phase=TrialPhase.SUCCEEDED,
            steps_to_target=round(s),
            critical_batch_size=noise,
        )
        for b, runs in steps.items()
        for r, s in enumerate(runs)
    ]


def model_steps(
    b_crit: float, batches: list[int], repeats: int, spread: float, seed: int = 0
) -> dict[int, list[float]]:
    rng = random.Random(seed)
    return {
        b: [1000 * (1 + b_crit / b) * (1 + rng.gauss(0, spread)) for _ in range(repeats)]
        for b in batches
    }


def test_fit_with_repeats_has_a_bootstrap_interval_around_the_true_critical_batch() -> None:
    batches = [8, 16, 32, 64, 128, 256, 512, 1024]
    c = critical_batch(rows_of(model_steps(200.0, batches, 3, 0.05), noise=150.0))
    assert c.fitted == pytest.approx(200.0, rel=0.2)
    assert c.fitted_low is not None
    assert c.fitted_high is not None
    assert c.fitted_low < 200.0 < c.fitted_high
    assert c.fitted_high / c.fitted_low < 3
    assert not c.beyond_range
    # Under the model S(B)·B / S(B₀)·B₀ = 1.2 at B = 1.2·B₀ + 0.2·B_crit = 49.6.
    assert c.twenty_percent == pytest.approx(49.6, rel=0.35)
    assert [s.runs for s in c.steps] == [3] * len(batches)
    assert all(s.stdev is not None for s in c.steps)
    assert "95% CI" in c.summary
    assert "within 2× of the fit" in c.summary


def test_perfect_scaling_to_the_last_batch_says_beyond_instead_of_extrapolating() -> None:
    # lab3 today: S ∝ 1/B from 8 to 512 gave a fitted B_crit of 1.6e4 with R² = 1.000.
    steps = {b: [8 * 5000 / b * f for f in (0.97, 1.0, 1.03)] for b in [8, 32, 128, 512]}
    c = critical_batch(rows_of(steps, noise=573.0))
    assert c.beyond_range
    assert c.fitted is None
    assert c.fitted_high is None
    assert c.twenty_percent is None
    assert c.largest_batch == 512
    assert c.summary.startswith("B_crit is beyond the largest batch measured (512)")
    assert "573" in c.summary


def test_one_run_per_batch_gives_no_interval_and_says_so() -> None:
    c = critical_batch(rows_of(model_steps(100.0, [4, 16, 64, 256, 1024], 1, 0.0)))
    assert c.fitted == pytest.approx(100.0, rel=0.01)
    assert c.fitted_low is None
    assert c.fitted_high is None
    assert "no interval" in c.summary
    assert "no trial measured B_simple" in c.summary


def test_twenty_percent_rule_interpolates_in_log_batch() -> None:
    assert twenty_percent_batch({10: 100.0, 20: 50.0, 40: 30.0}) == pytest.approx(
        20 * 2 ** ((1.2 - 1.0) / (1.2 - 1.0)), rel=1e-9
    )
    assert twenty_percent_batch({10: 100.0, 20: 50.0}) is None


def test_efficiency_interval_is_a_ratio_of_means_with_both_spreads() -> None:
    rows = [
        ResultRow(
            trial=f"a{i}", batch_size=64, gpus=g, phase=TrialPhase.SUCCEEDED, samples_per_second=s
        )
        for i, (g, s) in enumerate(
            [(1, 100.0), (1, 102.0), (1, 98.0), (2, 180.0), (2, 176.0), (2, 184.0)]
        )
    ]
    (e,) = efficiency_intervals(rows)
    assert (e.batch_size, e.gpus, e.runs) == (64, 2, 3)
    assert e.mean == pytest.approx(0.9)
    assert e.low is not None
    assert e.high is not None
    assert e.low < 0.9 < e.high
    assert e.high - e.low < 0.2


def test_recommendation_confidence_counts_bootstrap_resamples_that_agree() -> None:
    def timed(batch: int, times: list[float]) -> list[ResultRow]:
        return [
            ResultRow(
                trial=f"t-b{batch}-r{i}",
                batch_size=batch,
                gpus=1,
                repeat=i,
                phase=TrialPhase.SUCCEEDED,
                time_to_target_seconds=t,
            )
            for i, t in enumerate(times)
        ]

    clear = recommend(with_scaling(timed(64, [1.0, 1.1, 0.9]) + timed(8, [5.0, 5.2, 4.9])), 1, True)
    assert clear.batch_size == 64
    assert clear.confidence == 1.0
    assert "100% of 1000 bootstrap resamples" in clear.reason
    close = recommend(
        with_scaling(timed(64, [1.0, 2.0, 1.2]) + timed(32, [1.3, 1.4, 1.1])), 1, True
    )
    assert close.confidence is not None
    assert 0.1 < close.confidence < 0.9
    single = recommend(with_scaling(timed(64, [1.0]) + timed(8, [2.0])), 1, True)
    assert single.confidence is None
    assert "no confidence figure" in single.reason


def test_analysis_joins_the_critical_batch_and_the_efficiency_intervals() -> None:
    rows = rows_of(model_steps(64.0, [8, 32, 128, 512], 3, 0.02), noise=50.0)
    a = analysis(rows)
    assert a.fitted is not None
    assert a.predicted == 50.0
    assert a.efficiency == []  # one GPU count: nothing to compare


def test_steps_that_do_not_fall_with_the_batch_put_b_crit_below_the_sweep() -> None:
    # lab 1 at a fixed rate: steps-to-target nearly constant over B = 1..100.
    c = critical_batch(rows_of({b: [50.0] for b in (1, 2, 5, 10, 20, 50, 100)}, noise=3.0))
    assert c.fitted == 0
    assert "below the smallest batch measured, 1" in c.summary
