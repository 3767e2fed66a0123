"""The operator-side alerts fire in a real Prometheus when provoked through the operator's own
metrics module (rules rendered with short windows: scene.TEST_WINDOWS)."""

from __future__ import annotations

import threading
import time

import pytest

from scalelab.api import TrialPhase
from scalelab.kube.handlers import RECONCILE
from scalelab.kube.state import Usage
from tests.observability.scene import CPU_EXPERIMENT, CPU_USAGE, EXPERIMENT, NAMESPACE, Scene

pytestmark = pytest.mark.prometheus


def test_a_trial_that_diverges_fires_the_divergence_alert(scene: Scene) -> None:
    assert not scene.firing("ScalelabTrialDiverged")
    op = scene.operator
    trial = next(r.trial for r in op.rows)
    before = dict(op.phases)
    op.phases[trial] = TrialPhase.DIVERGED
    op.publish()
    provoked = time.monotonic()
    try:
        _, alert = scene.wait_firing(
            "ScalelabTrialDiverged", 30, namespace=NAMESPACE, experiment=EXPERIMENT
        )
        print(f"[measure] ScalelabTrialDiverged fired {time.monotonic() - provoked:.1f} s after")
        assert float(alert["value"]) == 1
        assert alert["labels"]["severity"] == "info"
    finally:
        op.phases = before
        op.publish()


def test_reconcile_errors_that_keep_coming_fire_the_operator_alert(scene: Scene) -> None:
    assert not scene.firing("ScalelabOperatorReconcileErrors")
    errors = scene.operator.metrics.reconcile_errors.labels(RECONCILE)
    done = threading.Event()

    def fail_every_half_second() -> None:
        while not done.wait(0.5):
            errors.inc()

    thread = threading.Thread(target=fail_every_half_second, daemon=True)
    provoked = time.monotonic()
    thread.start()
    try:
        seconds, alert = scene.wait_firing("ScalelabOperatorReconcileErrors", 60, handler=RECONCILE)
        print(f"[measure] ScalelabOperatorReconcileErrors fired {seconds:.1f} s after errors began")
        # errors_window 10s + errors_for 5s: not before the `for` has passed
        assert time.monotonic() - provoked >= 5
        assert float(alert["value"]) > 0
    finally:
        done.set()
        thread.join()


def test_gpus_admitted_but_not_running_fire_the_pending_alert(scene: Scene) -> None:
    """Not for the CPU-only experiment: its processes, admitted and not all running since the
    scene started, hold no GPU."""
    assert CPU_USAGE.requested > CPU_USAGE.running
    assert not scene.firing("ScalelabGPUDemandPending")
    op = scene.operator
    before = op.usage
    # A 2-GPU trial admitted (its MPIJob exists) while the cluster has no free GPU for it.
    op.usage = Usage(requested=before.requested + 2, running=before.running, queued=before.queued)
    op.publish()
    provoked = time.monotonic()
    try:
        seconds, alert = scene.wait_firing(
            "ScalelabGPUDemandPending", 40, namespace=NAMESPACE, experiment=EXPERIMENT
        )
        print(f"[measure] ScalelabGPUDemandPending fired {seconds:.1f} s after (for: 5s)")
        assert time.monotonic() - provoked >= 5
        assert float(alert["value"]) == 2
        active = scene.alerts("ScalelabGPUDemandPending")
        assert not [a for a in active if a["labels"].get("experiment") == CPU_EXPERIMENT], active
    finally:
        op.usage = before
        op.publish()
