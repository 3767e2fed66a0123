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
        acc.add(g2, tr, 1)
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


def test_accumulator_reports_nothing_until_signal_is_measured() -> None:
    acc = NoiseAccumulator()
    assert acc.value() is None
    acc.add(-1.0, 5.0, 3)  # |G|² estimate not positive: noise dominates, no finite B_simple
    assert acc.value() is None
    acc.add(3.0, 1.0, 1)
    assert acc.value() == pytest.approx(6.0 / 2.0)
