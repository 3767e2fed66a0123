"""Benchmark: a 1,000-point ScaleExperiment against the real control plane and the real operator.

Run: .venv/bin/python bench/operator_1000_points.py [--concurrent 50] [--interval 1]
     [--dump-status FILE] [--profile FILE.speedscope (py-spy, images/requirements/dev.txt)]

Starts etcd + kube-apiserver + controller manager (tests/harness), `kubectl apply -k manifests/`,
the real MPIJob CRD, and `scalelab operator` as its ServiceAccount. Applies a sweep of
20 batch sizes × 5 GPU counts × 10 repeats and measures:
  - seconds from apply until the first wave of MPIJobs (maxConcurrentTrials of them) exists, and
    until all 1,000 ScaleTrials exist, with the CPU seconds the operator, kube-apiserver and etcd
    spent until then (what the wall time is made of on a shared machine);
  - with an instant stand-in (tests/cluster/standin.py InstantStandIn: each MPIJob "runs" at
    once, its trial's result patched as rank 0 would, then the MPIJob marked Succeeded), seconds
    until the experiment is Succeeded;
  - the experiment's status size in bytes (compact JSON, as etcd stores it) and its result rows;
  - the operator's resident memory (idle, now and peak);
  - API writes per trial, from the API server's own apiserver_request_total counters, minus the
    stand-in's (2 per trial), this script's apply and the control plane's leader-election leases;
    and the operator's own count (scalelab_operator_api_writes_total).
Prints the load average at the start and the end. Not a test: figures depend on this machine's
load. On the 2-core shared development box (2026-12-03, defaults, six runs, 1-minute load
average at the start 7.2 / 10.4 / 10.2 / 5.2 / 9.0 / 2.2): first wave after 5.6 / 2.1 / 4.6 /
2.7 / 2.4 / 1.5 s (median 2.6), all 1,000 ScaleTrials after 28.7 / 10.8 / 34.1 / 14.1 / 11.1 /
5.7 s (median 12.6), Succeeded after 65-216 s (median 127); status 8,242 bytes with the top 20
rows (object 14.2 kB); operator RSS 104 MiB idle, peak 126-147 MiB (median 132); the operator's
own writes 3,022-3,034 = 3 per trial (create, MPIJob, final phase) + 22-33 experiment status
patches. Until all trials existed the operator used 2.9-3.4 CPU-s, kube-apiserver 5.6-7.9, etcd
0.5-0.8 (at load 2.2: 3.1 + 6.1 + 0.6 = 9.8 CPU-s in 5.7 s, both cores busy): the API server
alone needs ~3 s of both cores for 1,000 ScaleTrial creates (6-11 ms of its CPU each, a ConfigMap
of the same bytes 3.9 ms; neither its CEL rules, fieldValidation nor a body without defaults
changes that), so "all trials within 3 s" is beyond this machine. Quieter (2026-12-04, three
runs, load at the start 1.6 / 0.2 / 1.2): first wave 1.4 / 0.6 / 1.3 s, all trials 5.6 / 5.0 /
5.4 s (operator 2.5-2.8 + kube-apiserver 6.1-6.9 + etcd 0.5-0.6 CPU-s until then), Succeeded
43.9-46.9 s, operator RSS peak 148 MiB in each, 3,029 writes. Before the status kept only the
top 20 rows (same bench, py-spy attached, load 3.8 -> 10): 28.0 s / 31.7 s / 426 s, status 262 kB
with 1,000 rows, 4.08 writes per trial; on a quiet machine that version gave 3.5-5.1 s / 5.8 s /
253 kB / 136-139 MiB / 4.04.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml
from kubernetes import client, config
from prometheus_client.parser import text_string_to_metric_families
from tests.cluster.processes import Operator, install
from tests.cluster.standin import InstantStandIn
from tests.harness.controlplane import ControlPlane, start_control_plane

NS = "bench"
NAME = "thousand"
WRITE_VERBS = {"POST", "PUT", "PATCH", "DELETE", "APPLY", "CREATE", "UPDATE"}


def experiment(concurrent: int) -> dict[str, Any]:
    """20 batch sizes × 5 GPU counts × 10 repeats = 1,000 trials, all runnable."""
    return {
        "apiVersion": "scalelab.dev/v1alpha1",
        "kind": "ScaleExperiment",
        "metadata": {"name": NAME},
        "spec": {
            "workload": {"model": "linear", "dataset": "lab1-line", "datasetSize": 1_000_000},
            "sweep": {
                "batchSizes": [2**i * 16 for i in range(10)] + [3 * 2**i * 16 for i in range(10)],
                "gpus": [1, 2, 4, 8, 16],
                "repeats": 10,
            },
            "training": {"maxEpochs": 10},
            "resources": {"gpusPerProcess": 1},
            "execution": {"maxConcurrentTrials": concurrent, "maxGPUs": 4096},
        },
    }


def count(api: client.CustomObjectsApi, group: str, plural: str) -> int:
    """Objects of a kind in the bench namespace, from a one-item page (cheap at any size)."""
    version = "v1alpha1" if group == "scalelab.dev" else "v2beta1"
    page = api.list_namespaced_custom_object(group, version, NS, plural, limit=1)
    return len(page["items"]) + int(page["metadata"].get("remainingItemCount") or 0)


def api_writes(cp: ControlPlane) -> Counter[str]:
    """apiserver_request_total of write verbs, by resource[/subresource]."""
    code, body = cp.get("/metrics")
    assert code == 200
    out: Counter[str] = Counter()
    for family in text_string_to_metric_families(body.decode()):
        if family.name != "apiserver_request":
            continue
        for s in family.samples:
            if s.name.endswith("_total") and s.labels.get("verb") in WRITE_VERBS:
                res = s.labels.get("resource", "")
                sub = s.labels.get("subresource", "")
                out[f"{s.labels['verb']} {res}{'/' + sub if sub else ''}"] += int(s.value)
    return out


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, seconds (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(cp: ControlPlane, operator_pid: int) -> dict[str, float]:
    """CPU seconds so far of the operator, kube-apiserver and etcd."""
    pids = {"operator": operator_pid}
    pids.update(
        {k: v.pid for k, v in cp.procs.items() if k.split("#")[0] in ("kube-apiserver", "etcd")}
    )
    return {k: cpu_seconds(pid) for k, pid in pids.items()}


def cpu_since(start: dict[str, float], now: dict[str, float]) -> str:
    return ", ".join(f"{k} {now[k] - start[k]:.1f}" for k in start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrent", type=int, default=50, help="maxConcurrentTrials (first wave)")
    ap.add_argument("--interval", type=float, default=1.0, help="operator reconcile interval, s")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--dump-status", type=Path, help="write the final status JSON here")
    ap.add_argument(
        "--profile", type=Path, help="py-spy record the operator into this file (speedscope)"
    )
    args = ap.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)

    cp = start_control_plane()
    op: Operator | None = None
    try:
        install(cp)
        cp.kubectl("create", "namespace", NS)
        op = Operator(
            cp,
            cp.workdir,
            env={"SCALELAB_RECONCILE_INTERVAL_SECONDS": str(args.interval)},
        ).start()
        api = client.CustomObjectsApi(config.new_client_from_config(config_file=str(cp.kubeconfig)))
        assert op.proc is not None
        time.sleep(2)
        rss_idle, _ = rss_mib(op.proc.pid)
        before = api_writes(cp)
        standin = InstantStandIn(cp.kubeconfig, NS)
        spy = None
        if args.profile is not None:
            spy = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                 str(op.proc.pid), "--rate", "50", "--format", "speedscope", "--output",
                 str(args.profile), "--nonblocking"],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1)

        cpu0 = cpu_snapshot(cp, op.proc.pid)
        t0 = time.monotonic()
        cp.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump(experiment(args.concurrent)))
        t_trials = t_wave = t_done = None
        while time.monotonic() - t0 < args.timeout:
            elapsed = time.monotonic() - t0
            if t_trials is None and count(api, "scalelab.dev", "scaletrials") >= 1000:
                t_trials = elapsed
                print(f"all 1000 ScaleTrials exist after {t_trials:.1f} s", flush=True)
                cpu = cpu_since(cpu0, cpu_snapshot(cp, op.proc.pid))
                print(f"  CPU seconds until then: {cpu}", flush=True)
            if t_wave is None and count(api, "kubeflow.org", "mpijobs") >= args.concurrent:
                t_wave = elapsed
                print(f"first wave of {args.concurrent} MPIJobs after {t_wave:.1f} s", flush=True)
            if t_wave is not None:
                # Reading the 250 kB experiment is itself load: every 2 s, after the first wave.
                body = api.get_namespaced_custom_object(
                    "scalelab.dev", "v1alpha1", NS, "scaleexperiments", NAME
                )
                if (body.get("status") or {}).get("phase") == "Succeeded":
                    t_done = elapsed
                    break
                time.sleep(1.5)
            time.sleep(0.5)
        rss_now, rss_peak = rss_mib(op.proc.pid)
        cpu_total = cpu_since(cpu0, cpu_snapshot(cp, op.proc.pid))
        standin.stop.set()
        if spy is not None:
            spy.send_signal(2)
            spy.wait(timeout=60)
        if args.dump_status is not None:
            args.dump_status.write_text(json.dumps(body.get("status"), indent=1))
        status = body.get("status") or {}
        status_bytes = len(json.dumps(status, separators=(",", ":")))
        object_bytes = len(json.dumps(body, separators=(",", ":")))
        after = api_writes(cp)
        delta = after - before
        # Not the operator's: the stand-in's, this script's apply, and the controller manager's
        # and scheduler's leader-election lease renewals (the operator runs standalone).
        others = standin.writes + delta["POST scaleexperiments"] + delta["PUT leases"]
        operator_writes = sum(delta.values()) - others
        print(f"experiment Succeeded after {t_done if t_done is None else round(t_done, 1)} s")
        print(f"  CPU seconds in all: {cpu_total}")
        print(f"status: {status_bytes} bytes ({len(status.get('results', []))} result rows); "
              f"whole object {object_bytes} bytes")  # fmt: skip
        print(
            f"operator RSS: idle {rss_idle:.0f} MiB, now {rss_now:.0f} MiB, peak {rss_peak:.0f} MiB"
        )
        per_trial = operator_writes / 1000
        print(
            f"API writes: {sum(delta.values())} total, stand-in {standin.writes}, bench apply and "
            f"leader-election leases {others - standin.writes}, operator+kopf {operator_writes} "
            f"= {per_trial:.3f} per trial"
        )
        for family in text_string_to_metric_families(op.metrics()):
            for sample in family.samples:
                if sample.name.startswith(
                    ("scalelab_operator_reconcile_duration_seconds_", "scalelab_operator_api_")
                ) and not sample.name.endswith("_created"):
                    print(f"  operator {sample.name} {sample.labels} {sample.value:g}")
        for key, value in sorted(delta.items(), key=lambda kv: -kv[1]):
            print(f"  {value:6d}  {key}")
        print(f"control plane RSS MiB: { {k: round(v) for k, v in cp.memory_rss_mib().items()} }")
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if op is not None:
            op.stop()
        cp.stop()
        shutil.rmtree(cp.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
