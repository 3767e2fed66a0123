"""Real Kueue (v0.19.2, built by hack/build-kueue.sh, webhooks served; tests/harness/kueue.py)
admits scalelab's MPIJobs within a ClusterQueue's GPU quota, holds the rest suspended with its
reason on the trial, resumes them when quota frees, and a grid point that could never fit the
queue is Skipped with Kueue's words instead of waiting forever. A running trial that Kueue
preempts for a sweep of higher priority says so, and reruns when readmitted. The 32-GPU pool of
docs/gpu-pools.md, applied as the page writes it, limits what a team may borrow."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster import paced
from tests.cluster.conftest import Operator, get, items, phase_of, wait_for
from tests.cluster.standin import StandIn
from tests.harness.controlplane import ControlPlane
from tests.harness.kueue import Kueue, running

pytestmark = pytest.mark.cluster

KUEUE = "kueue.x-k8s.io/v1beta2"
FAKE_GPUS = "SCALELAB_FAKE_GPUS"


@pytest.fixture(scope="module", autouse=True)
def fake_gpus() -> Iterator[None]:
    """The stand-in kubelet has no device plugin: its trainers are told, as the node tier's fake
    plugin tells them (SCALELAB_FAKE_GPUS), that their GPUs are CPU-backed test devices, else a
    trial asking for GPUs refuses to measure the CPU."""
    before = os.environ.get(FAKE_GPUS)
    os.environ[FAKE_GPUS] = ",".join(f"fake-gpu-{i}" for i in range(8))
    yield
    if before is None:
        os.environ.pop(FAKE_GPUS, None)
    else:
        os.environ[FAKE_GPUS] = before


@pytest.fixture(scope="module")
def kueue(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kueue]:
    with running(cluster, tmp_path_factory.mktemp("kueue")) as k:
        yield k


def _queues(namespace: str, gpus: int, preempt: bool = False) -> list[dict[str, Any]]:
    """A flavor, a ClusterQueue with `gpus` nvidia.com/gpu for this namespace, a LocalQueue;
    `preempt`: within the ClusterQueue, a workload of higher priority evicts lower ones."""
    quota = [
        {"name": "cpu", "nominalQuota": "64"},
        {"name": "memory", "nominalQuota": "256Gi"},
        {"name": "nvidia.com/gpu", "nominalQuota": gpus},
    ]
    return [
        {"apiVersion": KUEUE, "kind": "ResourceFlavor", "metadata": {"name": "gpu"}},
        {
            "apiVersion": KUEUE,
            "kind": "ClusterQueue",
            "metadata": {"name": f"{namespace}-gpus"},
            "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                **({"preemption": {"withinClusterQueue": "LowerPriority"}} if preempt else {}),
                "resourceGroups": [
                    {
                        "coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
                        "flavors": [{"name": "gpu", "resources": quota}],
                    }
                ],
            },
        },
        {
            "apiVersion": KUEUE,
            "kind": "LocalQueue",
            "metadata": {"name": "team", "namespace": namespace},
            "spec": {"clusterQueue": f"{namespace}-gpus"},
        },
    ]


def _experiment() -> dict[str, Any]:
    """Two 1-GPU points and two 2-GPU points of a paced sweep, all submitted at once."""
    return {
        "apiVersion": "scalelab.dev/v1alpha1",
        "kind": "ScaleExperiment",
        "metadata": {"name": "queued"},
        "spec": {
            "workload": paced.spec(),
            "sweep": {"batchSizes": [32, 64], "gpus": [1, 2]},
            "training": {
                "learningRate": 0.01,
                # About 30 s a trial, asleep (tests/cluster/paced.py): long enough for the "one
                # admitted, one held" state to be seen with the operator's reason and gauges
                # caught up; at 30 linear epochs the admitted trial could finish, and free the
                # quota, between two polls, at 20 000 (10 s of CPU) CI under heavy load once saw
                # the second trial admitted before the held state was all written, and 60 000
                # linear epochs cost 30 s of CPU a trial.
                "maxEpochs": 24,
                "convergence": {"relativeTolerance": 0},
            },
            "resources": {"gpusPerProcess": 1, "cpu": "1", "memory": "1Gi"},
            "execution": {"maxConcurrentTrials": 4, "maxGPUs": 8, "queueName": "team"},
        },
    }


def _suspended(cluster: ControlPlane, namespace: str) -> dict[str, bool]:
    return {
        j["metadata"]["name"]: bool(j["spec"]["runPolicy"].get("suspend"))
        for j in items(cluster, "mpijobs", namespace)
    }


def _gpu_gauges(operator: Operator, namespace: str) -> dict[str, float]:
    """scalelab_operator_gpus of the experiment by state (queue label = its LocalQueue)."""
    families = text_string_to_metric_families(operator.metrics())
    return {
        s.labels["state"]: s.value
        for f in families
        if f.name == "scalelab_operator_gpus"
        for s in f.samples
        if s.labels["namespace"] == namespace and s.labels["queue"] == "team"
    }


def _team_roles(cluster: ControlPlane, namespace: str) -> None:
    """RoleBindings of the built-in `edit` and `view` ClusterRoles in the team's namespace."""
    for user, role in (("team-member", "edit"), ("team-viewer", "view")):
        cluster.kubectl("create", "rolebinding", user, f"--clusterrole={role}", f"--user={user}",
                        "-n", namespace)  # fmt: skip


def _trial_status(cluster: ControlPlane, name: str, namespace: str) -> dict[str, Any]:
    status: dict[str, Any] = get(cluster, "scaletrial", name, namespace).get("status") or {}
    return status


def test_kueue_admits_within_quota_holds_the_rest_and_skips_what_never_fits(
    cluster: ControlPlane,
    operator: Operator,
    standin: StandIn,
    kueue: Kueue,
    namespace: str,
) -> None:
    operator_account = "system:serviceaccount:scalelab-system:scalelab-operator"
    for verb, answer in (("watch", "yes"), ("patch", "no")):  # reads why; Kueue's objects
        can = cluster.kubectl("auth", "can-i", verb, "workloads.kueue.x-k8s.io", "-n", namespace,
                              "--as", operator_account, check=False)  # fmt: skip
        assert can.stdout.strip() == answer, (verb, can.stderr)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(_queues(namespace, gpus=1)))
    # A team member with Kubernetes' built-in `edit` role (scalelab's aggregated rules) submits
    # the sweep; `view` reads it and its trials but may not start one.
    _team_roles(cluster, namespace)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", "--as", "team-member",
                    input=yaml.safe_dump(_experiment()))  # fmt: skip
    for user, verb, kind, answer in (
        ("team-member", "delete", "scaleexperiments", "yes"),
        ("team-member", "patch", "scaletrials", "no"),  # the operator's objects
        ("team-viewer", "list", "scaletrials", "yes"),
        ("team-viewer", "create", "scaleexperiments", "no"),
    ):
        can = cluster.kubectl("auth", "can-i", verb, f"{kind}.scalelab.dev", "-n", namespace,
                              "--as", user, check=False)  # fmt: skip
        assert can.stdout.strip() == answer, (user, verb, kind, can.stderr)
    small = ["queued-b32-g1", "queued-b64-g1"]
    big = ["queued-b32-g2", "queued-b64-g2"]

    # Kueue's webhook defaulted and its scheduler admitted exactly one 1-GPU job (quota 1); the
    # other 1-GPU trial waits, saying on its own status that Kueue holds it and why.
    # The operator's GPU gauges say the same by queue: the held GPU is "suspended".
    seen: dict[str, Any] = {}

    def one_admitted_one_waiting() -> tuple[str, dict[str, float]] | None:
        jobs = _suspended(cluster, namespace)
        seen["suspended"] = jobs
        running = [n for n in small if jobs.get(n) is False]
        waiting = [n for n in small if jobs.get(n) is True]
        if len(running) != 1 or len(waiting) != 1:
            return None
        reason = str(_trial_status(cluster, waiting[0], namespace).get("reason", ""))
        gauges = _gpu_gauges(operator, namespace)
        seen.update(reason=reason, gauges=gauges)
        # admitted = requested − suspended: the quota's one GPU (once the admitted job's
        # controller has turned its Suspended condition into Running)
        admitted = gauges.get("requested", 0) - gauges.get("suspended", 0)
        held = reason.startswith("waiting for Kueue quota") and gauges.get("suspended", 0) >= 1
        return (reason, gauges) if held and admitted == 1 else None

    reason, gauges = wait_for(
        one_admitted_one_waiting, 120, "one admitted, one held by Kueue", seen=seen
    )
    assert "insufficient unused quota for nvidia.com/gpu" in reason, kueue.log_tail()
    assert gauges["running"] <= 1  # never more than the queue's quota

    # Points asking for more GPUs than the queue has at all are Skipped with Kueue's words,
    # and their suspended MPIJobs go (they must not run unobserved if the quota grows later).
    for name in big:
        status = wait_for(
            lambda name=name: (
                (s := _trial_status(cluster, name, namespace)).get("phase") == "Skipped" and s
            ),
            120,
            f"{name} Skipped",
        )
        assert "Kueue can never admit it" in status["reason"]
        assert "maximum capacity (1)" in status["reason"]
    wait_for(
        lambda: not set(big) & set(_suspended(cluster, namespace)),
        60,
        "the never-admissible MPIJobs deleted",
    )

    # Quota frees when the first trial finishes; Kueue resumes the second; both run, in turn.
    finished = wait_for(
        lambda: (p := phase_of(cluster, "queued", namespace)) in ("Succeeded", "Failed") and p,
        600,  # two 30 s trials in turn, given minutes on a loaded CI machine
        "the experiment to finish",
    )
    assert finished == "Succeeded", operator.log_tail()
    status = get(cluster, "scaleexperiment", "queued", namespace)["status"]
    assert (status["trials"]["succeeded"], status["trials"]["skipped"]) == (2, 2)
    runs = [r for r in standin.runs if r.namespace == namespace]
    assert sorted(r.job for r in runs) == small  # each admitted once, none of the big ones
    assert all(r.returncode == 0 for r in runs)


def _one_point(name: str, priority: str, epochs: int) -> dict[str, Any]:
    """One 1-GPU paced trial at a PriorityClass (Kueue takes the pods' priority)."""
    spec = _experiment()
    spec["metadata"]["name"] = name
    spec["spec"]["sweep"] = {"batchSizes": [32], "gpus": [1]}
    spec["spec"]["training"]["maxEpochs"] = epochs
    spec["spec"]["resources"]["priorityClassName"] = priority
    return spec


def test_a_trial_kueue_preempts_for_higher_priority_says_so_and_reruns_when_readmitted(
    cluster: ControlPlane,
    operator: Operator,
    standin: StandIn,
    kueue: Kueue,
    namespace: str,
) -> None:
    classes = [
        {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
         "metadata": {"name": f"{namespace}-{name}"}, "value": value}
        for name, value in (("low", 100), ("high", 1000))
    ]  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(classes))
    try:
        cluster.kubectl(
            "apply", "-f", "-", input=yaml.safe_dump_all(_queues(namespace, 1, preempt=True))
        )
        # A long, low-priority trial holds the queue's only GPU ...
        low = _one_point("low", f"{namespace}-low", epochs=1000)  # ~20 min, asleep
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(low))
        wait_for(
            lambda: (
                (
                    (_trial_status(cluster, "low-b32-g1", namespace).get("progress") or {}).get(
                        "epoch"
                    )
                    or 0
                )
                > 0
            ),
            120,
            "the low-priority trial training",
        )
        # ... until a high-priority sweep arrives: Kueue evicts the low trial (its launcher is
        # stopped, its MPIJob suspended), the trial says why, and the high one runs.
        high = _one_point("high", f"{namespace}-high", epochs=2)
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(high))
        status = wait_for(
            lambda: (
                (s := _trial_status(cluster, "low-b32-g1", namespace)).get("phase") == "Pending"
                and s
            ),
            120,
            "the low-priority trial preempted",
        )
        assert status["reason"].startswith("preempted by Kueue, reruns from the start: "), status
        assert "Preempted to accommodate a workload" in status["reason"], kueue.log_tail()
        finished = wait_for(
            lambda: (p := phase_of(cluster, "high", namespace)) in ("Succeeded", "Failed") and p,
            240,
            "the high-priority sweep to finish",
        )
        assert finished == "Succeeded", operator.log_tail()
        # Quota frees: Kueue readmits the low trial, which starts over in a new launcher.
        wait_for(
            lambda: (
                len(standin.runs_of("low-b32-g1")) == 2
                and _trial_status(cluster, "low-b32-g1", namespace).get("phase") == "Running"
            ),
            120,
            "the low-priority trial readmitted and running again",
        )
        first, _ = standin.runs_of("low-b32-g1")
        assert first.returncode != 0  # stopped by the preemption, not finished
        assert [r.returncode for r in standin.runs_of("high-b32-g1")] == [0]
        assert phase_of(cluster, "low", namespace) == "Running"
    finally:
        cluster.kubectl("delete", "scaleexperiment", "--all", "-n", namespace, "--wait=false",
                        check=False)  # fmt: skip
        cluster.kubectl("delete", "priorityclass", *(c["metadata"]["name"] for c in classes),
                        check=False)  # fmt: skip


def _pool_recipe(interns_namespace: str) -> list[dict[str, Any]]:
    """docs/gpu-pools.md's 32-GPU, three-team pool as written there, with the interns' queue
    selecting this test's namespace."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "gpu-pools.md").read_text()
    start = doc.index("**A real pool: 32 GPUs for three teams.**")
    block = doc[doc.index("```yaml\n", start) + len("```yaml\n") : doc.index("```\n", start + 1)]
    block = block.replace(
        "kubernetes.io/metadata.name: interns}",
        f"kubernetes.io/metadata.name: {interns_namespace}}}",
    )
    block = block.replace("namespace: interns}", f"namespace: {interns_namespace}}}")
    return [d for d in yaml.safe_load_all(block) if d]


def _pool_state(cluster: ControlPlane, namespace: str) -> dict[str, Any]:
    """What a failed wait shows: the trials' phases and reasons, the Workloads' conditions."""
    return {
        "trials": {
            t["metadata"]["name"]: ((t.get("status") or {}).get("phase"),
                                    (t.get("status") or {}).get("reason"))
            for t in items(cluster, "scaletrials", namespace)
        },
        "workloads": {
            w["metadata"]["name"]: [(c["type"], c["status"], c.get("message", "")[:200])
                                    for c in (w.get("status") or {}).get("conditions") or []]
            for w in items(cluster, "workloads", namespace)
        },
        "experiment": (get(cluster, "scaleexperiment", "interns", namespace).get("status") or {})
        .get("conditions"),
    }  # fmt: skip


def test_the_documented_32_gpu_pool_lets_interns_borrow_4_and_skips_what_never_fits(
    cluster: ControlPlane,
    operator: Operator,
    standin: StandIn,
    kueue: Kueue,
    namespace: str,
) -> None:
    """The interns' queue holds 8 GPUs and may borrow 4: a 12-GPU point is admitted by borrowing
    4 of the cohort's idle GPUs, a 16-GPU point can never be and is Skipped."""
    recipe = _pool_recipe(namespace)
    assert sum(
        int(r["nominalQuota"])
        for d in recipe if d["kind"] == "ClusterQueue"
        for r in d["spec"]["resourceGroups"][0]["flavors"][0]["resources"]
        if r["name"] == "nvidia.com/gpu"
    ) == 32  # fmt: skip
    standin.hang.add("interns-b48-g12")  # admission is the question here, not the training
    others = ("research", "product")  # the teams lending to the interns: namespaces of their own
    for team in others:
        cluster.kubectl("create", "namespace", team)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(recipe))
    try:
        spec = _experiment()
        spec["metadata"]["name"] = "interns"
        spec["spec"]["sweep"] = {"batchSizes": [48], "gpus": [12, 16]}
        spec["spec"]["execution"]["maxGPUs"] = 32
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(spec))
        try:
            skipped = wait_for(
                lambda: (
                    (s := _trial_status(cluster, "interns-b48-g16", namespace)).get("phase")
                    == "Skipped"
                    and s
                ),
                120,
                "the 16-GPU point Skipped",
            )
        except AssertionError as timeout:
            raise AssertionError(f"{timeout}\n{_pool_state(cluster, namespace)}") from None
        assert skipped["reason"].startswith("Kueue can never admit it: "), skipped
        assert "maximum capacity (12)" in skipped["reason"], skipped

        def borrowed() -> int | None:
            cq = get(cluster, "clusterqueue", "interns", "default")  # cluster-scoped
            for flavor in (cq.get("status") or {}).get("flavorsUsage") or []:
                for r in flavor.get("resources") or []:
                    if r["name"] == "nvidia.com/gpu" and int(r.get("borrowed") or 0):
                        return int(r["borrowed"])
            return None

        assert wait_for(borrowed, 120, "the 12-GPU point admitted by borrowing") == 4
        assert _suspended(cluster, namespace) == {"interns-b48-g12": False}
    finally:
        cluster.kubectl("delete", "-n", namespace, "scaleexperiment", "interns", "--wait=false")
        standin.hang.discard("interns-b48-g12")
        for name in ("research", "product", "interns"):
            cluster.kubectl("delete", "clusterqueue", name, "--ignore-not-found", "--wait=false")
        cluster.kubectl("delete", "namespace", *others, "--wait=false")
