"""Lab 1 reproduced: GD and SGD on the lab's data give the lab's epochs, w and b.

The reference is the lab's algorithm written the lab's way (tests/trainer/lab1_tf1.py: TF1 graph,
placeholders, GradientDescentOptimizer, one Session.run per update). `--stopping-loss update` is the
lab's rule (relative change of the recorded per-update losses, averaged per epoch); the default
`full` rule reads the full-dataset loss at each epoch end instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.trainer.lab1_tf1 import lab_data, lab_gd, lab_sgd
from tests.trainer.trainer_run import Run, run_trainer

pytestmark = pytest.mark.horovod

TRIALS = {
    "gd-lab": ["--batch-size", "100", "--stopping-loss", "update"],
    "sgd-lab": ["--batch-size", "1", "--stopping-loss", "update", "--record-update-losses"],
    "sgd-lab-seed3": ["--batch-size", "1", "--stopping-loss", "update", "--seed", "3"],
    "gd-full": ["--batch-size", "100", "--loss-surface-points", "200"],
}


@pytest.fixture(scope="module")
def lab_runs(tmp_path_factory: pytest.TempPathFactory) -> Run:
    path = Path(tmp_path_factory.mktemp("lab1")) / "trials.json"
    path.write_text(json.dumps([["--trial", name, *args] for name, args in TRIALS.items()]))
    run = run_trainer(["--trial-list", str(path)])
    assert run.code == 0, run.stderr[-3000:]
    return run


def result(run: Run, trial: str) -> dict[str, Any]:
    return run.of("result", trial)[0]


def test_gradient_descent_gives_the_labs_epochs_w_and_b(lab_runs: Run) -> None:
    ref = lab_gd(*lab_data(0))
    r = result(lab_runs, "gd-lab")
    assert r["epochs"] == ref.epochs
    assert r["steps"] == ref.epochs
    assert r["params"]["w"] == pytest.approx(ref.w, rel=1e-9)
    assert r["params"]["b"] == pytest.approx(ref.b, rel=1e-9)
    # The lab's recorded losses are the per-update losses the trainer reports per epoch.
    assert r["curves"]["updateLoss"] == pytest.approx(ref.losses, rel=1e-9)


@pytest.mark.parametrize(("trial", "seed"), [("sgd-lab", 0), ("sgd-lab-seed3", 3)])
def test_stochastic_gradient_descent_gives_the_labs_epochs_w_and_b(
    lab_runs: Run, trial: str, seed: int
) -> None:
    ref = lab_sgd(*lab_data(seed))
    r = result(lab_runs, trial)
    if "updateLosses" in r["curves"]:  # the lab's loss-vs-update curve, update by update
        assert r["curves"]["updateLosses"] == pytest.approx(ref.updates, rel=1e-8)
    assert r["epochs"] == ref.epochs
    assert r["steps"] == 100 * ref.epochs
    assert r["params"]["w"] == pytest.approx(ref.w, rel=1e-8)
    assert r["params"]["b"] == pytest.approx(ref.b, rel=1e-8)
    assert r["curves"]["updateLoss"] == pytest.approx(ref.losses, rel=1e-8)


def test_slow_mode_warning_fires_on_the_lab_defaults_and_reports_the_gap(lab_runs: Run) -> None:
    start = lab_runs.of("start", "gd-full")[0]
    r = result(lab_runs, "gd-full")
    assert any("blind to slow mode" in w for w in start["diagnostics"]["warnings"])
    assert 55 <= r["epochs"] <= 75  # the rule fires near epoch 66 ...
    assert r["distanceToOptimum"] > 1.0  # ... with θ far from θ* (b mostly)
    assert abs(r["params"]["b"] - r["optimum"]["b"]) > 1.0
    assert any("loss gap" in w for w in r["warnings"])


def test_start_diagnostics_are_the_closed_form_facts_of_the_data(lab_runs: Run) -> None:
    x, y = lab_data(0)
    A = np.stack([x, np.ones_like(x)], 1)
    theta, *_ = np.linalg.lstsq(A, y, rcond=None)
    eig = np.linalg.eigvalsh(2 / 100 * A.T @ A)
    d = lab_runs.of("start", "gd-full")[0]["diagnostics"]
    assert [d["optimum"]["w"], d["optimum"]["b"]] == pytest.approx(theta, rel=1e-10)
    assert d["hessianEigenvalues"] == pytest.approx(eig, rel=1e-10)
    assert d["maxStableLearningRate"] == pytest.approx(2 / eig[-1], rel=1e-10)


def test_loss_surface_is_the_labs_grid_evaluated_exactly(lab_runs: Run) -> None:
    x, y = lab_data(0)
    s = result(lab_runs, "gd-full")["lossSurface"]
    w, b, L = np.array(s["w"]), np.array(s["b"]), np.array(s["loss"])
    assert (w[0], w[-1], b[0], b[-1], L.shape) == (0, 20, -18, 22, (200, 200))
    for i, j in [(0, 0), (57, 123), (199, 199), (100, 3)]:
        assert L[i, j] == pytest.approx(np.mean((w[j] * x + b[i] - y) ** 2), rel=1e-10)


def test_every_epoch_reports_the_full_loss_and_the_distance_to_the_optimum(lab_runs: Run) -> None:
    epochs = lab_runs.of("epoch", "sgd-lab")
    x, y = lab_data(0)
    for e in epochs[:3]:
        w, b = e["params"]["w"], e["params"]["b"]
        assert e["loss"] == pytest.approx(np.mean((w * x + b - y) ** 2), rel=1e-9)
        assert e["distanceToOptimum"] > 0
    assert [e["epoch"] for e in epochs] == list(range(1, len(epochs) + 1))
    assert epochs[-1]["steps"] == 100 * len(epochs)
