"""A team's own model on real pods: examples/custom-spirals.yaml (trimmed to seconds per trial)
applied with kubectl, its trials run by the real MPI operator in pods of the derived trainer image
a team builds with examples/spirals-plugin/Dockerfile (`FROM` our trainer image + `pip install`
of their package; hack/build-images.sh builds it that way, offline, as
localhost/scalelab/trainer-spirals:test). The same file run by `scalelab run` with the package on
PYTHONPATH is the reference; our stock trainer image, which lacks the package, fails the trial
with the reason.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.processes import cluster_report, comparable, differences
from tests.harness.controlplane import ControlPlane
from tests.harness.objects import get, items
from tests.harness.prometheus import Prometheus
from tests.node.conftest import FAKE_GPUS, REPO, finished
from tests.node.test_real_pods import trial_diagnostics

pytestmark = [pytest.mark.node, pytest.mark.usefixtures("team_images")]

EXAMPLE = REPO / "examples" / "custom-spirals.yaml"
PLUGIN_SRC = REPO / "examples" / "spirals-plugin" / "src"
DERIVED_IMAGE = "localhost/scalelab/trainer-spirals:test"
STOCK_IMAGE = "localhost/scalelab/trainer:test"  # the operator's SCALELAB_TRAINER_IMAGE here
# Not the example's defaults (64 units, 3 layers), so the model's size shows they reached it.
PARAMETERS = {"units": 16, "layers": 2, "turns": 1.5, "noise": 0.1}


def spirals_parameter_count(units: int, layers: int) -> int:
    """Weights and biases of the example's MLP: 2 inputs, `layers` × `units` ReLU, 2 logits."""
    return (2 * units + units) + (layers - 1) * (units * units + units) + (units * 2 + 2)


def trimmed_example(path: Path, name: str, image: str | None, gpus: list[int]) -> Path:
    """examples/custom-spirals.yaml cut to one batch size and 5 epochs of 512 points (seconds
    per trial), pointed at `image`; written to `path`."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"]["name"] = name
    spec = doc["spec"]
    spec["workload"].update(parameters=PARAMETERS, datasetSize=512)
    spec["sweep"] = {"batchSizes": [64], "gpus": gpus}
    spec["training"]["maxEpochs"] = 5
    spec["resources"].update(image=image, cpu="500m", memory="1Gi")
    spec["execution"].update(maxConcurrentTrials=2, maxGPUs=FAKE_GPUS, backoffLimit=0)
    path.write_text(yaml.safe_dump(doc))
    return path


def local_run(
    spec_file: Path, out: Path, plugin_src: Path = PLUGIN_SRC, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """`scalelab run` of the file here, the example package `plugin_src` on the trainer's
    PYTHONPATH and `env` added to the environment."""
    env = {**os.environ, "PYTHONPATH": str(plugin_src), **(env or {})}
    subprocess.run(
        [sys.executable, "-m", "scalelab", "run", str(spec_file), "--out", str(out), "--no-report"],
        check=True, capture_output=True, cwd=REPO, timeout=600, env=env,
    )  # fmt: skip
    data: dict[str, Any] = json.loads((out / "results.json").read_text())
    return data


def test_a_teams_model_runs_on_real_pods_from_its_derived_trainer_image(
    installed: ControlPlane, pod_prometheus: Prometheus, namespace: str, tmp_path: Path
) -> None:
    cp = installed
    spec_file = trimmed_example(tmp_path / "spirals.yaml", "spirals", DERIVED_IMAGE, [1, 2])
    cp.kubectl("apply", "-n", namespace, "-f", str(spec_file))
    local = local_run(spec_file, tmp_path / "local")  # runs while the pods do

    assert finished(cp, "spirals", namespace) == "Succeeded", trial_diagnostics(cp, namespace)
    sx = get(cp, "sx", "spirals", namespace)["status"]
    assert sx["trials"]["succeeded"] == 2
    assert sx["recommendation"]
    results = {t["metadata"]["name"]: t["status"]["result"] for t in items(cp, "st", namespace)}
    one, two = results["spirals-b64-g1"], results["spirals-b64-g2"]
    for result in (one, two):
        # The plugin's model with the experiment's parameters, not a built-in workload.
        assert result["params"]["count"] == spirals_parameter_count(16, 2) == 354, result
        assert result["finalLoss"] < math.log(2)  # below the untrained two-class loss
        assert result["samplesPerSecond"] > 0
    # The same examples per global batch in one pod and across two: the same training.
    assert two["finalLoss"] == pytest.approx(one["finalLoss"], rel=1e-4)
    # Every launcher and worker ran the team's image.
    images = {c["image"] for p in items(cp, "pods", namespace) for c in p["spec"]["containers"]}
    assert images == {DERIVED_IMAGE}, images

    # Prometheus scraped both ranks of the two-process trial, each from its own worker pod.
    series = pod_prometheus.wait_for(
        "count by (pod, rank) (last_over_time(scalelab_trainer_samples_total"
        f'{{namespace="{namespace}", trial="spirals-b64-g2"}}[30m]))',
        timeout=30,
    )
    by_rank = {s["metric"]["rank"]: s["metric"]["pod"] for s in series}
    assert set(by_rank) == {"0", "1"}, series
    assert len(set(by_rank.values())) == 2, f"both ranks in one pod: {by_rank}"

    # `scalelab report --experiment` gives the results and report of the local run.
    out = tmp_path / "cluster"
    report = cluster_report(cp, "spirals", namespace, out)
    assert report.returncode == 0, report.stderr
    assert f"{namespace}/spirals: 2 of 2 trial(s) finished" in report.stdout
    remote = json.loads((out / "results.json").read_text())
    assert remote["spec"]["workload"]["entryPoint"] == "spirals:workload"
    assert differences(comparable(local), comparable(remote)) == []
    for trial in remote["trials"]:
        assert trial["finalLoss"] < trial["initialLoss"]
        assert len(trial["curves"]["epochLoss"]) == trial["epochs"] == 5
    page = (out / "report.html").read_text()
    assert "spirals-b64-g2" in page


def test_the_stock_trainer_image_fails_a_teams_trial_naming_the_missing_package(
    installed: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    cp = installed
    spec_file = trimmed_example(tmp_path / "stock.yaml", "stock", None, [1])
    cp.kubectl("apply", "-n", namespace, "-f", str(spec_file))

    assert finished(cp, "stock", namespace) == "Failed", trial_diagnostics(cp, namespace)
    (trial,) = items(cp, "st", namespace)
    assert trial["status"]["phase"] == "Failed"
    reason = trial["status"]["reason"]
    assert "PluginError: entry point spirals:workload: cannot import 'spirals'" in reason, reason
    assert "trainer image" in reason, reason
    images = {c["image"] for p in items(cp, "pods", namespace) for c in p["spec"]["containers"]}
    assert images == {STOCK_IMAGE}, images
