"""The error taxonomy of the handlers: an invalid spec becomes Ready=False/InvalidSpec on the
status plus a kopf.PermanentError (never a crash loop); an API failure becomes a TemporaryError.
The API is a recording stub here; tests/cluster exercises the real one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import kopf
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from scalelab.api import ConditionType, ScaleExperiment
from scalelab.kube import handlers, operations
from scalelab.kube.apply import Kube
from scalelab.kube.metrics import OperatorMetrics, Snapshot, device_of
from scalelab.kube.operations import Context
from scalelab.kube.settings import Config
from scalelab.kube.state import Usage
from tests.kube.fake_api import fake_api, sent, status

NO_INDEXES = operations.Indexes(trials={}, jobs={}, workloads={})

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def events() -> Iterator[asyncio.Queue[Any]]:
    """kopf.event() posts through the operator's queue; here a queue nobody drains."""
    from kopf._core.engines import posting

    queue: asyncio.Queue[Any] = asyncio.Queue()
    loop = asyncio.new_event_loop()
    posting.settings_var.set(kopf.OperatorSettings())
    posting.event_queue_var.set(queue)  # type: ignore[arg-type]
    posting.event_queue_loop_var.set(loop)
    yield queue
    loop.close()


class RecordingCustomApi:
    """Records status patches; fails every call with `fail` when set (discovery, the first call
    of a pass, always fails)."""

    def __init__(self, fail: int | None = None) -> None:
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.fail = fail

    def __call__(self, request: Any) -> tuple[int, Any]:
        parts = request.url.path.split("/")
        if self.fail or len(parts) == 4:  # /apis/GROUP/VERSION: discovery
            return status(self.fail or 500, "ServiceUnavailable")
        if request.method == "PATCH" and parts[-1] == "status":
            self.patches.append((parts[-2], sent(request)))
        return 201, sent(request)


def _context(custom: RecordingCustomApi, registry: CollectorRegistry | None = None) -> Context:
    kube = Kube(fake_api(custom), parallelism=1)
    metrics = OperatorMetrics(registry or CollectorRegistry(), handlers.RECONCILING)
    return Context(kube=kube, config=Config(), metrics=metrics)


def _body(spec: dict[str, Any]) -> kopf.Body:
    raw = {
        "apiVersion": "scalelab.dev/v1alpha1",
        "kind": "ScaleExperiment",
        "metadata": {"name": "exp", "namespace": "ns", "uid": "u", "generation": 2},
        "spec": spec,
    }
    return kopf.Body(raw)


def test_an_invalid_spec_sets_ready_false_invalid_spec_and_raises_a_permanent_error() -> None:
    custom = RecordingCustomApi()
    memo = kopf.Memo(ctx=_context(custom))
    body = _body({"sweep": {"batchSizes": [8, 8]}, "workload": {"model": "cnn"}})
    with pytest.raises(kopf.PermanentError, match="invalid spec"):
        asyncio.run(operations.plan(memo, body, NO_INDEXES, handlers.PLAN))
    [(name, patch)] = custom.patches
    assert name == "exp"
    status = patch["status"]
    assert status["phase"] == "Failed"
    assert status["observedGeneration"] == 2
    [ready] = status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == (
        ConditionType.READY,
        "False",
        "InvalidSpec",
    )
    assert "spec.sweep.batchSizes: must not repeat values" in ready["message"]
    assert "model cnn trains on synthetic-images" in ready["message"]


def test_a_refused_experiment_is_left_alone_after_a_restart() -> None:
    custom = RecordingCustomApi()
    memo = kopf.Memo(ctx=_context(custom))
    body = _body({"sweep": {"batchSizes": [8, 8]}})
    body_dict = dict(body)
    body_dict["status"] = {"phase": "Failed"}
    asyncio.run(operations.plan(memo, kopf.Body(body_dict), NO_INDEXES, handlers.RESUME))
    assert custom.patches == []


def test_an_api_failure_is_a_temporary_error_counted_under_its_handler_id() -> None:
    registry = CollectorRegistry()
    ctx = _context(RecordingCustomApi(fail=503), registry)
    memo = kopf.Memo(ctx=ctx)
    body = _body({"sweep": {"batchSizes": [8]}, "resources": {"gpusPerProcess": 0}})
    with pytest.raises(kopf.TemporaryError, match="API error 503"):
        asyncio.run(operations.reconcile(memo, body, NO_INDEXES, handlers.RECONCILE))
    assert _samples(registry)[("scalelab_operator_reconcile_errors_total", "reconcile")] == 1
    assert _samples(registry)[("scalelab_operator_reconciles_total", "reconcile")] == 1
    ctx.accounts.add("ns")  # the trainer account exists: PLAN goes straight to its first pass
    with pytest.raises(kopf.TemporaryError, match="API error 503"):
        asyncio.run(operations.plan(memo, body, NO_INDEXES, handlers.PLAN))
    errors = {h: v for (n, h), v in _samples(registry).items() if n.endswith("errors_total")}
    assert errors == {"plan": 1, "resume": 0, "reconcile": 1}  # by the handler that failed


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    """(sample name, handler label) → value, as a scrape of the operator's registry sees them."""
    text = generate_latest(registry).decode()
    return {
        (s.name, s.labels["handler"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if "handler" in s.labels and not s.name.endswith(("_bucket", "_created"))
    }


def test_every_handler_series_is_exported_at_zero_before_the_first_error() -> None:
    registry = CollectorRegistry()
    _context(RecordingCustomApi(), registry)
    samples = _samples(registry)
    for name in ("scalelab_operator_reconcile_errors_total", "scalelab_operator_reconciles_total",
                 "scalelab_operator_reconcile_duration_seconds_count"):  # fmt: skip
        assert {h: v for (n, h), v in samples.items() if n == name} == {
            handlers.PLAN: 0,
            handlers.RESUME: 0,
            handlers.RECONCILE: 0,
        }


def test_every_operator_metric_states_its_unit_as_its_name_does() -> None:
    registry = CollectorRegistry()
    OperatorMetrics(registry, handlers.RECONCILING)
    families = {f.name: f.documentation for f in registry.collect()}
    assert "scalelab_trial_result_gpu_seconds" in families
    for name, help_text in families.items():
        if name.endswith("device_seconds"):
            assert help_text.endswith("Unit: device-seconds."), name
        elif name.endswith("_seconds") and not name.endswith("gpu_seconds"):
            assert help_text.endswith("Unit: seconds."), name
        if name.endswith("gpu_seconds"):
            assert "Unit: GPU-seconds" in help_text, name
        if name.endswith("_ratio"):
            assert help_text.endswith("Unit: ratio."), name
        if name.endswith("per_second"):
            assert help_text.endswith("Unit: samples per second."), name


def test_the_gpu_gauge_labels_a_cpu_only_experiments_processes_device_cpu() -> None:
    """One device per process either way; GPU panels and alerts select device="gpu"."""
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry, handlers.RECONCILING)
    for name, per_process in (("on-gpus", 1), ("on-cpus", 0), ("default", None)):
        resources = {} if per_process is None else {"gpusPerProcess": per_process}
        experiment = ScaleExperiment.model_validate(
            {"metadata": {"name": name}, "spec": {"resources": resources}}
        )
        usage = Usage(requested=4, running=2)
        metrics.observe("ns", name, Snapshot({}, usage, [], device=device_of(experiment)))
    text = generate_latest(registry).decode()
    requested = {
        (s.labels["experiment"], s.labels["device"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "scalelab_operator_gpus" and s.labels["state"] == "requested"
    }
    assert requested == {("on-gpus", "gpu"): 4, ("on-cpus", "cpu"): 4, ("default", "gpu"): 4}


def test_the_device_seconds_counter_exists_from_the_first_pass_and_adds_each_ended_run() -> None:
    """A counter, not a snapshot: it outlives the experiment (increase() totals a team's time)."""
    registry = CollectorRegistry()
    metrics = OperatorMetrics(registry, handlers.RECONCILING)
    labels = {"namespace": "ns", "queue": "team-a", "device": "gpu"}
    snap = Snapshot({}, Usage(), [], queue="team-a")
    metrics.observe("ns", "exp", snap)
    total = "scalelab_operator_device_seconds_total"
    assert registry.get_sample_value(total, labels) == 0.0  # at 0 before any run ends
    metrics.observe("ns", "exp", snap, spent=240.0)
    metrics.observe("ns", "exp", snap)  # a pass that ended no run adds nothing
    metrics.forget("ns", "exp")
    assert registry.get_sample_value(total, labels) == 240.0  # kept after the experiment goes
