"""Every trainer flag a study needs is reachable from a ScaleExperiment: the planner's argv, parsed
by the trainer's own parser, carries each API field's value into the TrialConfig field it names."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from scalelab import api
from scalelab.planner import plan, trainer_flags
from scalelab.validation import parse_experiment
from scalelab_trainer.config import TrialConfig, parse_config

pytestmark = pytest.mark.unit

#: Trainer flags that are not a study's choice: identity and plumbing the executors set.
NOT_FROM_THE_SPEC = {
    "namespace", "report_status", "metrics_port", "progress_interval_seconds", "export_data",
    "store_results",  # the operator's launcher sets it (cluster results), not the spec
    "progress_seconds",  # the trainer's default keeps long epochs under the stall threshold
    "gpus_per_process",  # the MPIJob launcher's, from resources.gpusPerProcess (kube/mpijob.py)
}  # fmt: skip

TRAINING = {
    "optimizer": "lamb", "learningRate": 0.02, "referenceBatchSize": 64, "lrScaling": "sqrt",
    "warmupEpochs": 0.5, "momentum": 0.8, "beta2": 0.99, "epsilon": 1e-8, "weightDecay": 0.01,
    "trustCoefficient": 0.02, "maxEpochs": 7, "divergenceFactor": 50.0, "targetLoss": 0.3,
    "convergence": {"relativeTolerance": 0.01, "stoppingLoss": "update"}, "shuffle": True,
    "mixedPrecision": "bfloat16", "jitCompile": True,
}  # fmt: skip
MEASUREMENT = {
    "gradientNoiseScale": False, "recordUpdateLosses": True, "lossSurfacePoints": 50,
    "stepsPerCall": 4, "throughputSkipSteps": 3, "intraOpThreads": 2, "noiseWindowEpochs": 2.5,
}  # fmt: skip
WORKLOADS = [
    {"model": "linear", "dataset": "lab1-line", "lineSlope": 3.0, "lineIntercept": -1.0,
     "noise": 0.5},
    {"model": "linear", "dataset": "regression", "features": 7, "noise": 0.25},
    {"model": "mlp", "dataset": "digits", "hiddenUnits": 17, "hiddenLayers": 3,
     "testFraction": 0.3},
    {"model": "cnn", "dataset": "synthetic-images", "cnnArch": "resnet50", "imageSize": 64,
     "numClasses": 5},
    {"model": "custom", "dataset": "custom", "entryPoint": "team.models:build",
     "parameters": {"depth": 3, "act": "gelu", "wide": True, "sizes": [1, 2.5]}},
]  # fmt: skip

#: API wire name (workload) → TrialConfig field, where the two names differ.
RENAMED = {"lineSlope": "data_w", "lineIntercept": "data_b", "noise": "data_noise"}


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def _config(workload: dict[str, Any]) -> TrialConfig:
    spec = {
        "workload": {"datasetSize": 512, "seed": 3, **workload},
        "sweep": {"batchSizes": [64], "gpus": [2]},
        "training": TRAINING,
        "measurement": MEASUREMENT,
    }
    exp = parse_experiment(
        {
            "apiVersion": api.API_VERSION,
            "kind": "ScaleExperiment",
            "metadata": {"name": "flags"},
            "spec": spec,
        }
    )
    (trial,) = plan(exp)
    return parse_config(trainer_flags(trial.spec, trial.name))


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w["model"] + "-" + w["dataset"])
def test_every_api_value_reaches_the_trainer_field_it_names(workload: dict[str, Any]) -> None:
    cfg = _config(workload)
    expected: dict[str, Any] = {
        "batch_size": 64, "dataset_size": 512, "seed": 3,
        **{_snake(k): v for k, v in TRAINING.items() if k != "convergence"},
        "relative_tolerance": 0.01, "stopping_loss": "update",
        **{_snake(k): v for k, v in MEASUREMENT.items()},
    }  # fmt: skip
    for key, value in workload.items():
        if key == "parameters":
            assert api.Workload.model_validate(workload).parameters == value
            continue
        expected[RENAMED.get(key, _snake(key))] = value
    for field, value in expected.items():
        assert getattr(cfg, field) == value, field


def test_every_trainer_flag_a_study_uses_is_reachable_from_yaml() -> None:
    defaults = TrialConfig()
    reached = {
        f.name
        for workload in WORKLOADS
        for f in dataclasses.fields(TrialConfig)
        if getattr(_config(workload), f.name) != getattr(defaults, f.name)
    }
    unreachable = {f.name for f in dataclasses.fields(TrialConfig)} - reached - NOT_FROM_THE_SPEC
    # repeat is 0 in this one-trial plan and trial/experiment names are checked elsewhere
    assert unreachable <= {"repeat", "experiment", "trial"}, unreachable


def test_custom_parameters_reach_the_plugin_as_one_json_object() -> None:
    import json

    cfg = _config(WORKLOADS[-1])
    assert json.loads(cfg.workload_parameters) == WORKLOADS[-1]["parameters"]
    assert cfg.entry_point == "team.models:build"
