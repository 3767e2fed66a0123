"""The linear workload's science: the optimum is reached, 2/λ_max is the stability boundary, and a
global batch means the same examples on 1 and 2 processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.trainer.lab1_tf1 import lab_data
from tests.trainer.trainer_run import Run, run_trainer

pytestmark = pytest.mark.horovod


def max_stable_rate(seed: int = 0) -> float:
    x, _ = lab_data(seed)
    A = np.stack([x, np.ones_like(x)], 1)
    return float(2 / np.linalg.eigvalsh(2 / len(x) * A.T @ A)[-1])


def trial_list(tmp: Path, trials: dict[str, list[str]]) -> list[str]:
    path = tmp / "trials.json"
    path.write_text(json.dumps([["--trial", k, *v] for k, v in trials.items()]))
    return ["--trial-list", str(path)]


@pytest.fixture(scope="module")
def boundary_runs(tmp_path_factory: pytest.TempPathFactory) -> Run:
    lr_max = max_stable_rate()
    off = ["--relative-tolerance", "0", "--batch-size", "100"]
    run = run_trainer(
        trial_list(
            tmp_path_factory.mktemp("boundary"),
            {
                "optimum": [*off, "--learning-rate", "0.025", "--max-epochs", "1500"],
                "stable": [*off, "--learning-rate", str(0.95 * lr_max), "--max-epochs", "400"],
                "unstable": [*off, "--learning-rate", str(1.05 * lr_max), "--max-epochs", "1000"],
            },
        )
    )
    assert run.code == 0, run.stderr[-3000:]
    return run


def test_gradient_descent_without_early_stop_reaches_the_closed_form_optimum(
    boundary_runs: Run,
) -> None:
    r = boundary_runs.of("result", "optimum")[0]
    x, y = lab_data(0)
    A = np.stack([x, np.ones_like(x)], 1)
    theta, *_ = np.linalg.lstsq(A, y, rcond=None)
    assert r["phase"] == "Succeeded"
    assert r["epochs"] == 1500
    assert abs(r["params"]["w"] - theta[0]) < 1e-3
    assert abs(r["params"]["b"] - theta[1]) < 1e-3
    assert r["distanceToOptimum"] < 1e-3


def test_rate_just_below_two_over_lambda_max_converges(boundary_runs: Run) -> None:
    r = boundary_runs.of("result", "stable")[0]
    assert r["phase"] == "Succeeded"
    assert r["finalLoss"] < 1.01 * r["optimum"]["loss"]


def test_rate_just_above_two_over_lambda_max_is_reported_diverged_within_an_epoch(
    boundary_runs: Run,
) -> None:
    r = boundary_runs.of("result", "unstable")[0]
    start = boundary_runs.of("start", "unstable")[0]
    assert r["phase"] == "Diverged"
    assert r["epochs"] < 200  # stopped when the loss exploded, not at the epoch cap
    assert r["finalLoss"] > 1e4 * r["initialLoss"] or r["finalLoss"] is None
    assert any("2/λ_max" in w for w in start["diagnostics"]["warnings"])


EQUIVALENCE = {
    "minibatch": ["--batch-size", "10", "--max-epochs", "3", "--relative-tolerance", "0"],
    "uneven-last-batch-shuffled": [
        "--batch-size",
        "30",
        "--max-epochs",
        "4",
        "--shuffle",
        "--relative-tolerance",
        "0",
    ],
    "momentum": [
        "--batch-size",
        "20",
        "--max-epochs",
        "3",
        "--optimizer",
        "momentum",
        "--relative-tolerance",
        "0",
    ],
    "regression-20d": [
        "--dataset",
        "regression",
        "--features",
        "20",
        "--dataset-size",
        "64",
        "--batch-size",
        "16",
        "--learning-rate",
        "0.05",
        "--max-epochs",
        "5",
        "--relative-tolerance",
        "0",
    ],
}


@pytest.fixture(scope="module")
def equivalence_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Run]:
    args = trial_list(tmp_path_factory.mktemp("equiv"), EQUIVALENCE)
    runs = {n: run_trainer(args, np=n) for n in (1, 2)}
    for run in runs.values():
        assert run.code == 0, run.stderr[-3000:]
    return runs


def params_vector(p: dict[str, Any]) -> list[float]:
    return [p.get("w", p.get("wNorm")), p["b"]]


@pytest.mark.parametrize("trial", list(EQUIVALENCE))
def test_same_global_batch_gives_same_parameters_on_one_and_two_processes(
    equivalence_runs: dict[int, Run], trial: str
) -> None:
    one, two = (equivalence_runs[n].of("result", trial)[0] for n in (1, 2))
    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["steps"] == two["steps"] > 0
    for p1, p2 in zip(one["curves"]["params"], two["curves"]["params"], strict=True):
        assert params_vector(p2) == pytest.approx(params_vector(p1), rel=1e-6)
    assert two["curves"]["epochLoss"] == pytest.approx(one["curves"]["epochLoss"], rel=1e-6)
    assert one["params"] != {"w": 0.0, "b": 0.0}
