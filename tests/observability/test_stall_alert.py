"""A trainer rank stopped with SIGSTOP fires ScalelabTrialStalled for its trial, and only for it.

Runs last in the package (file order): it stops a live trainer the other tests read.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.observability.scene import EXPERIMENT, NAMESPACE, TEST_WINDOWS, Scene

pytestmark = pytest.mark.prometheus


def test_running_trials_do_not_raise_the_stall_alert(scene: Scene) -> None:
    assert not scene.alerts("ScalelabTrialStalled")


def test_a_rank_stopped_with_sigstop_fires_the_stall_alert_for_its_trial(scene: Scene) -> None:
    stopped, running = (t for t in sorted(scene.live, key=lambda t: -t.gpus))
    pid = stopped.rank_pid(1)
    os.kill(pid, signal.SIGSTOP)
    provoked = time.monotonic()
    try:
        seconds, alert = scene.wait_firing(
            "ScalelabTrialStalled",
            90,
            namespace=NAMESPACE,
            experiment=EXPERIMENT,
            trial=stopped.name,
        )
        print(
            f"[measure] ScalelabTrialStalled fired {seconds:.1f} s after SIGSTOP "
            f"(stall_window {TEST_WINDOWS['stall_window']})"
        )
        assert time.monotonic() - provoked >= 10  # not before the window has passed
        assert alert["labels"]["severity"] == "warning"
        assert not scene.firing("ScalelabTrialStalled", trial=running.name)
    finally:
        os.kill(pid, signal.SIGCONT)
