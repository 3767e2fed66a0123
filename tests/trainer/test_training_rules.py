"""The trainer applies the learning-rate rules step by step, and every optimizer trains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.trainer.lab1_tf1 import lab_data
from tests.trainer.trainer_run import Run, run_trainer

pytestmark = pytest.mark.horovod

OPTIMIZERS = {
    "momentum": ["--learning-rate", "0.001"],
    "adam": ["--learning-rate", "0.5"],
    # w starts at 0, where the trust ratio is 1: a first step of η·g must be safe.
    "lars": ["--learning-rate", "0.002", "--trust-coefficient", "10"],
    "lamb": ["--learning-rate", "0.5", "--weight-decay", "0.001"],
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    warmup = "--trial warmup --batch-size 20 --reference-batch-size 10 --lr-scaling linear "
    warmup += "--learning-rate 0.001 --warmup-epochs 2 --max-epochs 4 --relative-tolerance 0"
    cnn = "--trial cnn --model cnn --dataset synthetic-images --image-size 16 --dataset-size 64 "
    cnn += "--batch-size 16 --max-epochs 2 --learning-rate 0.01 --relative-tolerance 0"
    each = ["--batch-size", "10", "--max-epochs", "20", "--relative-tolerance", "0"]
    trials = [
        warmup.split(),
        *[["--trial", k, "--optimizer", k, *each, *v] for k, v in OPTIMIZERS.items()],
        cnn.split(),
    ]
    path = Path(tmp_path_factory.mktemp("rules")) / "trials.json"
    path.write_text(json.dumps(trials))
    r = run_trainer(["--trial-list", str(path)], np=2)
    assert r.code == 0, r.stderr[-3000:]
    return r


def test_warmup_and_linear_scaling_are_applied_at_every_step(run: Run) -> None:
    x, y = lab_data(0)
    w = b = 0.0
    base, target, warmup = 0.001, 0.002, 10  # η, η·B/B0, 2 epochs of 5 steps
    rates = []
    for t in range(20):
        lr = base + (target - base) * t / warmup if t < warmup else target
        rates.append(lr)
        s = slice(20 * (t % 5), 20 * (t % 5) + 20)
        r = w * x[s] + b - y[s]
        w, b = w - lr * np.mean(2 * r * x[s]), b - lr * np.mean(2 * r)
    res = run.of("result", "warmup")[0]
    assert run.of("start", "warmup")[0]["learningRate"] == target
    assert run.of("start", "warmup")[0]["warmupSteps"] == warmup
    assert res["params"]["w"] == pytest.approx(w, rel=1e-10)
    assert res["params"]["b"] == pytest.approx(b, rel=1e-10)
    assert res["curves"]["learningRate"] == pytest.approx([rates[4], rates[9], target, target])
    assert rates[warmup] == target  # exactly the scaled rate at the end of warmup


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_every_optimizer_trains_the_line_on_two_processes(run: Run, optimizer: str) -> None:
    res = run.of("result", optimizer)[0]
    assert res["phase"] == "Succeeded"
    assert res["config"]["optimizer"] == optimizer
    assert res["finalLoss"] < 0.2 * res["initialLoss"]
    assert res["processes"] == 2


def test_cnn_on_synthetic_images_trains_and_reports_throughput_on_two_processes(run: Run) -> None:
    res = run.of("result", "cnn")[0]
    assert res["phase"] == "Succeeded"
    assert res["steps"] == 8
    assert res["samplesPerSecond"] > 0
    assert res["stepTimeSplit"]["computeSeconds"] > 0
    assert res["params"]["count"] > 10000  # a residual network, not a toy layer
