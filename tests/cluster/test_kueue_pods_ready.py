"""Kueue's WaitForPodsReady on scalelab's MPIJobs (real Kueue v0.19.2, tests/harness/kueue.py):
a trial whose pods are not all ready within the timeout is evicted and requeued by Kueue. The
trial says it was interrupted and reruns from the start; it is never Failed, and it ends measured
once. Kueue takes an MPIJob's pods as ready when the job's Running condition is True; the stand-in
(tests/cluster/standin.py `slow_start`) holds that back on the first attempt, as pods that stay
Pending or crash-loop would. The MPIJob carries Kueue's maximum execution time, the trial's
activeDeadlineSeconds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.cluster.conftest import Operator, items, phase_of, wait_for
from tests.cluster.standin import StandIn
from tests.cluster.test_kueue import _experiment, _queues, _trial_status
from tests.harness.controlplane import ControlPlane
from tests.harness.kueue import Kueue, running

pytestmark = pytest.mark.cluster

#: Kueue's WaitForPodsReady timeout, and the base of its requeuing backoff: long enough for the
#: interrupted trial's reason to be written and read before Kueue readmits it.
TIMEOUT, REQUEUE_SECONDS = "10s", 15


@pytest.fixture(scope="module")
def kueue(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kueue]:
    with running(
        cluster,
        tmp_path_factory.mktemp("kueue-pods-ready"),
        wait_for_pods_ready=TIMEOUT,
        requeue_seconds=REQUEUE_SECONDS,
    ) as k:
        yield k


def _slow_point() -> dict[str, Any]:
    spec = _experiment()
    spec["metadata"]["name"] = "slow"
    spec["spec"]["sweep"] = {"batchSizes": [32], "gpus": [1]}
    spec["spec"]["training"]["maxEpochs"] = 2  # paced (tests/cluster/paced.py): seconds
    spec["spec"]["execution"]["activeDeadlineSeconds"] = 600
    spec["spec"]["resources"]["gpusPerProcess"] = 0  # Kueue admits it on CPU quota alike
    return spec


def test_a_trial_whose_pods_miss_kueues_ready_timeout_is_interrupted_then_rerun(
    cluster: ControlPlane,
    operator: Operator,
    standin: StandIn,
    kueue: Kueue,
    namespace: str,
) -> None:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(_queues(namespace, 1)))
    trial = "slow-b32-g1"
    standin.slow_start[trial] = 120.0  # far beyond the timeout: only an eviction ends the wait
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(_slow_point()))
    [job] = wait_for(lambda: items(cluster, "mpijobs", namespace), 60, "the trial's MPIJob")
    assert job["metadata"]["labels"]["kueue.x-k8s.io/max-exec-time-seconds"] == "600"
    status = wait_for(
        lambda: (
            (s := _trial_status(cluster, trial, namespace))
            .get("reason", "")
            .startswith("interrupted by Kueue, reruns from the start: PodsReadyTimeout: ")
            and s
        ),
        120,
        "the trial interrupted by WaitForPodsReady's timeout",
    )
    assert status["phase"] == "Pending", status
    finished = wait_for(
        lambda: (p := phase_of(cluster, "slow", namespace)) in ("Succeeded", "Failed") and p,
        240,
        "the requeued trial rerun to the end",
    )
    assert finished == "Succeeded", (
        _trial_status(cluster, trial, namespace),
        [(r.returncode, r.stderr[-2000:]) for r in standin.runs_of(trial)],
        kueue.log_tail(),
    )
    # The first attempt never started a launcher (its pods never became ready); the rerun did.
    assert [r.returncode for r in standin.runs_of(trial)] == [0]
    assert _trial_status(cluster, trial, namespace)["phase"] == "Succeeded"
