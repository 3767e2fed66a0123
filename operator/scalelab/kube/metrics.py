"""The operator's own /metrics: trials by phase, GPUs requested / running / queued, reconcile
errors, and every finished trial's results, so scaling curves stay queryable after pods are gone.

Per-experiment series come from a collector over the latest snapshot of each experiment (set by
every reconciliation, dropped when the experiment is deleted), so no series outlives its object.
Labels are bounded: namespace, experiment, phase, batch_size, gpus, repeat (never a uid);
`device` on scalelab_operator_gpus (gpu or cpu: what the experiment's processes hold, so that
CPU-only trials stay out of GPU demand); the result rows of an experiment with a
sweep.learningRates axis also `learning_rate` (its base rate, one of at most 16; without the axis
the series are exactly as they were), and
`handler`, the id of the kopf handler that ran a reconciliation pass (kube/handlers.py:
plan, resume, reconcile); every handler's series exist at 0 from the start, so `rate()` sees the
first error. The registry is injected; the HTTP server is started by `scalelab operator`, never
at import. kube/main.py builds `OperatorMetrics` and counts every API request in it (`request`);
kube/operations.py records every pass in it.

`scalelab_operator_device_seconds_total{namespace, queue, device}` is a counter, not a snapshot:
the device-seconds of every run that ended (preempted, interrupted, failed and finished ones:
docs/measurements.md), added by the pass that writes the run's end, so a team's GPU time can be
totalled after its experiments are deleted. Only the leader reconciles (kube/leader.py), and the
run's end is written once, so the replicas' series together count each run once.

A snapshot keeps what the series need and no more: the number of trials in each phase (not
every trial's phase by name) and the result rows as label and value tuples (not the rows), so
that the memory of finished experiments' series stays small.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scalelab.api import ResultRow, ScaleExperiment, TrialPhase
from scalelab.kube.leader import leader_gauge
from scalelab.kube.state import Usage

EXP_LABELS = ["namespace", "experiment"]
GPU_STATES = ("requested", "running", "suspended", "queued")
#: The `prerequisite` label values (kube/prerequisites.py).
PREREQUISITES = ("mpijob-api", "kueue-api", "trainer-account", "trainer-image")
ROW_LABELS = [*EXP_LABELS, "batch_size", "gpus", "repeat"]

#: result gauges: (metric suffix, ResultRow attribute, help)
RESULT_GAUGES = (
    (
        "samples_per_second",
        "samples_per_second",
        "Steady-state global throughput. Unit: samples per second.",
    ),
    (
        "final_loss",
        "final_loss",
        "Full-dataset loss at the end of the trial. Unit: the model's loss (no physical unit).",
    ),
    (
        "scaling_efficiency_ratio",
        "scaling_efficiency",
        "Scaling efficiency, strong or weak (1 = linear scaling). Unit: ratio.",
    ),
    ("training_seconds", "seconds", "Training time reported by the trainer. Unit: seconds."),
    (
        "gpu_seconds",
        "gpu_seconds",
        "Processes × time to target (or training time). Unit: GPU-seconds (one process each).",
    ),
    (
        "time_to_target_seconds",
        "time_to_target_seconds",
        "Time from the first step to the target loss. Unit: seconds.",
    ),
)


@dataclass(frozen=True)
class Snapshot:
    """One experiment as of its last reconciliation."""

    phases: Mapping[str, TrialPhase]
    usage: Usage
    rows: Sequence[ResultRow]
    stalled: int = 0
    queue: str = ""  # the trials' Kueue LocalQueue (Config.local_queue), "" without one
    missing: tuple[str, ...] = ()  # keys of the prerequisites the cluster lacks
    device: str = "gpu"  # what each process holds (`device_of`): "gpu" or "cpu"


def device_of(experiment: ScaleExperiment) -> str:
    """The `device` label of an experiment's usage: "gpu" when its processes hold a GPU each
    (resources.gpusPerProcess 1, the default), "cpu" when they run on the CPU (0)."""
    return "gpu" if experiment.spec.resources.gpus_per_process else "cpu"


#: One result row as the series need it: its batch_size, gpus and repeat labels, its base
#: learning rate (None without the axis), and its value for each RESULT_GAUGES entry.
RowSeries = tuple[tuple[str, str, str], float | None, tuple[float | None, ...]]


@dataclass(frozen=True)
class _Series:
    """What the collector keeps of a snapshot: counts and plain tuples, no rows, no trial names."""

    phases: tuple[int, ...]  # trials in each TrialPhase, in its order
    usage: Usage
    rows: tuple[RowSeries, ...]
    stalled: int
    queue: str
    missing: tuple[str, ...]
    device: str

    @classmethod
    def of(cls, snap: Snapshot) -> _Series:
        counts = dict.fromkeys(TrialPhase, 0)
        for phase in snap.phases.values():
            counts[phase] += 1
        rows = tuple(
            (
                (str(row.batch_size), str(row.gpus), str(row.repeat)),
                row.base_learning_rate,
                tuple(_value(getattr(row, attr)) for _, attr, _ in RESULT_GAUGES),
            )
            for row in snap.rows
        )
        return cls(
            tuple(counts.values()),
            snap.usage,
            rows,
            snap.stalled,
            snap.queue,
            snap.missing,
            snap.device,
        )


def _value(value: Any) -> float | None:
    return None if value is None else float(value)


#: The `verb` label of a request, as the API server's apiserver_request_total names it.
VERBS = {"post": "create", "put": "update", "patch": "patch", "delete": "delete"}


def request_labels(method: str, url: str) -> tuple[str, str]:
    """(verb, resource) of one API request, as the API server's request metrics name them: verb
    get, list, watch, create, update, patch or delete; resource the plural with its subresource
    (scaletrials/status), "" for discovery (/api, /apis/GROUP/VERSION, /version)."""
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    if path[:1] == ["api"]:
        rest = path[2:]
    elif path[:1] == ["apis"]:
        rest = path[3:]
    else:
        rest = []
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]  # a namespaced object; /namespaces/NAME alone is the namespace itself
    resource = "/".join(rest[:1] + rest[2:3])
    verb = VERBS.get(method.lower())
    if verb is None:
        if "true" in parse_qs(parts.query).get("watch", []):
            verb = "watch"
        else:
            verb = "get" if len(rest) >= 2 else "list"
    return verb, resource if rest else ""


class OperatorMetrics(Collector):
    """Metrics of one operator process, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry, handlers: Sequence[str]) -> None:
        """`handlers`: the kopf handler ids that run reconciliation passes (their label values)."""
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], _Series] = {}
        self.reconcile_errors = Counter(
            "scalelab_operator_reconcile_errors_total",
            "Reconciliation passes that failed on a Kubernetes API call (retried later), by kopf "
            "handler id.",
            ["handler"],
            registry=registry,
        )
        self.reconciles = Counter(
            "scalelab_operator_reconciles_total",
            "Reconciliation passes run, by kopf handler id.",
            ["handler"],
            registry=registry,
        )
        self.reconcile_seconds = Histogram(
            "scalelab_operator_reconcile_duration_seconds",
            "Wall time of one reconciliation pass (decide and API writes), by kopf handler id. "
            "Unit: seconds.",
            ["handler"],
            buckets=(0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30),
            registry=registry,
        )
        self.api_writes = Counter(
            "scalelab_operator_api_writes_total",
            "API writes made by the operator's reconciliations (kopf's own not included), by verb "
            "(create, patch, delete) and resource (scaletrials, scaletrials/status, mpijobs, "
            "scaleexperiments/status, serviceaccounts, rolebindings) as the API server's "
            "apiserver_request_total names them.",
            ["verb", "resource"],
            registry=registry,
        )
        self.api_requests = Counter(
            "scalelab_operator_api_requests_total",
            "Requests the operator made to the Kubernetes API server, reads and watches included: "
            "its own (client scalelab: reconciliation, prerequisites, the Lease) and kopf's "
            "(client kopf: watches, its annotations and finalizers, Events), by verb (get, list, "
            "watch, create, update, patch, delete) and resource as the API server's "
            'apiserver_request_total names them ("" for discovery). A retried request counts '
            "once.",
            ["client", "verb", "resource"],
            registry=registry,
        )
        self.device_seconds = Counter(
            "scalelab_operator_device_seconds",
            "Devices × pod run time of the trials' runs, counted as each ends: preempted, "
            "interrupted and failed runs included. queue: the Kueue LocalQueue, or empty. device: "
            '"gpu" or "cpu" (CPU processes). Unit: device-seconds.',
            ["namespace", "queue", "device"],
            registry=registry,
        )
        self.leader = leader_gauge(registry)  # set by kube/main.py while it holds the Lease
        for handler in handlers:
            # A labelled series exports nothing until its child exists: create every one now.
            self.reconcile_errors.labels(handler)
            self.reconciles.labels(handler)
            self.reconcile_seconds.labels(handler)
        registry.register(self)

    def observe(
        self, namespace: str, experiment: str, snapshot: Snapshot, spent: float = 0.0
    ) -> None:
        """Replace an experiment's snapshot, and count `spent`, the device-seconds of its runs
        that ended (written to their trials' status). The device-seconds series is exported
        from the first pass, at 0 until a run ends: `increase()` cannot see a first value."""
        used = self.device_seconds.labels(namespace, snapshot.queue, snapshot.device)
        if spent > 0:
            used.inc(spent)
        series = _Series.of(snapshot)
        with self._lock:
            self._series[(namespace, experiment)] = series

    def forget(self, namespace: str, experiment: str) -> None:
        """Drop a deleted experiment's series."""
        with self._lock:
            self._series.pop((namespace, experiment), None)

    def request(self, client: str, method: str, url: str) -> None:
        """Count one API request of `client` (kopf or scalelab) by its method and URL."""
        self.api_requests.labels(client, *request_labels(method, url)).inc()

    def collect(self) -> Iterator[Metric]:
        """Called by the registry on every scrape."""
        with self._lock:
            series = dict(self._series)
        trials = GaugeMetricFamily(
            "scalelab_operator_trials", "Trials by phase.", labels=[*EXP_LABELS, "phase"]
        )
        gpus = GaugeMetricFamily(
            "scalelab_operator_gpus",
            "Devices of trials, one per process: requested (MPIJob not finished), running "
            "(MPIJob Running), suspended (of the requested, MPIJob held by Kueue), queued "
            "(runnable, not admitted under maxConcurrentTrials/maxGPUs yet). queue: the Kueue "
            'LocalQueue, or empty. device: "gpu" (resources.gpusPerProcess 1: GPUs) or "cpu" '
            '(0: CPU-only processes, no GPU); GPU demand is device="gpu".',
            labels=[*EXP_LABELS, "queue", "device", "state"],
        )
        stalled = GaugeMetricFamily(
            "scalelab_operator_stalled_trials",
            "Running trials without a progress report for over SCALELAB_STALL_SECONDS seconds.",
            labels=EXP_LABELS,
        )
        missing = GaugeMetricFamily(
            "scalelab_operator_missing_prerequisite",
            "1 while a prerequisite of the experiment is missing and holds its trials back "
            "(mpijob-api, kueue-api, trainer-account; the PrerequisitesMet condition says how to "
            "install it), else 0.",
            labels=[*EXP_LABELS, "prerequisite"],
        )
        results = {
            name: GaugeMetricFamily(f"scalelab_trial_result_{name}", doc, labels=ROW_LABELS)
            for name, _, doc in RESULT_GAUGES
        }
        for (namespace, experiment), snap in sorted(series.items()):
            exp = [namespace, experiment]
            for phase, count in zip(TrialPhase, snap.phases, strict=True):
                trials.add_metric([*exp, phase.value], count)
            stalled.add_metric(exp, snap.stalled)
            for key in PREREQUISITES:
                missing.add_metric([*exp, key], float(key in snap.missing))
            for state in GPU_STATES:
                gpus.add_metric([*exp, snap.queue, snap.device, state], getattr(snap.usage, state))
            for point, rate, values in snap.rows:
                labels = dict(zip(ROW_LABELS, [*exp, *point], strict=True))
                if rate is not None:
                    labels["learning_rate"] = repr(rate)
                for (name, _, _), value in zip(RESULT_GAUGES, values, strict=True):
                    if value is not None:
                        family = results[name]
                        family.add_sample(family.name, labels, value)
        yield trials
        yield gpus
        yield stalled
        yield missing
        yield from results.values()
