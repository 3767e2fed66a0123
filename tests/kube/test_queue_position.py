"""A trial held by Kueue says where it stands in the queue: positions read from Kueue's
visibility API (kube/queue.py) go into the reason of each trial waiting for quota, and nothing
else changes where the API gives no answer."""

from __future__ import annotations

from typing import Any

import httpx2 as httpx
import pytest

from scalelab.api import TrialPhase
from scalelab.kube.decide import decide
from scalelab.kube.observed import JobPhase, JobState, TrialState, parse
from scalelab.kube.queue import Position, positions, read_positions, with_position
from scalelab.kube.state import Memory
from scalelab.planner import plan
from tests.kube.fake_api import fake_api, status

pytestmark = pytest.mark.unit

WAITING = "couldn't assign flavors to pod set worker: insufficient unused quota for nvidia.com/gpu"


def _pending(job: str, local: int, cluster: int, kind: str = "MPIJob") -> dict[str, Any]:
    owner = {"apiVersion": "kubeflow.org/v2beta1", "kind": kind, "name": job, "uid": "u"}
    return {
        "metadata": {"name": f"mpijob-{job}-1a2b3", "ownerReferences": [owner]},
        "localQueueName": "team",
        "positionInLocalQueue": local,
        "positionInClusterQueue": cluster,
        "priority": 0,
    }


def test_positions_count_from_one_by_the_owning_mpijob_and_skip_other_kinds() -> None:
    summary = {"items": [_pending("a", 0, 2), _pending("b", 1, 3), _pending("c", 2, 4, "Job")]}
    found = positions(summary, "team")
    assert found == {
        "a": Position("team", 1, 3, 3),
        "b": Position("team", 2, 3, 4),
    }
    assert positions({}, "team") == {}
    assert found["b"].describe() == "position 2 of 3 in LocalQueue team, 4 in its ClusterQueue"


def test_only_a_reason_waiting_for_quota_gets_the_position() -> None:
    where = Position("team", 2, 3, 4)
    assert with_position(f"waiting for Kueue quota: {WAITING}", where) == (
        "waiting for Kueue quota (position 2 of 3 in LocalQueue team, 4 in its ClusterQueue): "
        + WAITING
    )
    assert with_position(f"waiting for Kueue quota: {WAITING}", None).endswith(f": {WAITING}")
    preempted = "preempted by Kueue, reruns from the start: Preempted"
    assert with_position(preempted, where) == preempted


def test_decide_writes_the_position_of_each_trial_kueue_holds() -> None:
    body = {
        "apiVersion": "scalelab.dev/v1alpha1",
        "kind": "ScaleExperiment",
        "metadata": {"name": "exp", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {
            "sweep": {"batchSizes": [8, 16]},
            "resources": {"gpusPerProcess": 1},
            "execution": {"queueName": "team"},
        },
        "status": {},
    }
    held, running = (t.name for t in plan(parse(body)))
    trials = [TrialState(t.name, f"uid-{t.name}", TrialPhase.PENDING) for t in plan(parse(body))]
    jobs = [
        JobState(held, JobPhase.SUSPENDED, "KueuePending", WAITING),
        JobState(running, JobPhase.RUNNING),
    ]
    where = {held: Position("team", 1, 1, 1), running: Position("team", 1, 1, 1)}
    decision = decide(parse(body), body, trials, jobs, Memory(), now=0.0, positions=where)
    assert decision.actions.trial_status[held]["reason"] == (
        "waiting for Kueue quota (position 1 of 1 in LocalQueue team, 1 in its ClusterQueue): "
        + WAITING
    )
    assert decision.phases[running] is TrialPhase.RUNNING


class _Api:
    """Answers every request with one status and body, or raises; records the URLs."""

    def __init__(self, code: int, answer: Any = None) -> None:
        self.code, self.answer = code, answer
        self.urls: list[str] = []
        self.api = fake_api(self)

    def __call__(self, request: httpx.Request) -> tuple[int, Any]:
        self.urls.append(str(request.url))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.code, self.answer


def test_read_positions_asks_the_local_queue_and_answers_nothing_where_not_served() -> None:
    api = _Api(200, {"items": [_pending("a", 0, 0)]})
    assert read_positions(api.api, "ns", "team") == {"a": Position("team", 1, 1, 1)}
    assert api.urls == [
        "https://api.example/apis/visibility.kueue.x-k8s.io/v1beta2/namespaces/ns/localqueues"
        "/team/pendingworkloads?limit=1000"
    ]
    for code in (403, 404, 503):
        assert read_positions(_Api(*status(code, "Failure")).api, "ns", "team") == {}
    assert read_positions(_Api(503, b"<html>no JSON</html>").api, "ns", "team") == {}
    assert read_positions(_Api(200, b"not JSON").api, "ns", "team") == {}
