"""The trainer's gradient noise scale: exact at fixed θ, growing as the loss falls, on 1 and 2
processes (one process splits its batch into two micro-batches; two use their local batches)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from scalelab_trainer import datasets, linear
from tests.trainer.trainer_run import Run, run_trainer

pytestmark = pytest.mark.horovod

FIXED_THETA = [  # a rate of 1e-12 keeps θ at 0 while 2000 global batches of 10 are drawn
    "--dataset-size",
    "20000",
    "--batch-size",
    "10",
    "--learning-rate",
    "1e-12",
    "--max-epochs",
    "1",
    "--shuffle",
    "--relative-tolerance",
    "0",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Run]:
    path = Path(tmp_path_factory.mktemp("noise")) / "trials.json"
    path.write_text(
        json.dumps(
            [
                ["--trial", "fixed", *FIXED_THETA],
                [
                    "--trial",
                    "descent",
                    "--batch-size",
                    "100",
                    "--relative-tolerance",
                    "0",
                    "--max-epochs",
                    "40",
                ],
                ["--trial", "target", "--batch-size", "20", "--target-loss", "110"],
                ["--trial", "off", "--no-gradient-noise-scale", "--max-epochs", "2"],
            ]
        )
    )
    out = {n: run_trainer(["--trial-list", str(path)], np=n) for n in (1, 2)}
    for r in out.values():
        assert r.code == 0, r.stderr[-3000:]
    return out


@pytest.mark.parametrize("processes", [1, 2])
def test_estimate_at_fixed_theta_is_within_ten_percent_of_per_example_gradients(
    runs: dict[int, Run], processes: int
) -> None:
    x, y = datasets.lab1_line(20000, 0, 10, 2, 1)
    exact = linear.exact_noise_scale(x[:, None], y, np.zeros(2))
    r = runs[processes].of("result", "fixed")[0]
    assert r["steps"] == 2000
    assert r["gradientNoiseScale"] == pytest.approx(exact, rel=0.10)
    # Smoothed over the steps, with a standard error that covers the exact value.
    assert 0 < r["gradientNoiseScaleStderr"] < 0.05 * r["gradientNoiseScale"]
    assert abs(r["gradientNoiseScale"] - exact) < 4 * r["gradientNoiseScaleStderr"]
    assert r["gradientNoiseScaleReason"] is None


@pytest.mark.parametrize("processes", [1, 2])
def test_a_null_noise_scale_always_comes_with_its_reason(
    runs: dict[int, Run], processes: int
) -> None:
    r = runs[processes].of("result", "off")[0]
    assert r["gradientNoiseScale"] is None
    assert r["gradientNoiseScaleReason"] == "not measured: --no-gradient-noise-scale"
    epochs = runs[processes].of("epoch", "off")
    assert [e["gradientNoiseScaleReason"] for e in epochs] == [r["gradientNoiseScaleReason"]] * 2


@pytest.mark.parametrize("processes", [1, 2])
def test_noise_scale_grows_as_the_loss_falls(runs: dict[int, Run], processes: int) -> None:
    curves = runs[processes].of("result", "descent")[0]["curves"]
    loss, noise = curves["epochLoss"], curves["gradientNoiseScale"]
    assert loss[-1] < loss[0] / 10
    assert all(b >= a for a, b in itertools.pairwise(noise))
    assert noise[-1] > 10 * noise[0]


def test_critical_batch_size_is_reported_at_the_target_loss(runs: dict[int, Run]) -> None:
    r = runs[2].of("result", "target")[0]
    assert r["reason"].startswith("reached target loss")
    assert r["finalLoss"] <= 110
    assert r["criticalBatchSize"] > 0  # B_crit ≈ B_simple over the steps up to the target
    assert r["epochsToTarget"] == r["epochs"]
    assert 0 < r["stepsToTarget"] <= r["steps"]
    assert r["timeToTargetSeconds"] > 0


def test_epoch_events_carry_the_training_time_and_step_time_so_far(runs: dict[int, Run]) -> None:
    """What a stopped trial spent, and the step time the adaptive sweep bounds its modelled time
    with: the median steady step so far, which at the last epoch is the result's."""
    epochs = runs[2].of("epoch", "off")
    result = runs[2].of("result", "off")[0]
    assert 0 < epochs[0]["trainingSeconds"] < epochs[1]["trainingSeconds"]
    assert epochs[1]["trainingSeconds"] <= result["trainingSeconds"]
    assert all(e["stepSeconds"] > 0 for e in epochs)
    assert epochs[-1]["stepSeconds"] == result["stepTimeSeconds"]["p50"]
