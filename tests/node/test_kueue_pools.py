"""GPU pools on real pods: real Kueue (its webhooks called by the node's API server, its
visibility API served through it) admits scalelab's MPIJobs onto the node's fake `nvidia.com/gpu`
devices for two teams whose ClusterQueues share a cohort. Team A's sweep borrows team B's idle
GPU; team B's sweep reclaims it, and A's borrowed trial is preempted, says so, and reruns from the
start; A's experiment still ends with every point measured once. Never more GPUs are unsuspended
than the cohort's quota; a point that could never fit is Skipped; a trial Kueue holds says where
it stands in the queue. One test, because each run of real pods costs minutes on this machine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.harness.cluster import Cluster
from tests.harness.controlplane import ControlPlane, NodeNetwork
from tests.harness.kueue import Kueue, running
from tests.harness.objects import get, items, wait_for
from tests.node.conftest import GpuWatch, apply, finished
from tests.node.test_real_pods import experiment, trial_diagnostics

pytestmark = pytest.mark.node

#: Last in the node tier: one Kueue harness runs per machine (tests/harness/kueue.py), and the
#: cluster tier's Kueue tests run in the first minutes of hack/test.sh's other pytest process;
#: here, early, they held the lock for minutes while those waited.
RUNS_LAST = True

KUEUE = "kueue.x-k8s.io/v1beta2"
#: Each team's own GPUs; together the cohort's, and the most the node may run at once here.
QUOTA = 1
COHORT_GPUS = 2 * QUOTA
#: Long enough that team A's trials are still running when team B's sweep arrives.
A_EPOCHS = 3000
#: A held trial's reason with its place in the queue (Kueue counts the never-admissible ones of
#: the same queue too, until they are Skipped and deleted).
POSITION = re.compile(
    r"waiting for Kueue quota \(position \d+ of \d+ in LocalQueue team, \d+ in its ClusterQueue\): "
)


@pytest.fixture(scope="module")
def kueue(
    node_cluster: Cluster, installed: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Kueue]:
    """Kueue's manager on the host beside the node, its visibility API at the node address."""
    with running(installed, tmp_path_factory.mktemp("kueue"), visibility_ip=NodeNetwork().ip) as k:
        yield k


def pools(teams: dict[str, str], cohort: str = "gpus") -> list[dict[str, Any]]:
    """A flavor for the fake GPUs and, per team (name → namespace), a ClusterQueue with QUOTA
    GPUs in the cohort `cohort` (free to borrow, reclaiming what others borrowed) and a LocalQueue
    `team` in its namespace."""
    docs: list[dict[str, Any]] = [
        {"apiVersion": KUEUE, "kind": "ResourceFlavor", "metadata": {"name": "fake-gpu"}}
    ]
    for team, namespace in teams.items():
        quota = [
            {"name": "cpu", "nominalQuota": "4"},
            {"name": "memory", "nominalQuota": "8Gi"},
            {"name": "nvidia.com/gpu", "nominalQuota": QUOTA},
        ]
        docs.append({
            "apiVersion": KUEUE,
            "kind": "ClusterQueue",
            "metadata": {"name": team},
            "spec": {
                "cohortName": cohort,
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": namespace}
                },
                "preemption": {"reclaimWithinCohort": "Any"},
                "resourceGroups": [{
                    "coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
                    "flavors": [{"name": "fake-gpu", "resources": quota}],
                }],
            },
        })  # fmt: skip
        docs.append({
            "apiVersion": KUEUE,
            "kind": "LocalQueue",
            "metadata": {"name": "team", "namespace": namespace},
            "spec": {"clusterQueue": team},
        })  # fmt: skip
    return docs


def sweep(name: str, batch_sizes: list[int], gpus: list[int], epochs: int) -> dict[str, Any]:
    """A lab 1 sweep through the LocalQueue `team`, one fake GPU per process."""
    return experiment(
        name,
        sweep={"batchSizes": batch_sizes, "gpus": gpus},
        training={"maxEpochs": epochs},
        resources={"gpusPerProcess": 1, "cpu": "100m", "memory": "1Gi"},
        execution={"maxConcurrentTrials": 8, "maxGPUs": 8, "queueName": "team"},
    )


def reasons(cp: ControlPlane, namespace: str) -> dict[str, tuple[str, str]]:
    """(phase, reason) of every ScaleTrial in a namespace."""
    return {
        t["metadata"]["name"]: ((t.get("status") or {}).get("phase", ""),
                                (t.get("status") or {}).get("reason", ""))
        for t in items(cp, "st", namespace)
    }  # fmt: skip


def borrowed(cp: ControlPlane, queue: str) -> int:
    """GPUs the ClusterQueue uses beyond its nominal quota (lent by its cohort)."""
    cq = json.loads(cp.kubectl("get", "clusterqueue", queue, "-o", "json").stdout)
    for flavor in (cq.get("status") or {}).get("flavorsUsage") or []:
        for r in flavor.get("resources") or []:
            if r["name"] == "nvidia.com/gpu":
                return int(r.get("borrowed") or 0)
    return 0


def test_two_teams_share_a_cohort_team_b_reclaims_and_a_reruns_its_preempted_trial(
    kueue: Kueue, installed: ControlPlane, namespace: str
) -> None:
    cp = installed
    team_b = f"{namespace}-b"[:63]
    cp.kubectl("create", "namespace", team_b)
    watch = GpuWatch(cp, [namespace, team_b])
    try:
        queues = pools({"team-a": namespace, "team-b": team_b})
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(queues))
        watch.start()
        # Team A: three 1-GPU points (one more than the cohort holds) and three that could
        # never fit (4 GPUs > the cohort's 2).
        a = apply(cp, namespace, sweep("team-a", [8, 16, 32], [1, 4], epochs=A_EPOCHS))
        a_small = [f"team-a-b{b}-g1" for b in (8, 16, 32)]

        # A runs its own GPU and borrows B's idle one; its third point waits, saying where.
        def borrowing() -> dict[str, tuple[str, str]] | None:
            now = reasons(cp, namespace)
            running = [n for n in a_small if now.get(n, ("", ""))[0] == "Running"]
            waiting = [n for n in a_small if POSITION.match(now.get(n, ("", ""))[1])]
            return now if len(running) == 2 and waiting and borrowed(cp, "team-a") else None

        wait_for(borrowing, 420, "team A borrowing B's GPU, its third trial queued")
        # The 4-GPU points can never fit the cohort's 2: Skipped in Kueue's words. They go to
        # Kueue one at a time (maxGPUs 8 leaves room for one beside the three 1-GPU points).
        never = [f"team-a-b{b}-g4" for b in (8, 16, 32)]

        def skipped() -> dict[str, str] | None:
            now = reasons(cp, namespace)
            done = all(now.get(n, ("", ""))[0] == "Skipped" for n in never)
            return {n: now[n][1] for n in never} if done else None

        for name, reason in wait_for(skipped, 180, "the 4-GPU points Skipped").items():
            assert reason.startswith("Kueue can never admit it: "), (name, reason)
            assert "maximum capacity (2)" in reason, (name, reason)

        # Team B wants its GPU back: Kueue preempts A's borrowing trial, which says so.
        b = apply(cp, team_b, sweep("team-b", [8], [1], epochs=200))

        def preempted() -> str | None:
            return next(
                (n for n, (p, r) in reasons(cp, namespace).items()
                 if p == "Pending" and r.startswith("preempted by Kueue, reruns from the start")),
                None,
            )  # fmt: skip

        victim = wait_for(preempted, 300, "A's borrowed trial preempted for B's reclaim")
        assert finished(cp, b, team_b, timeout=600) == "Succeeded", trial_diagnostics(cp, team_b)
        assert finished(cp, a, namespace, timeout=900) == "Succeeded", trial_diagnostics(
            cp, namespace
        )
    finally:
        watch.stopped.set()
        cp.kubectl("delete", "namespace", team_b, "--wait=false", check=False)
    assert watch.most <= COHORT_GPUS, f"{watch.most} fake GPUs unsuspended at once"
    # Every point measured once: three successes, the preempted one rerun from the start.
    status = get(cp, "sx", a, namespace)["status"]
    assert (status["trials"]["succeeded"], status["trials"]["skipped"]) == (3, 3)
    rows = [r for r in status["results"] if r["phase"] == "Succeeded"]
    assert sorted(r["trial"] for r in rows) == sorted(a_small)
    rerun = get(cp, "st", victim, namespace)["status"]
    assert rerun["result"]["epochs"] == A_EPOCHS, rerun  # the whole run again, not a remainder
    assert kueue.proc is not None
    assert kueue.proc.poll() is None, kueue.log_tail()
