"""`promtool check metrics` is clean on every rank's /metrics and on the operator's."""

from __future__ import annotations

import subprocess

import pytest

from scalelab.kube.handlers import RECONCILING
from tests.harness.prometheus import PROMTOOL
from tests.observability.scene import Scene, scrape

pytestmark = pytest.mark.prometheus


def promtool_check_metrics(text: str) -> str:
    done = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    return "" if done.returncode == 0 else (done.stdout + done.stderr).strip() or "rc != 0"


def trainer_problems(scene: Scene) -> dict[str, list[str]]:
    problems = {}
    for trial in scene.live:
        for port in trial.ports:
            text = scrape(port)
            assert "scalelab_trainer_samples_total{" in text
            samples = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
            print(
                f"[measure] {trial.name}:{port} /metrics {len(text)} bytes, {len(samples)} samples"
            )
            if found := promtool_check_metrics(text):
                problems[f"{trial.name}:{port}"] = sorted(set(found.splitlines()))
    return problems


def test_every_trainer_rank_passes_promtool_check_metrics(scene: Scene) -> None:
    assert not trainer_problems(scene)


def test_the_operator_endpoint_passes_promtool_check_metrics(scene: Scene) -> None:
    text = scrape(scene.operator.port)
    # Every handler's error series is exported before its first error, so rate() sees that one.
    for handler in RECONCILING:
        assert f'scalelab_operator_reconcile_errors_total{{handler="{handler}"}}' in text
    for family in ("scalelab_operator_trials", "scalelab_operator_gpus",
                   "scalelab_trial_result_scaling_efficiency_ratio"):  # fmt: skip
        assert f"\n{family}{{" in text, family
    assert promtool_check_metrics(text) == ""


def test_prometheus_scrapes_every_target_healthy(scene: Scene) -> None:
    targets = scene.prometheus.active_targets()
    unhealthy = [(t["scrapeUrl"], t["lastError"]) for t in targets if t["health"] != "up"]
    assert len(targets) == sum(t.gpus for t in scene.live) + 1 + len(scene.dcgm)
    assert not unhealthy
    slowest = max(t["lastScrapeDuration"] for t in targets)
    print(f"[measure] {len(targets)} targets, slowest scrape {slowest * 1000:.1f} ms")
