"""Kueue's WaitForPodsReady on real pods: a trial admitted while its pods cannot be scheduled (the
node cordoned, as during maintenance) misses Kueue's ready timeout; Kueue evicts and requeues its
workload. The trial says it was interrupted, stays Pending (never Failed), and once the node is
back reruns from the start and ends measured once. tests/cluster/test_kueue_pods_ready.py proves
the same rule against the stand-in kubelet; here the pods, the scheduler and Kueue's readiness
count are real.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml

from tests.harness.cluster import NODE_NAME
from tests.harness.controlplane import ControlPlane
from tests.harness.kueue import Kueue, running
from tests.harness.objects import get, items, wait_for
from tests.node.conftest import apply, finished
from tests.node.test_kueue_pools import pools, sweep
from tests.node.test_real_pods import trial_diagnostics

pytestmark = pytest.mark.node

#: Last in the node tier: one Kueue harness runs per machine (tests/harness/kueue.py), and the
#: cluster tier's Kueue tests run in the first minutes of hack/test.sh's other pytest process;
#: here, early, they held the lock for minutes while those waited.
RUNS_LAST = True

#: Kueue's ready timeout: beyond what an admitted trial's pods take to start here under load
#: (seconds), short enough for the test; the base of Kueue's requeuing backoff.
TIMEOUT, REQUEUE_SECONDS = "40s", 5
INTERRUPTED = "interrupted by Kueue, reruns from the start: PodsReadyTimeout: "
EPOCHS = 50


@pytest.fixture(scope="module")
def kueue(installed: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kueue]:
    """Kueue with WaitForPodsReady (no visibility API: positions are the cohort test's)."""
    with running(
        installed,
        tmp_path_factory.mktemp("kueue-pods-ready"),
        wait_for_pods_ready=TIMEOUT,
        requeue_seconds=REQUEUE_SECONDS,
    ) as k:
        yield k


def test_a_trial_whose_pods_cannot_start_is_interrupted_by_kueue_then_rerun(
    kueue: Kueue, installed: ControlPlane, namespace: str
) -> None:
    cp = installed
    queues = pools({"ready": namespace}, cohort="ready")  # a cohort of its own: no borrowing
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(queues))
    trial = "ready-b8-g1"
    cp.kubectl("cordon", NODE_NAME)
    try:
        name = apply(cp, namespace, sweep("ready", [8], [1], epochs=EPOCHS))
        status = wait_for(
            lambda: (
                (s := get(cp, "st", trial, namespace).get("status") or {})
                .get("reason", "")
                .startswith(INTERRUPTED)
                and s
            ),
            240,
            "the trial interrupted by Kueue's WaitForPodsReady timeout",
        )
        assert status["phase"] == "Pending", status
        assert not any(
            p["status"].get("phase") == "Running" for p in items(cp, "pods", namespace)
        ), "a pod ran on a cordoned node"
    finally:
        cp.kubectl("uncordon", NODE_NAME)
    assert finished(cp, name, namespace, timeout=420) == "Succeeded", (
        trial_diagnostics(cp, namespace) + kueue.log_tail()
    )
    result = get(cp, "st", trial, namespace)["status"]
    assert result["phase"] == "Succeeded", result
    assert result["result"]["epochs"] == EPOCHS, result  # the whole run, after the eviction
    assert kueue.proc is not None
    assert kueue.proc.poll() is None, kueue.log_tail()
