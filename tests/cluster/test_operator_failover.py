"""Two operators with leader election on a real API server, as the Deployment's two replicas run:
one acts, the other stands by; the active one killed mid-experiment, the standby takes over
within the lease duration and the experiment ends with every trial measured and no MPIJob made
twice; the active one stopped gracefully, the standby takes over at once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.conftest import Operator, get, items, phase_of, wait_for
from tests.cluster.processes import OPERATOR_NS
from tests.cluster.standin import StandIn
from tests.cluster.test_experiments import _experiment as lab1_experiment
from tests.harness.controlplane import ControlPlane

pytestmark = pytest.mark.cluster

#: The shipped timings (settings.py): a Lease unrenewed for 10 s is taken, tries every 2 s.
LEASE_SECONDS = 10
#: The longest takeover after a SIGKILL: the lease duration, a retry period, and slack.
TAKEOVER_SECONDS = 15


def _leader(op: Operator) -> float | None:
    """scalelab_operator_leader of one operator; None when its /metrics does not answer."""
    try:
        text = op.metrics()
    except OSError:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "scalelab_operator_leader":
                return float(sample.value)
    return None


def _holder(cp: ControlPlane, lease: str) -> str:
    """The Lease's holderIdentity ('' when released or absent)."""
    got = cp.kubectl("get", "lease", lease, "-n", OPERATOR_NS, "-o", "json", check=False)
    if got.returncode != 0:
        return ""
    holder: str = json.loads(got.stdout)["spec"].get("holderIdentity") or ""
    return holder


class Pair:
    """Two `scalelab operator --leader-elect` processes contending for one Lease."""

    def __init__(self, cp: ControlPlane, workdir: Path, lease: str) -> None:
        self.cp, self.lease = cp, lease
        self.ops = {
            name: Operator(
                cp,
                _mkdir(workdir / name),
                env={
                    "SCALELAB_LEADER_ELECT": "true",
                    "SCALELAB_LEASE_NAME": lease,
                    "SCALELAB_POD_NAMESPACE": OPERATOR_NS,
                    "SCALELAB_POD_NAME": name,
                },
            )
            for name in ("op-a", "op-b")
        }

    def start(self) -> Pair:
        for op in self.ops.values():
            op.start()
        return self

    def stop(self) -> None:
        for op in self.ops.values():
            op.stop()

    def active(self) -> str | None:
        """The one operator whose gauge says it acts and that the Lease names; None while
        that is not so (no holder yet, or a takeover under way)."""
        leading = [name for name, op in self.ops.items() if _leader(op) == 1]
        holder = _holder(self.cp, self.lease)
        if len(leading) == 1 and holder.startswith(f"{leading[0]}_"):
            return leading[0]
        return None

    def other(self, name: str) -> str:
        return next(n for n in self.ops if n != name)

    def wait_active(self, timeout: float = 60) -> str:
        found: str = wait_for(self.active, timeout, "one active operator", interval=0.2)
        return found

    def takeover(self, expected: str, timeout: float, since: float) -> float:
        """Seconds from `since` (a monotonic time) until `expected` is the one active operator
        (polled every 0.1 s)."""
        start = since
        while time.monotonic() - start < timeout:
            if self.active() == expected:
                return time.monotonic() - start
            time.sleep(0.1)
        tails = {n: op.log_tail(20) for n, op in self.ops.items()}
        raise AssertionError(f"{expected} not active after {timeout} s; logs: {tails}")

    def log_tails(self) -> str:
        return "\n".join(f"--- {n}\n{op.log_tail()}" for n, op in self.ops.items())


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def pair(
    cluster: ControlPlane, operator: Operator, namespace: str, tmp_path: Path
) -> Iterator[Pair]:
    """The pair, with the suite's own operator (no leader election, every namespace) stopped
    meanwhile: it would act beside whichever of the two holds the Lease."""
    operator.stop()
    pair = Pair(cluster, tmp_path, lease=f"failover-{namespace}")
    try:
        yield pair.start()
    finally:
        pair.stop()
        operator.start()


def _experiment(name: str) -> str:
    """Three lab1 trials one at a time: the experiment outlives the kill and the takeover."""
    return lab1_experiment(
        name,
        sweep={"batchSizes": [64, 32, 16], "gpus": [1]},
        training={"learningRate": 0.01, "maxEpochs": 2000, "convergence": {"relativeTolerance": 0}},
        execution={"maxConcurrentTrials": 1, "maxGPUs": 1, "backoffLimit": 0},
    )


def test_the_standby_takes_over_a_killed_operator_within_15_s_and_nothing_is_lost_or_doubled(
    cluster: ControlPlane, pair: Pair, standin: StandIn, namespace: str
) -> None:
    active = pair.wait_active()
    standby = pair.other(active)
    assert _leader(pair.ops[standby]) == 0  # the standby serves /metrics, and says it waits
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=_experiment("failover"))
    wait_for(lambda: items(cluster, "mpijobs", namespace), 60, "the first MPIJob")

    killed = time.monotonic()
    pair.ops[active].kill()  # SIGKILL: no release, the standby waits for the Lease to expire
    seconds = pair.takeover(standby, TAKEOVER_SECONDS, since=killed)
    print(f"takeover after SIGKILL: {seconds:.1f} s")
    assert seconds < TAKEOVER_SECONDS

    phase = wait_for(
        lambda: (p := phase_of(cluster, "failover", namespace)) in ("Succeeded", "Failed") and p,
        240,
        "the experiment to finish under the new leader",
    )
    assert phase == "Succeeded", pair.log_tails()
    status = get(cluster, "scaleexperiment", "failover", namespace)["status"]
    assert status["trials"]["succeeded"] == 3
    assert len(status["results"]) + status.get("omittedResults", 0) == 3
    trials = items(cluster, "scaletrials", namespace, "-l", "scalelab.dev/experiment=failover")
    assert [t["status"]["result"]["finalLoss"] is not None for t in trials] == [True] * 3
    jobs = items(cluster, "mpijobs", namespace)
    assert sorted(j["metadata"]["name"] for j in jobs) == [
        "failover-b16-g1",
        "failover-b32-g1",
        "failover-b64-g1",
    ]
    # Each MPIJob created under one UID and run once, across both operators.
    assert standin.not_made_and_run_once(namespace, jobs) == []
    lease = get(cluster, "lease", pair.lease, OPERATOR_NS)["spec"]
    assert lease["holderIdentity"].startswith(f"{standby}_")
    assert lease["leaseTransitions"] >= 1


def test_a_gracefully_stopped_operator_hands_the_lease_over_at_once(pair: Pair) -> None:
    active = pair.wait_active()
    standby = pair.other(active)
    start = time.monotonic()
    pair.ops[active].stop()  # SIGTERM: kopf stops, then the Lease is released
    stopped = time.monotonic() - start
    seconds = pair.takeover(standby, TAKEOVER_SECONDS, since=start)
    print(f"takeover after SIGTERM: {seconds:.1f} s (the process stopped in {stopped:.1f} s)")
    # Released, not expired: well within the lease duration.
    assert seconds < LEASE_SECONDS / 2, pair.log_tails()
    proc = pair.ops[active].proc
    assert proc is not None
    assert proc.returncode == 0, pair.ops[active].log_tail()


def test_an_operator_that_finds_another_holder_in_the_lease_exits_and_the_standby_takes_over(
    cluster: ControlPlane, pair: Pair
) -> None:
    """Leadership lost (here: the Lease written by someone else) ends the process at once with
    status 1, for the kubelet to restart it as a standby; nobody acts until the Lease expires."""
    active = pair.wait_active()
    standby = pair.other(active)
    patch = json.dumps({"spec": {"holderIdentity": "intruder"}})
    start = time.monotonic()
    cluster.kubectl("patch", "lease", pair.lease, "-n", OPERATOR_NS, "--type=merge", "-p", patch)
    proc = pair.ops[active].proc
    assert proc is not None
    assert proc.wait(timeout=10) == 1, pair.ops[active].log_tail()
    print(f"exited {time.monotonic() - start:.1f} s after losing the lease")
    assert "lost the lease: intruder holds it" in pair.ops[active].log_tail()
    seconds = pair.takeover(standby, TAKEOVER_SECONDS, since=start)
    assert seconds >= LEASE_SECONDS - 1  # the intruder's Lease had to expire first
