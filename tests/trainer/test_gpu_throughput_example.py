"""examples/gpu-throughput.yaml really trains Keras' ResNet-50: its planned argv, shrunk to a few
64×64 images on the CPU, builds and steps the 23.6 M-parameter network."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scalelab.planner import plan, trainer_flags
from scalelab.validation import load_experiment, parse_experiment
from tests.trainer.trainer_run import run_trainer

pytestmark = pytest.mark.horovod

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gpu-throughput.yaml"


def test_the_throughput_example_sweeps_resnet50_and_its_argv_trains_it() -> None:
    full = plan(load_experiment(EXAMPLE))
    argv = trainer_flags(full[0].spec, full[0].name)
    assert argv[argv.index("--cnn-arch") + 1] == "resnet50"
    assert argv[argv.index("--image-size") + 1] == "224"
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["spec"]["workload"] |= {"imageSize": 64, "numClasses": 10, "datasetSize": 16}
    doc["spec"]["sweep"] = {"batchSizes": [8], "gpus": [1], "batchScope": "global"}
    doc["spec"]["training"]["maxEpochs"] = 1
    (tiny,) = plan(parse_experiment(doc))
    run = run_trainer(trainer_flags(tiny.spec, tiny.name), timeout=300)
    assert run.code == 0, run.stderr[-3000:]
    assert run.result["phase"] == "Succeeded"
    assert run.result["steps"] == 2
    # Keras' ResNet-50 with a 10-class head: 23,555,082 trainable weights.
    assert run.result["params"]["count"] == 23_555_082
    assert run.result["gradientNoiseScale"] is None  # measurement.gradientNoiseScale: false
