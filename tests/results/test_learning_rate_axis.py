"""`scalelab run` of a sweep with two learning rates, with the real trainer (TensorFlow + Horovod
on the CPU): one rate diverges, the other reaches the target, and the results, the CSV, the
recommendation and the report say which rate is which."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.horovod

SPEC = {
    "workload": {"model": "linear", "dataset": "lab1-line", "datasetSize": 100, "seed": 0},
    "sweep": {"batchSizes": [50], "gpus": [1], "learningRates": [0.05, 0.002]},
    "training": {
        "optimizer": "sgd",
        "referenceBatchSize": 100,
        "maxEpochs": 1000,
        "convergence": {"relativeTolerance": 0},
        "targetLoss": 104.2,  # 5% above the optimum's loss (examples/lab1-batch-size.yaml)
        "shuffle": False,
    },
    "resources": {"gpusPerProcess": 0, "cpu": "1", "memory": "2Gi"},
    "execution": {"maxGPUs": 1, "activeDeadlineSeconds": 600},
}


def test_the_recommendation_picks_the_learning_rate_that_converges(tmp_path: Path) -> None:
    doc = {"apiVersion": "scalelab.dev/v1alpha1", "kind": "ScaleExperiment",
           "metadata": {"name": "rates"}, "spec": SPEC}  # fmt: skip
    file = tmp_path / "rates.yaml"
    file.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "scalelab", "run", str(file), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    trials = {t["name"]: t for t in results["trials"]}
    assert set(trials) == {"rates-b50-g1-lr0p05", "rates-b50-g1-lr0p002"}
    fast, slow = trials["rates-b50-g1-lr0p05"], trials["rates-b50-g1-lr0p002"]
    assert (fast["phase"], fast["baseLearningRate"]) == ("Diverged", 0.05)
    assert (slow["phase"], slow["baseLearningRate"]) == ("Succeeded", 0.002)
    assert slow["stepsToTarget"]

    rec = results["recommendation"]
    assert (rec["trial"], rec["baseLearningRate"]) == ("rates-b50-g1-lr0p002", 0.002)
    # a CPU run (gpusPerProcess 0) speaks of processes, not GPUs
    assert rec["reason"].startswith(
        "batch 50 on 1 process(es) at learning rate 0.002 reaches the target loss fastest"
    )
    assert "GPU(s)" not in rec["reason"]
    assert slow["stepSeconds"] > 0  # the trainer's median step time, folded from its result
    assert slow["modelledSeconds"] == pytest.approx(slow["stepsToTarget"] * slow["stepSeconds"])
    assert rec["fastest"]["trial"] == rec["cheapest"]["trial"] == "rates-b50-g1-lr0p002"
    with (out / "results.csv").open() as table:
        rows = {r["name"]: r for r in csv.DictReader(table)}
    assert rows["rates-b50-g1-lr0p05"]["baseLearningRate"] == "0.05"
    report = (out / "report.html").read_text()
    assert "<th>base lr</th>" in report
    assert "learning rate 0.002 at the reference batch" in report
