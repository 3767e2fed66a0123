"""What the operator keeps in memory per object stays small and does not grow with history: the
index entries keep only what reconciliation reads, the metrics keep counts and plain tuples of
finished experiments, and every API request (kopf's too) is counted by verb and resource."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import kopf
import pytest
from kopf._cogs.clients import api as kopf_api  # what kube/main.py wraps
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from scalelab.api import ResultRow, TrialPhase
from scalelab.kube import handlers, main, operations
from scalelab.kube.metrics import OperatorMetrics, Snapshot, request_labels
from scalelab.kube.mpijob import LABEL_EXPERIMENT
from scalelab.kube.observed import trial_entry
from scalelab.kube.state import Usage
from tests.kube.fake_api import fake_api

pytestmark = pytest.mark.unit

OWNER = "0b6e3c1a-5d6f-4e0a-9c55-0f3e0e7a1b2c"


def trial(name: str, result: dict[str, Any]) -> dict[str, Any]:
    owner = {"controller": True, "uid": "".join(OWNER)}  # a fresh string, as each body has
    return {
        "metadata": {
            "name": name,
            "namespace": "team",
            "uid": f"uid-{name}",
            "labels": {LABEL_EXPERIMENT: "sweep"},
            "ownerReferences": [owner],
        },
        "status": {"phase": "Succeeded", "result": result},
    }


def test_a_trial_entry_keeps_the_result_keys_the_operator_reads_and_drops_curves() -> None:
    result = {
        "phase": "Succeeded",
        "finalLoss": 0.5,
        "samplesPerSecond": 1e4,
        "params": {"w": 1.0, "b": 2.0},
        "curves": {"loss": list(range(1000))},
        "config": {"anything": "else"},
    }
    (state,) = trial_entry(trial("a", result)).values()
    assert state.result == {
        "phase": "Succeeded",
        "finalLoss": 0.5,
        "samplesPerSecond": 1e4,
        "params": {"w": 1.0, "b": 2.0},
    }


def test_index_entries_have_no_instance_dict_and_share_their_owner_uid() -> None:
    (a,) = trial_entry(trial("a", {"phase": "Succeeded"})).values()
    (b,) = trial_entry(trial("b", {"phase": "Succeeded"})).values()
    assert not hasattr(a, "__dict__")
    assert a.owner == OWNER
    assert a.owner is b.owner


def row(batch_size: int, gpus: int, loss: float | None) -> ResultRow:
    return ResultRow(
        trial=f"b{batch_size}-g{gpus}", batch_size=batch_size, gpus=gpus, repeat=0,
        phase=TrialPhase.SUCCEEDED, final_loss=loss, samples_per_second=100.0 * gpus,
    )  # fmt: skip


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.exposition import generate_latest

    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def test_the_metrics_of_an_experiment_come_from_phase_counts_and_its_rows() -> None:
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry, handlers.RECONCILING)
    phases = {"t1": TrialPhase.SUCCEEDED, "t2": TrialPhase.SUCCEEDED, "t3": TrialPhase.RUNNING}
    rows = [row(16, 1, 0.5), row(32, 2, None)]
    metrics.observe("team", "sweep", Snapshot(phases, Usage(requested=2, running=2), rows))
    got = samples(registry)
    exp = (("experiment", "sweep"), ("namespace", "team"))
    assert got["scalelab_operator_trials", (*exp, ("phase", "Succeeded"))] == 2
    assert got["scalelab_operator_trials", (*exp, ("phase", "Running"))] == 1
    assert got["scalelab_operator_trials", (*exp, ("phase", "Failed"))] == 0
    point = (("batch_size", "16"), ("experiment", "sweep"), ("gpus", "1"))
    labels = (*point, ("namespace", "team"), ("repeat", "0"))
    assert got["scalelab_trial_result_final_loss", labels] == 0.5
    assert got["scalelab_trial_result_samples_per_second", labels] == 100.0
    other = (("batch_size", "32"), ("experiment", "sweep"), ("gpus", "2"))
    assert ("scalelab_trial_result_final_loss", (*other, *labels[3:])) not in got
    metrics.forget("team", "sweep")
    assert not any(name == "scalelab_operator_trials" for name, _ in samples(registry))


@pytest.mark.parametrize(
    ("method", "url", "labels"),
    [
        ("GET", "/apis/scalelab.dev/v1alpha1/scaleexperiments?watch=true&labelSelector=x",
         ("watch", "scaleexperiments")),
        ("get", "/apis/scalelab.dev/v1alpha1/namespaces/team/scaletrials", ("list", "scaletrials")),
        ("GET", "https://h:6443/apis/coordination.k8s.io/v1/namespaces/s/leases/op",
         ("get", "leases")),
        ("PUT", "/apis/coordination.k8s.io/v1/namespaces/s/leases/op", ("update", "leases")),
        ("PATCH", "/apis/scalelab.dev/v1alpha1/namespaces/team/scaletrials/t1/status",
         ("patch", "scaletrials/status")),
        ("POST", "/api/v1/namespaces/team/events", ("create", "events")),
        ("POST", "/api/v1/namespaces/team/serviceaccounts", ("create", "serviceaccounts")),
        ("GET", "/api/v1/namespaces/team", ("get", "namespaces")),
        ("DELETE", "/apis/kubeflow.org/v2beta1/namespaces/team/mpijobs/t1", ("delete", "mpijobs")),
        ("GET", "/apis/kueue.x-k8s.io/v1beta1", ("list", "")),
        ("GET", "/version", ("list", "")),
    ],
)  # fmt: skip
def test_a_request_is_labelled_as_the_api_server_counts_it(
    method: str, url: str, labels: tuple[str, str]
) -> None:
    assert request_labels(method, url) == labels


def test_every_request_of_the_client_and_of_kopf_is_counted_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[tuple[str, str]] = []

    async def unauthenticated(method: str, url: str, **_: Any) -> str:
        raise AssertionError("kopf's authentication wrapper was bypassed")

    @functools.wraps(unauthenticated)  # as kopf's auth.authenticated wraps its request
    async def kopf_request(method: str, url: str, **_: Any) -> str:
        sent.append((method, url))
        return "kopf response"

    monkeypatch.setattr(kopf_api, "request", kopf_request)
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry, handlers.RECONCILING)
    api = fake_api(lambda request: (200, {"kind": "Lease"}))
    main.count_requests(api, metrics)
    main.count_requests(api, metrics)  # wrapping again does not count twice
    lease = "/apis/coordination.k8s.io/v1/namespaces/s/leases/op"
    assert api.get(lease) == {"kind": "Lease"}
    watch = "/apis/scalelab.dev/v1alpha1/scaletrials?watch=true"
    wrapped: Any = kopf_api.request
    reply = asyncio.run(wrapped(method="get", url=watch, settings=None))
    assert reply == "kopf response"
    assert sent == [("get", watch)]
    got = samples(registry)
    total = "scalelab_operator_api_requests_total"
    assert got[total, (("client", "scalelab"), ("resource", "leases"), ("verb", "get"))] == 1
    assert got[total, (("client", "kopf"), ("resource", "scaletrials"), ("verb", "watch"))] == 1


@pytest.mark.parametrize(
    ("phase", "kept"), [("Running", True), ("Succeeded", False), ("Failed", False)]
)
def test_a_finished_experiment_keeps_no_plan_or_pass_memory(phase: str, kept: bool) -> None:
    memo = kopf.Memo(ctx=object(), plan="the plan", memory="what the passes wrote")
    body = kopf.Body({"metadata": {"name": "sweep"}, "status": {"phase": phase}})
    operations.unload(memo, body)
    assert ("plan" in memo, "memory" in memo) == (kept, kept)
    assert "ctx" in memo


def test_kopf_lists_in_pages_and_is_sent_only_the_live_trials_and_mpijobs_scalelab_made() -> None:
    from kopf._cogs.structs.references import Resource

    settings = main.kopf_settings()
    assert settings.watching.chunk_size == main.LIST_CHUNK
    assert settings.queueing.idle_timeout == main.WORKER_IDLE_SECONDS < 5
    # Made by scalelab, and not retired with their finished, archived experiment.
    ours = "app.kubernetes.io/managed-by=scalelab-operator,!scalelab.dev/archived"
    for group, version, plural in (
        ("scalelab.dev", "v1alpha1", "scaletrials"),
        ("kubeflow.org", "v2beta1", "mpijobs"),
    ):
        resource = Resource(group=group, version=version, plural=plural, namespaced=True)
        assert settings.watching.label_selectors.collect(resource) == [ours]
    for group, version, plural in (
        ("scalelab.dev", "v1alpha1", "scaleexperiments"),
        ("kueue.x-k8s.io", "v1beta2", "workloads"),  # Kueue makes those, unlabelled
    ):
        resource = Resource(group=group, version=version, plural=plural, namespaced=True)
        assert settings.watching.label_selectors.collect(resource) == []


def test_glibc_is_told_to_hand_freed_memory_back_in_a_thread_of_its_own() -> None:
    import threading

    assert main.tune_malloc(trim_seconds=0.01)  # the test images are glibc
    assert any(t.name == "malloc-trim" and t.daemon for t in threading.enumerate())
