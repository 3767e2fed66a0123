"""The two-batch estimator (McCandlish et al. 2018, App. A.1) recovers B_simple = tr(Σ)/|G|²."""

from __future__ import annotations

import numpy as np
import pytest

from scalelab_trainer import linear
from scalelab_trainer.noise import NoiseAccumulator, two_batch_estimates
from tests.trainer.lab1_tf1 import lab_data

pytestmark = pytest.mark.unit


def per_example_gradients(x: np.ndarray, y: np.ndarray, theta: np.ndarray) -> np.ndarray:
    A = linear.design(x[:, None])
    return 2.0 * (A @ theta - y)[:, None] * A


@pytest.mark.parametrize("theta", [(0.0, 0.0), (9.0, 3.0)])
def test_estimator_averaged_over_many_draws_is_within_ten_percent_of_the_exact_value(
    theta: tuple[float, float],
) -> None:
    x, y = lab_data(0)
    th = np.array(theta)
    g = per_example_gradients(x, y, th)
    rng = np.random.default_rng(0)
    acc = NoiseAccumulator()
    for _ in range(4000):
        idx = rng.choice(len(x), 10, replace=False)  # one global batch, as the trainer draws it
        halves = (g[idx[:5]].mean(0), g[idx[5:]].mean(0))  # two processes' (micro-)batches
        small = float(np.mean([h @ h for h in halves]))
        big = g[idx].mean(0)
        g2, tr = two_batch_estimates(small, float(big @ big), 5.0, 10.0)
        acc.add_step(g2, tr)
    exact = linear.exact_noise_scale(x[:, None], y, th)
    assert acc.value() == pytest.approx(exact, rel=0.10)


def test_exact_noise_scale_grows_as_theta_approaches_the_optimum() -> None:
    x, y = lab_data(0)
    opt = linear.diagnose(
        x[:, None], y, rate=1e-3, steps_per_epoch=1, tolerance=0, plain_gradient_descent=True
    ).optimum
    values = [linear.exact_noise_scale(x[:, None], y, (1 - f) * opt) for f in (1.0, 0.5, 0.1, 0.01)]
    assert values == sorted(values)
    assert values[-1] > 100 * values[0]


def test_accumulator_reports_nothing_until_signal_is_measured_and_says_why() -> None:
    acc = NoiseAccumulator()
    assert acc.value() is None
    assert acc.reason() == "no step measured yet"
    for _ in range(3):  # |G|² estimate not positive: noise dominates, no finite B_simple
        acc.add_step(-1.0 / 3, 5.0 / 3)
    assert acc.value() is None
    assert "not positive over 3 steps" in (acc.reason() or "")
    acc.add_step(3.0, 1.0)
    assert acc.value() == pytest.approx(6.0 / 2.0)
    assert acc.reason() is None


def _draws(
    g: np.ndarray, rng: np.random.Generator, steps: int, acc: NoiseAccumulator
) -> NoiseAccumulator:
    """`steps` batches of 10 (two halves of 5) at fixed θ, as in the test above."""
    for _ in range(steps):
        idx = rng.choice(len(g), 10, replace=False)
        halves = (g[idx[:5]].mean(0), g[idx[5:]].mean(0))
        big = g[idx].mean(0)
        acc.add_step(
            *two_batch_estimates(float(np.mean([h @ h for h in halves])), big @ big, 5, 10)
        )
    return acc


def test_standard_error_matches_the_spread_of_independent_estimates() -> None:
    """The delta-method error of one estimate over 400 steps is the spread of 200 such estimates."""
    x, y = lab_data(0)
    g = per_example_gradients(x, y, np.array([9.0, 3.0]))
    rng = np.random.default_rng(1)
    runs = [_draws(g, rng, 400, NoiseAccumulator()) for _ in range(200)]
    values = np.array([r.value() for r in runs], dtype=float)
    errors = np.array([r.stderr() for r in runs], dtype=float)
    assert np.median(errors) == pytest.approx(values.std(ddof=1), rel=0.25)
    exact = linear.exact_noise_scale(x[:, None], y, np.array([9.0, 3.0]))
    assert np.mean(np.abs(values - exact) <= 2 * errors) > 0.85  # ~95% intervals cover it


def test_moving_average_forgets_old_steps_and_counts_fewer_effective_ones() -> None:
    x, y = lab_data(0)
    rng = np.random.default_rng(2)
    far, near = (per_example_gradients(x, y, np.array(t)) for t in ([0.0, 0.0], [9.0, 3.0]))
    smoothed = _draws(near, rng, 2000, _draws(far, rng, 2000, NoiseAccumulator(window=100)))
    everything = _draws(near, rng, 2000, _draws(far, rng, 2000, NoiseAccumulator()))
    exact_near = linear.exact_noise_scale(x[:, None], y, np.array([9.0, 3.0]))
    assert smoothed.value() == pytest.approx(exact_near, rel=0.25)
    assert abs((everything.value() or 0) - exact_near) > abs((smoothed.value() or 0) - exact_near)
    assert (smoothed.stderr() or 0) > (everything.stderr() or 0)
