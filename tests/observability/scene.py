"""The observability tier's live scene: a real Prometheus (with the shipped alert rules rendered
with short windows) scraping real trainer ranks, the operator's metrics module and a fake DCGM
exporter, plus the results of a real local sweep. Its trials declare GPUs (gpusPerProcess 1), as
on a GPU cluster; a CPU-only experiment beside them (gpusPerProcess 0) must show in no GPU panel.

Built once per package by conftest.py. What a cluster would provide is stood in for, and said so:
- target labels: the PodMonitor's relabeling (namespace, pod, container, endpoint and the
  podTargetLabels) is written into the file_sd target groups, one group per rank (= worker pod);
- the operator: `OperatorMetrics` in this process with an injected registry, fed the snapshot a
  reconcile would produce from the local sweep's results (rows via
  `scalelab.results.model.result_row`);
- DCGM: no GPU here, so tiny exporters serve `DCGM_FI_DEV_GPU_UTIL` with dcgm-exporter's
  Kubernetes labels for the trainer pods: one scraped as a ServiceMonitor without honorLabels
  would (its pod/namespace labels renamed exported_pod / exported_namespace), one as with
  honorLabels (kept), so the dashboard's join is exercised both ways;
- GPUs: the live trainers run with --gpus-per-process 1 on CPU-backed fake GPUs that declare
  themselves in SCALELAB_FAKE_GPUS, as the test node's device plugin declares them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scalelab.api import ResultRow, ScaleExperiment, TrialPhase
from scalelab.kube.metrics import OperatorMetrics, Snapshot, device_of
from scalelab.kube.state import Usage
from scalelab.local import processes
from scalelab.names import worker_pod_name
from scalelab.validation import parse_experiment
from scalelab_trainer.devices import FAKE_GPUS_VARIABLE
from tests.harness.horovod import HOROVODRUN, quiet_env
from tests.harness.ports import free_port, free_ports, wait_until
from tests.harness.prometheus import Prometheus

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "manifests" / "monitoring"
BIN = Path(sys.executable).parent
NAMESPACE = "lab"
EXPERIMENT = "obs-sweep"
#: A CPU-only experiment in the same namespace, in a queue of its own: its processes, admitted,
#: running and queued, must count in no GPU panel and no GPU alert.
CPU_EXPERIMENT = "obs-sweep-cpu"
CPU_QUEUE = "cpu-only"
CPU_USAGE = Usage(requested=3, running=1, queued=2)
#: Short windows for the test rendering of the rules (shipped defaults: generate.DEFAULT_WINDOWS).
TEST_WINDOWS = {
    "stall_window": "15s",
    "diverged_window": "2m",
    "errors_window": "10s",
    "errors_for": "5s",
    "pending_for": "5s",
    "idle_for": "5s",
}

#: The local sweep whose results feed the operator's result gauges (2 batch sizes × 1, 2 GPUs).
SWEEP = f"""
apiVersion: scalelab.dev/v1alpha1
kind: ScaleExperiment
metadata:
  name: {EXPERIMENT}
spec:
  workload: {{model: linear, dataset: regression, datasetSize: 2048, seed: 0}}
  sweep:
    batchSizes: [32, 128]
    gpus: [1, 2]
  training:
    optimizer: sgd
    learningRate: 0.004
    referenceBatchSize: 8
    lrScaling: linear
    warmupEpochs: 1
    maxEpochs: 30
    convergence: {{relativeTolerance: 0}}
    targetLoss: 1.1
    shuffle: true
  resources: {{gpusPerProcess: 1, cpu: "1", memory: 2Gi}}
  execution: {{maxGPUs: 2, activeDeadlineSeconds: 300}}
"""


def experiment(gpus_per_process: int = 1) -> ScaleExperiment:
    """The sweep's spec, validated; with gpus_per_process 0 the CPU-only experiment's."""
    text = SWEEP.replace("gpusPerProcess: 1", f"gpusPerProcess: {gpus_per_process}")
    return parse_experiment(yaml.safe_load(text))


def load_generator() -> Any:
    """manifests/monitoring/generate.py as a module (manifests/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "scalelab_monitoring_generate", MONITORING / "generate.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sanitize(label: str) -> str:
    """How Prometheus (and the Prometheus operator) turn a Kubernetes label into a label name."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def pod_target_labels() -> list[str]:
    """The Kubernetes labels the shipped PodMonitor copies onto trainer series."""
    monitor = yaml.safe_load((MONITORING / "podmonitor.yaml").read_text())
    return list(monitor["spec"]["podTargetLabels"])


@dataclass
class LiveTrial:
    """A trainer process (horovodrun + ranks) serving /metrics, one port per rank."""

    name: str
    batch_size: int
    gpus: int
    ports: list[int]
    process: subprocess.Popen[str]
    log: Path

    def pod(self, rank: int) -> str:
        """One rank per worker pod (processesPerWorker 1)."""
        return worker_pod_name(self.name, rank)

    def kube_labels(self) -> dict[str, str]:
        """The labels the operator puts on the trial's pods (scalelab.kube.mpijob)."""
        return {
            "scalelab.dev/experiment": EXPERIMENT,
            "scalelab.dev/trial": self.name,
            "scalelab.dev/batch-size": str(self.batch_size),
            "scalelab.dev/gpus": str(self.gpus),
            "scalelab.dev/repeat": "0",
            "app.kubernetes.io/managed-by": "scalelab-operator",
        }

    def target_groups(self) -> list[dict[str, Any]]:
        """What the PodMonitor yields: one target per rank port, labelled like its pod."""
        kube = self.kube_labels()
        groups = []
        for rank, port in enumerate(self.ports):
            labels = {
                "namespace": NAMESPACE,
                "pod": self.pod(rank),
                "container": "worker",
                "endpoint": "metrics-0",
            }
            labels |= {sanitize(k): kube[k] for k in pod_target_labels() if k in kube}
            groups.append({"targets": [f"127.0.0.1:{port}"], "labels": labels})
        return groups

    def rank_pid(self, rank: int) -> int:
        """The pid of one rank (HOROVOD_RANK in its environment)."""
        for pid in processes.descendants(self.process.pid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"scalelab_trainer" in cmd and f"HOROVOD_RANK={rank}".encode() in env:
                return pid
        raise LookupError(f"rank {rank} of {self.name} not found")


def start_trainer(name: str, batch_size: int, gpus: int, workdir: Path) -> LiveTrial:
    """A long linear-regression trial (no stopping rule) under horovodrun, niced below the test,
    one fake GPU per process (the MPIJob launcher's --gpus-per-process 1)."""
    port = free_ports(gpus)  # rank r serves on port + r
    argv = [
        "nice", "-n", "5",
        *HOROVODRUN, "-np", str(gpus), "--gloo", "-H", f"localhost:{gpus}",
        str(BIN / "python"), "-m", "scalelab_trainer",
        "--experiment", EXPERIMENT, "--trial", name,
        "--model", "linear", "--dataset", "regression", "--dataset-size", "2048",
        "--batch-size", str(batch_size), "--learning-rate", "0.004",
        "--reference-batch-size", "8", "--lr-scaling", "linear", "--warmup-epochs", "1",
        "--shuffle", "--relative-tolerance", "0", "--max-epochs", "1000000",
        "--intra-op-threads", "1", "--metrics-port", str(port), "--gpus-per-process", "1",
    ]  # fmt: skip
    fake_gpus = ",".join(f"fake-gpu-{i}" for i in range(gpus))
    log = workdir / f"{name}.log"
    process = subprocess.Popen(
        argv,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
        env=quiet_env({FAKE_GPUS_VARIABLE: fake_gpus}),
        start_new_session=True,
    )
    return LiveTrial(name, batch_size, gpus, [port + i for i in range(gpus)], process, log)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def wait_serving(trial: LiveTrial, timeout: float) -> None:
    """Until every rank serves samples_total (the trainer has started its first trial); fails at
    once, with the trainer's log, when it exits instead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if trial.process.poll() is not None:
            raise RuntimeError(f"{trial.name} exited:\n{trial.log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            if all("scalelab_trainer_samples_total{" in scrape(p) for p in trial.ports):
                return
        time.sleep(0.5)
    raise TimeoutError(f"{trial.name} serves no samples after {timeout:.0f} s")


class FakeDCGM(Collector):
    """DCGM_FI_DEV_GPU_UTIL (percent) for one GPU per trainer pod, labelled as dcgm-exporter does
    with Kubernetes pod mapping on. Not a GPU measurement: a deterministic wave."""

    def __init__(self, node: int) -> None:
        self.pods: list[str] = []
        self.node = node
        self.started = time.monotonic()

    def collect(self) -> Iterator[Metric]:
        labels = ["gpu", "UUID", "device", "modelName", "Hostname", "container", "namespace", "pod"]
        util = GaugeMetricFamily("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", labels=labels)
        t = time.monotonic() - self.started
        for i, pod in enumerate(self.pods):
            value = 80 + 15 * math.sin(t / 10 + i + self.node)
            util.add_metric(
                [str(i), f"GPU-{self.node:04d}{i:04d}-fake", f"nvidia{i}", "NVIDIA H100 80GB HBM3",
                 f"gpu-node-{self.node}", "worker", NAMESPACE, pod],
                round(value),
            )  # fmt: skip
        yield util


@dataclass
class DCGMExporter:
    """One fake dcgm-exporter pod (one node's GPUs) and how its scrape treats its pod labels."""

    collector: FakeDCGM
    port: int
    server: Any
    honor_labels: bool

    def target_group(self) -> dict[str, Any]:
        # honorLabels on: no target label collides, the series keep pod/namespace. Off: the
        # exporter pod's own labels win and the series' become exported_pod/exported_namespace.
        labels = {
            "namespace": "gpu-operator",
            "pod": f"nvidia-dcgm-exporter-node{self.collector.node}",
            "container": "nvidia-dcgm-exporter",
        }
        return {
            "targets": [f"127.0.0.1:{self.port}"],
            "labels": {} if self.honor_labels else labels,
        }


def start_dcgm(node: int, honor_labels: bool) -> DCGMExporter:
    registry = CollectorRegistry()
    collector = FakeDCGM(node)
    registry.register(collector)
    port, server = serve(registry)
    return DCGMExporter(collector, port, server, honor_labels)


@dataclass
class OperatorEndpoint:
    """The operator's metrics module served on a loopback port, as `scalelab operator` does."""

    registry: CollectorRegistry
    metrics: OperatorMetrics
    port: int
    server: Any
    phases: dict[str, TrialPhase] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    rows: list[ResultRow] = field(default_factory=list)

    def publish(self) -> None:
        """What every reconcile does (scalelab.kube.operations): count it, replace the snapshot."""
        device = device_of(experiment())
        snap = Snapshot(dict(self.phases), self.usage, list(self.rows), device=device)
        self.metrics.reconciles.labels("reconcile").inc()
        self.metrics.observe(NAMESPACE, EXPERIMENT, snap)

    def publish_cpu_only(self) -> None:
        """The CPU-only experiment's snapshot, as its reconciles leave it (CPU_USAGE)."""
        device = device_of(experiment(gpus_per_process=0))
        snap = Snapshot({}, CPU_USAGE, [], queue=CPU_QUEUE, device=device)
        self.metrics.observe(NAMESPACE, CPU_EXPERIMENT, snap)


def serve(registry: CollectorRegistry) -> tuple[int, Any]:
    port = free_port()
    server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    return port, server


@dataclass
class Scene:
    """Everything the observability tests query."""

    prometheus: Prometheus
    workdir: Path
    live: list[LiveTrial]
    operator: OperatorEndpoint
    dcgm: list[DCGMExporter]
    started: float
    timings: dict[str, float] = field(default_factory=dict)

    def write_targets(self) -> None:
        """Every target group (the harness's set_targets takes one label set; we need several)."""
        groups = [g for t in self.live for g in t.target_groups()]
        groups.append({"targets": [f"127.0.0.1:{self.operator.port}"], "labels": {}})
        groups += [d.target_group() for d in self.dcgm]
        tmp = self.prometheus.workdir / "targets.json.tmp"
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.prometheus.workdir / "targets.json")

    def alerts(self, name: str) -> list[dict[str, Any]]:
        """Active alerts (pending or firing) of one rule, from /api/v1/alerts."""
        found = self.prometheus.api("alerts")["alerts"]
        return [a for a in found if a["labels"].get("alertname") == name]

    def firing(self, name: str, **labels: str) -> list[dict[str, Any]]:
        return [
            a
            for a in self.alerts(name)
            if a["state"] == "firing" and all(a["labels"].get(k) == v for k, v in labels.items())
        ]

    def wait_firing(self, name: str, timeout: float, **labels: str) -> tuple[float, dict[str, Any]]:
        """Seconds until the alert fires with these labels, and the alert."""
        found: list[dict[str, Any]] = []

        def check() -> bool:
            nonlocal found
            found = self.firing(name, **labels)
            return bool(found)

        try:
            seconds = wait_until(check, timeout, f"alert {name} {labels}", interval=0.25)
        except TimeoutError:
            raise AssertionError(
                f"{name} {labels} did not fire within {timeout:.0f} s; active: {self.alerts(name)}"
            ) from None
        return seconds, found[0]

    def stop(self) -> None:
        for t in self.live:
            for pid in [t.process.pid, *processes.descendants(t.process.pid)]:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGCONT)  # a stopped rank cannot handle SIGTERM
            if t.process.poll() is None:
                processes.stop(t.process, grace_seconds=5)
        for d in self.dcgm:
            d.server.shutdown()
        self.operator.server.shutdown()


def run_sweep(workdir: Path) -> subprocess.Popen[str]:
    """`scalelab run` of the small sweep (the local executor; it serves no /metrics)."""
    spec = workdir / "sweep.yaml"
    spec.write_text(SWEEP)
    out = workdir / "sweep"
    return subprocess.Popen(
        [
            "nice",
            "-n",
            "5",
            str(BIN / "scalelab"),
            "run",
            str(spec),
            "--out",
            str(out),
            "--no-report",
        ],
        stdout=(workdir / "sweep.log").open("w"),
        stderr=subprocess.STDOUT,
        text=True,
        env=quiet_env(),
        start_new_session=True,
    )


def sweep_rows(workdir: Path) -> list[ResultRow]:
    """The local sweep's results as the operator's result rows."""
    from scalelab.results import store
    from scalelab.results.model import result_row

    results = store.load(workdir / "sweep")
    assert results is not None, (workdir / "sweep.log").read_text()[-3000:]
    return [result_row(r) for r in results.trials]
