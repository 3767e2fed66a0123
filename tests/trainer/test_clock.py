"""The trainer's step clock: steady-state throughput and step times, and the median so far."""

from __future__ import annotations

import pytest

from scalelab_trainer.clock import Clock

pytestmark = pytest.mark.unit


def test_the_median_step_so_far_leaves_out_the_warm_up_as_the_result_does() -> None:
    clock = Clock(skip_steps=10)
    assert clock.p50() is None
    clock.add(1.0, 10, 80)  # the first call: tracing and warm-up, 0.1 s a step
    assert clock.p50() == pytest.approx(0.1)  # nothing steady yet: the only call
    clock.add(0.01, 1, 8)
    assert clock.p50() == pytest.approx(0.01)
    clock.add(0.06, 2, 16)  # 0.03 s a step, twice
    clock.add(0.02, 1, 8)
    assert clock.p50() == pytest.approx(0.025)  # of 0.01, 0.03, 0.03, 0.02
    step_time = clock.step_time()
    assert step_time is not None
    assert clock.p50() == step_time["p50"]
