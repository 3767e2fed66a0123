"""How often the operator asks the cluster for a missing prerequisite: a missing API is asked
again after 5, 10, 20, 40, then every 60 seconds (not every pass); a served one is trusted for a
minute; a 404 on create forgets the answer. The real API server's side is in
tests/cluster/test_prerequisites.py."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from kopf._cogs.structs.references import Insights, Resource

from scalelab.api import ScaleExperiment
from scalelab.kube.apply import Kube
from scalelab.kube.handlers import WATCHED
from scalelab.kube.prerequisites import KUEUE_API, Prerequisites, unpullable_image
from scalelab.kube.resolve import unresolved
from scalelab.kube.settings import Config

MAX_RETRY_SECONDS = SERVED_TTL_SECONDS = 60.0

pytestmark = pytest.mark.unit


def test_a_missing_api_is_asked_again_after_a_doubling_delay_and_a_served_one_is_trusted() -> None:
    now = [0.0]
    checks = Prerequisites(60.0, clock=lambda: now[0])
    asked: list[float] = []
    served = [False]

    def question() -> bool:
        asked.append(now[0])
        return served[0]

    for second in range(0, 400):
        now[0] = float(second)
        checks._ask("mpijob-api", question)
    assert asked[:6] == [0, 5, 15, 35, 75, 135]
    assert all(b - a == MAX_RETRY_SECONDS for a, b in itertools.pairwise(asked[5:]))
    assert len(asked) == 10  # 400 passes, 10 discovery requests
    served[0] = True
    now[0] = 1000.0
    assert checks._ask("mpijob-api", question) is True
    now[0] = 1000.0 + SERVED_TTL_SECONDS - 1
    assert checks._ask("mpijob-api", question) is True
    assert len(asked) == 11
    checks.forget("mpijob-api")
    assert checks._ask("mpijob-api", question) is True
    assert len(asked) == 12


def _kubelet_event(pod: str, reason: str, message: str, seen: str) -> dict[str, Any]:
    """A Warning Event as the kubelet writes it about one pod (core/v1, deduplicated)."""
    return {
        "type": "Warning", "reason": reason, "message": message, "lastTimestamp": seen,
        "involvedObject": {"kind": "Pod", "name": pod, "namespace": "ns"},
    }  # fmt: skip


def test_a_failed_image_pull_of_a_waiting_trial_is_named_with_its_image() -> None:
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC).timestamp()
    recent, old = "2026-12-03T11:59:30Z", "2026-12-03T11:40:00Z"
    image = "registry.example/team/trainer:v9"
    events = [
        # A waiting trial's worker: the kubelet's pull failure, then its back-off.
        _kubelet_event("lab-b8-g1-worker-0", "Failed",
                       f'Failed to pull image "{image}": rpc error: not found', recent),
        _kubelet_event("lab-b8-g1-worker-0", "BackOff", f'Back-off pulling image "{image}"',
                       recent),
        # A trial whose name is a prefix of another's, and one not waiting: not theirs.
        _kubelet_event("lab-b8-g10-worker-0", "Failed", 'Failed to pull image "x"', recent),
        _kubelet_event("lab-b16-g1-launcher-7xk2p", "FailedScheduling", "0/1 nodes", recent),
        _kubelet_event("lab-b32-g1-launcher-q9d4s", "Failed",
                       'Failed to pull image "old:1": not found', old),  # history
    ]  # fmt: skip
    waiting = {"lab-b8-g1", "lab-b16-g1", "lab-b32-g1"}
    found = unpullable_image(events, waiting, now)
    assert found is not None
    assert (found.key, found.reason, found.blocks, found.trials) == (
        "trainer-image",
        "TrainerImageUnpullable",
        True,
        ("lab-b8-g1",),
    )
    assert f'trial lab-b8-g1 cannot pull image "{image}" (Failed: Failed to pull' in found.message
    assert "correct spec.resources.image" in found.message
    assert unpullable_image(events[2:], waiting, now) is None
    tag = _kubelet_event(
        "lab-b32-g1-worker-1",
        "InspectFailed",
        'Failed to apply default image tag "Bad:Ref": invalid reference',
        recent,
    )
    assert unpullable_image([tag], waiting, now).trials == ("lab-b32-g1",)  # type: ignore[union-attr]
    never = _kubelet_event(
        "lab-b16-g1-launcher-7xk2p", "ErrImageNeverPull",
        'Container image "local/trainer:dev" is not present with pull policy of Never', recent,
    )  # fmt: skip
    both = unpullable_image([*events, never], waiting, now)
    assert both is not None
    assert both.trials == ("lab-b16-g1", "lab-b8-g1")
    assert '"local/trainer:dev" (ErrImageNeverPull' in both.message
    assert "and those of 1 more trial(s)" in both.message


def test_the_groups_kopf_has_not_resolved_are_the_ones_rescanned() -> None:
    insights = Insights()
    assert unresolved(insights, WATCHED) == ["kubeflow.org", "kueue.x-k8s.io", "scalelab.dev"]
    insights.watched_resources.update(
        {Resource("scalelab.dev", "v1alpha1", p) for p in ("scaleexperiments", "scaletrials")}
    )
    insights.indexed_resources.add(Resource("kubeflow.org", "v2beta1", "mpijobs"))
    assert unresolved(insights, WATCHED) == ["kueue.x-k8s.io"]
    insights.indexed_resources.add(Resource("kueue.x-k8s.io", "v1beta2", "workloads"))
    assert unresolved(insights, WATCHED) == []


def test_the_kueue_api_is_needed_for_the_operators_default_queue_too_and_says_so() -> None:
    checks = Prerequisites(60.0, clock=lambda: 0.0)
    for key, served in (("mpijob-api", True), ("kueue-api", False), ("trainer-account/ns", True)):
        checks._ask(key, lambda served=served: served)  # cached: no API call below
    kube = cast(Kube, None)
    unnamed = ScaleExperiment.model_validate({"metadata": {"name": "e"}})
    named = ScaleExperiment.model_validate(
        {"metadata": {"name": "e"}, "spec": {"execution": {"queueName": "mine"}}}
    )
    assert checks.missing(kube, unnamed, "ns", Config()) == []
    assert checks.missing(kube, named, "ns", Config()) == [KUEUE_API]
    assert checks.missing(kube, named, "ns", Config(default_queue_name="team")) == [KUEUE_API]
    [missing] = checks.missing(kube, unnamed, "ns", Config(default_queue_name="team"))
    assert (missing.key, missing.reason, missing.blocks) == ("kueue-api", "KueueAPIMissing", False)
    assert "unset SCALELAB_DEFAULT_QUEUE_NAME" in missing.message
