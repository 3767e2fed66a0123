"""The package-scoped live scene shared by the observability tests (see scene.py)."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator

import pytest

from scalelab.api import TrialPhase
from scalelab.kube.handlers import RECONCILING
from scalelab.kube.metrics import OperatorMetrics
from scalelab.kube.state import Usage
from scalelab.names import trial_name
from tests.harness.prometheus import start_prometheus
from tests.observability import scene as sc

#: The live trials: (global batch, processes). The sweep's own trials run without /metrics.
LIVE = ((256, 2), (64, 1))
SWEEP_GRID = [(b, g) for g in (1, 2) for b in (32, 128)]


@pytest.fixture(scope="package")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sc.Scene]:
    """Prometheus (test-rendered rules) scraping 2 live trainers (3 ranks, on fake GPUs), the
    operator's metrics module fed a real local sweep's results and a CPU-only experiment's
    usage, and a fake DCGM exporter."""
    started = time.monotonic()
    workdir = tmp_path_factory.mktemp("observability")
    rules = workdir / "scalelab.rules.yaml"
    rules.write_text(sc.load_generator().rules_text(**sc.TEST_WINDOWS))
    prom = start_prometheus(workdir / "prometheus", rule_files=[rules])

    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry, RECONCILING)
    port, server = sc.serve(registry)
    operator = sc.OperatorEndpoint(registry, metrics, port, server)
    live_names = [trial_name(sc.EXPERIMENT, b, g) for b, g in LIVE]
    operator.phases = {trial_name(sc.EXPERIMENT, b, g): TrialPhase.PENDING for b, g in SWEEP_GRID}
    operator.phases |= dict.fromkeys(live_names, TrialPhase.RUNNING)
    live_gpus = sum(g for _, g in LIVE)
    operator.usage = Usage(requested=live_gpus, running=live_gpus, queued=2)
    operator.publish()
    operator.publish_cpu_only()
    # The reconcile timer (every 2 s in the shipped Deployment) counts a pass even when the
    # snapshot does not change; tests that change it call publish() themselves.
    ticking = threading.Event()

    def tick() -> None:
        while not ticking.wait(2):
            metrics.reconciles.labels("reconcile").inc()

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()

    # One GPU node per live trial: the first exporter's scrape renames the pod labels, the
    # second's keeps them (honorLabels), so the dashboard's join is checked both ways.
    dcgm = [sc.start_dcgm(node, honor_labels=node == 1) for node in range(len(LIVE))]

    live = [sc.start_trainer(n, b, g, workdir) for n, (b, g) in zip(live_names, LIVE, strict=True)]
    sweep = sc.run_sweep(workdir)
    s = sc.Scene(prom, workdir, live, operator, dcgm, started)
    s.timings["prometheus_start_s"] = prom.start_seconds
    try:
        for t in live:
            sc.wait_serving(t, timeout=240)
        s.timings["trainers_serving_s"] = time.monotonic() - started
        for exporter, t in zip(dcgm, live, strict=True):
            exporter.collector.pods = [t.pod(r) for r in range(t.gpus)]
        s.write_targets()
        sweep.wait(timeout=300)
        assert sweep.returncode == 0, (workdir / "sweep.log").read_text()[-3000:]
        s.timings["sweep_done_s"] = time.monotonic() - started
        operator.rows = sc.sweep_rows(workdir)
        operator.phases |= {r.trial: r.phase for r in operator.rows}
        operator.usage = Usage(requested=live_gpus, running=live_gpus, queued=0)
        operator.publish()
        prom.wait_for("scalelab_trial_result_samples_per_second", timeout=30)
        prom.wait_for(f'count(up{{scalelab_dev_trial!=""}} == 1) == {live_gpus}', timeout=30)
        s.timings["scene_ready_s"] = time.monotonic() - started
        yield s
    finally:
        ticking.set()
        if sweep.poll() is None:
            sc.processes.stop(sweep, grace_seconds=5)
        s.stop()
        prom.stop()
        shutil.rmtree(prom.workdir / "data", ignore_errors=True)
