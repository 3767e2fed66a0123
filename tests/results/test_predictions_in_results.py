"""Predictions at GPU counts not measured (scaling.py) reach results.json and the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from scalelab.api import TrialPhase
from scalelab.report.render import build_html
from scalelab.results import store
from scalelab.results.model import TrialRecord, aggregate_results, new_results
from scalelab.validation import parse_experiment

pytestmark = pytest.mark.unit


def _step(gpus: int) -> float:
    """A step time of compute ∝ 1/N plus a log2 N communication term."""
    return 0.4 / gpus + 0.02 * math.log2(gpus)


def test_aggregated_results_carry_predictions_for_unmeasured_counts(tmp_path: Path) -> None:
    experiment = parse_experiment(
        {
            "apiVersion": "scalelab.dev/v1alpha1",
            "kind": "ScaleExperiment",
            "metadata": {"name": "p"},
            "spec": {
                "sweep": {"batchSizes": [256], "gpus": [1, 2]},
                "training": {"targetLoss": 0.5},
                "workload": {"datasetSize": 4096},
                "resources": {"gpusPerProcess": 1},
                "execution": {"maxGPUs": 8},
            },
        }
    )
    trials = [
        TrialRecord(
            name=f"p-b256-g{n}",
            batch_size=256,
            gpus=n,
            phase=TrialPhase.SUCCEEDED,
            steps=100,
            steps_to_target=100,
            samples_per_second=256 / _step(n),
            step_seconds=_step(n),
            time_to_target_seconds=100 * _step(n) + 1.0,
        )
        for n in (1, 2)
    ]
    results = new_results(experiment, trials, host={})
    aggregate_results(results, experiment)
    assert results.scaling_predictions is not None
    (batch,) = results.scaling_predictions.batches
    points = {p.gpus: p for p in batch.points}
    assert sorted(points) == [1, 2, 4, 8]
    assert not points[4].measured
    assert not points[8].measured
    assert points[4].time_to_target_seconds == pytest.approx(100 * points[4].step_seconds)
    # a measured count's modelled time is the recommendation's for the same configuration
    assert results.trials[0].modelled_seconds == pytest.approx(100 * _step(1))
    store.save(tmp_path, results)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["scalingPredictions"]["batches"][0]["points"][2]["gpus"] == 4
    loaded = store.load(tmp_path)
    assert loaded is not None
    assert loaded.scaling_predictions == results.scaling_predictions
    page, _ = build_html(loaded, tmp_path)
    assert 'id="predictions"' in page
