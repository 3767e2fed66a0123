"""Learning-rate scaling and gradual warmup are the papers' formulas, on host and in graph."""

from __future__ import annotations

import math

import pytest
import tensorflow as tf

from scalelab_trainer import schedule

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("k", [1, 2, 4, 8, 32])
def test_linear_and_sqrt_scaling_give_k_eta_and_root_k_eta_at_k_times_the_reference(
    k: int,
) -> None:
    assert schedule.scaled_rate(0.1, 256 * k, 256, "linear") == pytest.approx(0.1 * k, rel=1e-15)
    assert schedule.scaled_rate(0.1, 256 * k, 256, "sqrt") == pytest.approx(
        0.1 * math.sqrt(k), rel=1e-15
    )
    assert schedule.scaled_rate(0.1, 256 * k, 256, "none") == 0.1


def test_unknown_scaling_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown lr scaling"):
        schedule.scaled_rate(0.1, 512, 256, "cubic")


def test_warmup_ends_exactly_at_the_scaled_rate_and_rises_linearly_before() -> None:
    s = schedule.build(
        base=0.1, batch=8192, reference=256, rule="linear", warmup_epochs=5, steps_per_epoch=7
    )
    assert (s.base, s.target, s.warmup_steps) == (0.1, 3.2, 35)
    assert s.rate_at(0) == 0.1
    assert s.rate_at(35) == 3.2  # exactly k·η at T_w
    assert s.rate_at(1000) == 3.2
    rises = [s.rate_at(t + 1) - s.rate_at(t) for t in range(35)]
    assert rises == pytest.approx([(3.2 - 0.1) / 35] * 35, rel=1e-9)


def test_warmup_rate_in_the_graph_equals_the_host_formula_at_every_step() -> None:
    s = schedule.build(
        base=0.01, batch=300, reference=100, rule="sqrt", warmup_epochs=2.5, steps_per_epoch=4
    )
    steps = tf.range(0, 20, dtype=tf.float64)
    in_graph = tf.function(lambda t: tf.map_fn(s.rate_tensor, t))(steps).numpy()
    assert list(in_graph) == [s.rate_at(float(t)) for t in range(20)]
    assert in_graph[10] == s.target == pytest.approx(0.01 * math.sqrt(3), rel=1e-15)


def test_no_warmup_means_the_scaled_rate_from_the_first_step() -> None:
    s = schedule.build(
        base=0.01, batch=400, reference=100, rule="linear", warmup_epochs=0, steps_per_epoch=4
    )
    assert s.rate_at(0) == 0.04
    assert float(s.rate_tensor(tf.constant(0.0, tf.float64))) == 0.04
