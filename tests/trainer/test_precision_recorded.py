"""`scalelab run` of a sweep with training.mixedPrecision and jitCompile: every trial completes,
results.json records what each computed in (emulated on this CPU) and whether XLA compiled it, and
report.html shows both columns."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.cluster.processes import REPO, local_run

pytestmark = pytest.mark.horovod

SPEC = {
    "apiVersion": "scalelab.dev/v1alpha1",
    "kind": "ScaleExperiment",
    "metadata": {"name": "precision"},
    "spec": {
        "workload": {"model": "mlp", "dataset": "digits", "datasetSize": 256, "hiddenUnits": 32},
        "sweep": {"batchSizes": [32], "gpus": [1, 2]},
        "training": {"optimizer": "momentum", "learningRate": 0.05, "referenceBatchSize": 32,
                     "maxEpochs": 3, "mixedPrecision": "float16", "jitCompile": True},
        "resources": {"gpusPerProcess": 0},
    },
}  # fmt: skip


def test_mixed_precision_and_xla_trials_complete_with_their_precision_recorded(
    tmp_path: Path,
) -> None:
    spec_file = tmp_path / "precision.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    out = local_run(tmp_path, spec_file, timeout=600)
    trials = json.loads((out / "results.json").read_text())["trials"]
    assert len(trials) == 2
    for trial in trials:
        assert trial["phase"] == "Succeeded", trial["reason"]
        assert trial["precision"] == "float16 (emulated)"
        assert trial["jitCompile"] is True
        assert any("ran in emulation on the CPU" in w for w in trial["warnings"])
    subprocess.run(
        [sys.executable, "-m", "scalelab", "report", str(out)],
        check=True, capture_output=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    report = (out / "report.html").read_text()
    assert "<th>precision</th>" in report
    assert "<th>XLA</th>" in report
    assert "float16 (emulated)" in report
