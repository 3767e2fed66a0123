"""Every panel of the shipped dashboard, its variables substituted as Grafana would, returns data
from a real Prometheus scraping real trainer ranks, the operator's metrics and (fake) DCGM.

The panels' data is also drawn into a picture (render.py), into the test's temporary directory or
to SCALELAB_DASHBOARD_PNG when set; docs/monitoring-dashboard.png was made so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scalelab.kube.state import Usage
from tests.harness.ports import wait_until
from tests.observability import grafana, render
from tests.observability.scene import (
    CPU_EXPERIMENT,
    CPU_QUEUE,
    NAMESPACE,
    Scene,
    load_generator,
)

pytestmark = pytest.mark.prometheus
RANGE_SECONDS = 120


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return dict(load_generator().dashboard())


def test_variables_resolve_to_the_running_experiment(
    scene: Scene, dashboard: dict[str, Any]
) -> None:
    values = grafana.resolve_variables(dashboard, scene.prometheus)
    assert values["namespace"] == NAMESPACE
    assert values["experiment"] == "obs-sweep"


def test_every_panel_query_returns_data(scene: Scene, dashboard: dict[str, Any]) -> None:
    values = grafana.resolve_variables(dashboard, scene.prometheus)
    now = time.time()
    empty, timings = [], []
    for panel, target in grafana.targets(dashboard):
        expr = grafana.interpolate(target["expr"], values)
        assert "$" not in expr.replace("$1", ""), f"{panel['title']}: unresolved {expr}"
        started = time.monotonic()
        if target.get("instant"):
            result = scene.prometheus.query(expr)
            points = len(result)
        else:
            data = scene.prometheus.api(
                "query_range", query=expr, start=str(now - RANGE_SECONDS), end=str(now), step="2"
            )
            result = data["result"]
            points = sum(len(s["values"]) for s in result)
        timings.append(time.monotonic() - started)
        if not points:
            empty.append(f"{panel['title']} [{target['refId']}]: {expr}")
    print(
        f"[measure] {len(timings)} panel queries: total {sum(timings) * 1000:.0f} ms, "
        f"slowest {max(timings) * 1000:.0f} ms"
    )
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_the_dcgm_panel_joins_gpu_utilization_to_trainer_pods(
    scene: Scene, dashboard: dict[str, Any]
) -> None:
    values = grafana.resolve_variables(dashboard, scene.prometheus)
    panel = next(p for p in dashboard["panels"] if "DCGM" in p["title"])
    expr = grafana.interpolate(panel["targets"][0]["expr"], values)
    expected = {
        (t.pod(r), str(t.batch_size), str(t.gpus)) for t in scene.live for r in range(t.gpus)
    }
    pods: set[tuple[str, str, str]] = set()

    def joined() -> bool:
        # Polled: on a saturated CPU one scrape may time out, and its series are stale until the
        # next one.
        nonlocal pods
        result = scene.prometheus.query(expr)
        pods = {
            (s["metric"]["pod"], s["metric"]["batch_size"], s["metric"]["gpus"]) for s in result
        }
        return pods == expected

    try:
        wait_until(joined, 15, "DCGM join")
    except TimeoutError:
        assert pods == expected
    # Both ways a DCGM scrape may label its series were joined: renamed and kept pod labels.
    assert scene.prometheus.query('DCGM_FI_DEV_GPU_UTIL{exported_pod!=""}')
    assert scene.prometheus.query('DCGM_FI_DEV_GPU_UTIL{exported_pod="", pod=~".+-worker-.+"}')


def test_scaling_efficiency_panel_shows_the_sweep_results(
    scene: Scene, dashboard: dict[str, Any]
) -> None:
    values = grafana.resolve_variables(dashboard, scene.prometheus)
    panel = next(p for p in dashboard["panels"] if p["title"].startswith("Scaling efficiency"))
    result = scene.prometheus.wait_for(grafana.interpolate(panel["targets"][0]["expr"], values))
    got = {(s["metric"]["batch_size"], s["metric"]["gpus"]): float(s["value"][1]) for s in result}
    want = {
        (str(r.batch_size), str(r.gpus)): r.scaling_efficiency
        for r in scene.operator.rows
        if r.scaling_efficiency is not None
    }
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value)


#: The GPU panels: title → refId → the sweep's GPUs each target shows (from its Usage), by queue.
GPU_PANELS: dict[str, dict[str, Callable[[Usage], int]]] = {
    "GPUs requested / running / pending / queued": {
        "A": lambda u: u.requested,
        "B": lambda u: u.running,
        "C": lambda u: u.requested - u.running,
        "D": lambda u: u.queued,
    },
    "GPU pools: demand vs admitted vs running, by queue": {
        "A": lambda u: u.requested + u.queued,
        "B": lambda u: u.requested - u.suspended,
        "C": lambda u: u.running,
    },
}


def test_a_cpu_only_experiment_counts_in_no_gpu_panel(
    scene: Scene, dashboard: dict[str, Any]
) -> None:
    """The CPU-only experiment's processes are in the operator's gauge as device="cpu", in the
    sweep's namespace and a queue of their own; every GPU panel shows the GPU sweep alone."""
    values = grafana.resolve_variables(dashboard, scene.prometheus)
    cpu = scene.prometheus.query(f'scalelab_operator_gpus{{experiment="{CPU_EXPERIMENT}"}}')
    assert {(s["metric"]["namespace"], s["metric"]["device"]) for s in cpu} == {(NAMESPACE, "cpu")}
    want = {
        (title, ref): {"": float(value(scene.operator.usage))}
        for title, refs in GPU_PANELS.items()
        for ref, value in refs.items()
    }
    got: dict[tuple[str, str], dict[str, float]] = {}

    def shown() -> bool:
        # Polled: an alert test may have just restored the sweep's usage (next scrape: 1 s).
        for panel, target in grafana.targets(dashboard):
            if panel["title"] in GPU_PANELS:
                result = scene.prometheus.query(grafana.interpolate(target["expr"], values))
                got[(panel["title"], target["refId"])] = {
                    s["metric"].get("queue", ""): float(s["value"][1]) for s in result
                }
        return got == want

    try:
        wait_until(shown, 15, "GPU panels without the CPU-only experiment")
    except TimeoutError:
        assert got == want, f"{CPU_QUEUE} or the CPU-only processes in a GPU panel"


def test_dashboard_picture_renders_from_the_run(scene: Scene, dashboard: dict[str, Any]) -> None:
    """Draws every panel from the run (to the tmp dir unless SCALELAB_DASHBOARD_PNG is set)."""
    out = os.environ.get("SCALELAB_DASHBOARD_PNG")
    values = grafana.resolve_variables(dashboard, scene.prometheus)
    path = Path(out) if out else scene.workdir / "dashboard.png"
    seconds = time.monotonic() - scene.started
    render.render(dashboard, scene.prometheus, values, path, seconds=min(seconds, 600))
    assert path.stat().st_size > 10_000
