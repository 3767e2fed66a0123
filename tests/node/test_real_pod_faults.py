"""Faults of a trial's own processes and of its image, on real pods: a trainer stopped
with SIGSTOP is reported stalled and recovers when continued; a loss that explodes is Diverged
within its first epoch; an image the kubelet cannot pull is named on the experiment and the trial.
(A deleted worker pod, retried or failed under backoffLimit, is in test_real_pods.py.)"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.harness.controlplane import ControlPlane
from tests.harness.objects import experiment_condition, get, items, wait_for
from tests.node.conftest import apply, finished
from tests.node.test_real_pods import LONG_TRIAL, experiment, gauge, operator_metrics
from tests.node.test_real_pods import trial_diagnostics as diagnostics

pytestmark = pytest.mark.node


def _trainers(trial: str) -> list[psutil.Process]:
    """The trainer processes of one trial, seen from the host (the node runs on this machine):
    `python -m scalelab_trainer ... --trial TRIAL`, not the launcher's mpirun nor ssh."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        argv = p.info["cmdline"] or []
        if "scalelab_trainer" in argv and trial in argv and "python" in Path(argv[0]).name:
            found.append(p)
    return found


def test_a_trainer_stopped_with_sigstop_is_reported_stalled_and_recovers_when_continued(
    installed: ControlPlane, namespace: str
) -> None:
    cp = installed
    name = apply(cp, namespace, experiment("stopped", **LONG_TRIAL))

    def training() -> list[psutil.Process]:
        trials = items(cp, "st", namespace)
        progress = trials[0].get("status", {}).get("progress") if trials else None
        return _trainers(trials[0]["metadata"]["name"]) if progress else []

    stopped = wait_for(training, 300, "rank 0 to report progress", interval=0.5)
    trial = items(cp, "st", namespace)[0]["metadata"]["name"]
    for p in stopped:
        p.send_signal(signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        stall = wait_for(
            lambda: experiment_condition(cp, name, namespace, "TrialsStalled"), 180, "TrialsStalled"
        )
        print(f"SIGSTOP: reported stalled {time.monotonic() - t0:.0f} s after the stop")
        assert stall["status"] == "True"
        assert trial in stall["message"]
        assert gauge(operator_metrics(cp), "scalelab_operator_stalled_trials",
                     namespace=namespace) == 1  # fmt: skip
        events = items(cp, "events", namespace, "--field-selector=reason=TrialStalled")
        assert events, diagnostics(cp, namespace)
    finally:
        for p in stopped:
            p.send_signal(signal.SIGCONT)
    assert finished(cp, name, namespace) == "Succeeded", diagnostics(cp, namespace)
    assert experiment_condition(cp, name, namespace, "TrialsStalled") is None


def test_a_loss_that_explodes_is_diverged_within_its_first_epoch(
    installed: ControlPlane, namespace: str
) -> None:
    cp = installed
    name = apply(cp, namespace, experiment(
        "exploding", training={"learningRate": 5.0, "maxEpochs": 50},
    ))  # fmt: skip
    assert finished(cp, name, namespace) == "Succeeded", diagnostics(cp, namespace)
    status = items(cp, "st", namespace)[0]["status"]
    assert status["phase"] == "Diverged", status
    assert "not finite or above" in status["reason"]
    assert status["result"]["epochs"] <= 1, status["result"]


def test_an_image_the_kubelet_cannot_pull_is_named_on_the_experiment_and_the_trial(
    installed: ControlPlane, namespace: str
) -> None:
    """No registry answers here: the kubelet's pull of a missing image fails at once."""
    cp = installed
    image = "localhost/scalelab/missing:0"
    name = apply(cp, namespace, experiment(
        "no-image", sweep={"batchSizes": [16, 8]},
        resources={"image": image, "gpusPerProcess": 0, "cpu": "100m", "memory": "256Mi"},
    ))  # fmt: skip
    t0 = time.monotonic()
    met = wait_for(
        lambda: experiment_condition(cp, name, namespace, "PrerequisitesMet"),
        180,
        "PrerequisitesMet",
    )
    print(f"unpullable image named {time.monotonic() - t0:.0f} s after kubectl apply")
    assert met["reason"] == "TrainerImageUnpullable", met
    assert f'cannot pull image "{image}"' in met["message"]
    [job] = items(cp, "mpijobs", namespace)  # maxConcurrentTrials 1; nothing more launched
    trial = wait_for(
        lambda: (
            image
            in (s := get(cp, "st", job["metadata"]["name"], namespace)["status"]).get("reason", "")
            and s
        ),
        60,
        "the trial's reason",
    )
    assert trial["phase"] == "Pending"
    held = items(cp, "events", namespace, "--field-selector=reason=PrerequisitesMissing")
    assert job["metadata"]["name"] in {e["involvedObject"]["name"] for e in held}
    assert gauge(operator_metrics(cp), "scalelab_operator_missing_prerequisite",
                 namespace=namespace, prerequisite="trainer-image") == 1  # fmt: skip
