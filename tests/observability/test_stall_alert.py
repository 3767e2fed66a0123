"""A trainer rank stopped with SIGSTOP fires ScalelabTrialStalled for its trial, and only for it.

Both halves of the rule are provoked: a stopped rank of a 2-process trial leaves the other rank
serving /metrics but blocked in the allreduce (no samples counted), and a stopped 1-process trial
cannot be scraped at all (its target is down). Runs last in the package (file order): it stops the
live trainers the other tests read.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.observability.scene import EXPERIMENT, NAMESPACE, TEST_WINDOWS, LiveTrial, Scene

pytestmark = pytest.mark.prometheus


def stop_rank_until_stalled(scene: Scene, trial: LiveTrial, rank: int) -> float:
    """SIGSTOP one rank, wait for the alert on its trial; seconds from the signal to firing."""
    pid = trial.rank_pid(rank)
    os.kill(pid, signal.SIGSTOP)
    provoked = time.monotonic()
    try:
        _, alert = scene.wait_firing(
            "ScalelabTrialStalled", 90, namespace=NAMESPACE, experiment=EXPERIMENT, trial=trial.name
        )
        seconds = time.monotonic() - provoked
        print(
            f"[measure] ScalelabTrialStalled ({trial.name}, rank {rank} of {trial.gpus} stopped) "
            f"fired {seconds:.1f} s after SIGSTOP (stall_window {TEST_WINDOWS['stall_window']})"
        )
        assert alert["labels"]["severity"] == "warning"
        return seconds
    finally:
        os.kill(pid, signal.SIGCONT)


def test_running_trials_do_not_raise_the_stall_alert(scene: Scene) -> None:
    assert not scene.alerts("ScalelabTrialStalled")


def test_a_stopped_rank_stalls_its_trial_and_only_its_trial(scene: Scene) -> None:
    two, one = sorted(scene.live, key=lambda t: -t.gpus)
    seconds = stop_rank_until_stalled(scene, two, rank=1)
    assert seconds >= 10  # not before the window has passed
    assert not scene.firing("ScalelabTrialStalled", trial=one.name)


def test_a_stopped_single_process_trial_stalls_through_its_down_target(scene: Scene) -> None:
    one = min(scene.live, key=lambda t: t.gpus)
    assert one.gpus == 1
    seconds = stop_rank_until_stalled(scene, one, rank=0)
    assert seconds >= 10
