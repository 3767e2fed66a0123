"""Benchmark: a 1,000-point ScaleExperiment against the real control plane and the real operator.

Run: .venv/bin/python bench/operator_1000_points.py [--concurrent 50] [--interval 1]
     [--experiments 1] [--repeats 10] [--running-window S] [--idle-window S]
     [--dump-status FILE] [--profile FILE.speedscope (py-spy, images/requirements/dev.txt)]
     [--tracemalloc FILE (bench/tracemalloc_site: what the operator allocated, at its peak)]

`--experiments N` applies N such experiments at once (thousand-00, thousand-01, ...; 10 of them:
10,000 trials) and reports, for each, when all its trials existed and its status size;
`--repeats R` makes each 100 × R points. `--running-window S` first holds the stand-in back for
S seconds once every trial exists (the first wave's MPIJobs stay Created: N experiments running,
nothing progressing) and reports the operator's API requests per second over that window, from
its own scalelab_operator_api_requests_total. `--idle-window S` reports the same, and the
operator's RSS, over S idle seconds before anything is applied, S seconds after every
experiment Succeeded, and S seconds after restarting the operator with the finished experiments
kept in the cluster (what an operator pod started later holds for them).

Starts etcd + kube-apiserver + controller manager (tests/harness), `kubectl apply -k manifests/`,
the real MPIJob CRD, and `scalelab operator` as its ServiceAccount, importing as in its image:
without the kubernetes client (bench/image_site first on its PYTHONPATH makes the import fail;
this venv has the client for the trainer and the tests, and kopf imports it whenever it can).
Applies a sweep of
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

2026-12-07, with the memory changes (label-selected, paged watches, kopf workers that exit 0.5 s
after their last event, slotted index entries, no plan or pass memory kept for finished
experiments, glibc arenas and trim), on a far busier machine (1-minute load 24-40 on the 2
cores; one run each, no medians): one experiment (load 28 -> 36, before the glibc tuning):
operator RSS idle 106 MiB, peak 160 MiB, 3.062 writes per trial; restarted with it finished,
162 MiB. The same with --tracemalloc (load 37; tracing from once the operator was up): 16.4 MiB
traced at the sampled peak beyond what the imports hold: 4.9 parsed watch events not yet taken
by kopf's workers, 2.2 pydantic (plans, result rows), 1.4 aiohttp buffers, 1.0 copies in
decide, 0.4 the metrics' tuples, 0.2 kopf's per-object memories; the rest of the RSS above idle
is freed memory the allocator keeps. (Snapshots every 2 s then stalled the event loop long
enough for 395 trials to time out as NoResult: the sampler now waits 10 s.) Ten at once
(--experiments 10 --running-window 20, load 34 -> 24): all 10,000 ScaleTrials after 401 s, each
experiment's last one 233-240 s (six) and 397-399 s (four) after the apply, the API server at
its share of the CPUs the limit (86 CPU-s until then); operator RSS idle 107 MiB, peak 165 MiB
through the creates and the first 1,400 trials finished (stopped there: the stand-in finished
~100 trials a minute at that load); API requests 0.10/s idle and 0.10/s with the ten running and
nothing progressing (two Event lists of the prerequisite check in 20 s).

Later that day, quieter (--idle-window 20, load 1.2 -> 6.1, one run): operator RSS idle 107 MiB
at 0.05 API requests/s; all 1,000 ScaleTrials after 7.7 s; Succeeded after 78.9 s; RSS peak
153 MiB, 130 MiB once finished at 0.10 requests/s; 3.031 writes per trial; status 12,835 bytes.
An operator restarted with the finished experiment in the cluster: 189 MiB (peak 198), since it
lists and indexes all 1,000 finished ScaleTrials again. The goals of 120 MiB at the peak and of
an idle replica that does not grow with finished experiments are not met.

Then the operator on lightkube (kube/rest.py) instead of the kubernetes client, whose imports
alone held ~29 MiB (--idle-window 20; three runs, 1-minute load at the start 3.3 / 5.2 / 4.5,
beside two of the code before on the same bench, load 0.9 / 7.9): operator RSS idle 69-70 MiB
(was 107); its high-water mark when the experiment Succeeded 125 / 119 / 92 MiB (was 155 / 155),
and 133 MiB in each run once the finished experiment's results were archived (was 162 / 164: the
archive reads every trial and assembles the results file at once, the peak of the whole run
now); with the experiment finished 93 / 111 / 113 MiB (was 149 / 135); restarted with it kept
155 / 155 / 156 MiB, peak 166 (was 190 / 191, peak 200); 3.032 / 3.033 / 3.038 writes per trial
(was 3.034 / 3.031). Succeeded after 108 / 107 / 167 s (was 83 / 103; load). Still over the
goals: the archive step's peak (133 MiB, goal 120) and a restarted operator (155 MiB, goal 150).

Then with the archive's reads in pages of 200 objects, kept only in what the results file reads,
and a finished experiment's ScaleTrials and MPIJobs retired from the watches once archived
(--idle-window 20; three runs, 1-minute load at the start 5.8 / 4.0 / 7.3, the machine shared
with other benches): operator RSS idle 69 / 70 / 70 MiB at 0.05 requests/s; Succeeded after
269 / 106 / 102 s; peak through the run, the archive and the retire 115 / 114 / 114 MiB (goal
120); the retire's 1,000 ScaleTrial and 1,000 MPIJob label patches done 66 / 79 / 46 s after
Succeeded (so 5 writes per trial in all: 3.03 until Succeeded, then 2); with the experiment
finished 95 / 93 / 99 MiB; restarted with it kept 88 / 88 / 88 MiB (was 155; goal 150) at 0.05
requests/s, as with none. Twenty experiments of 100 points at once (--experiments 20 --repeats 1,
load 5.8): all 2,000 ScaleTrials after 37 s, the last Succeeded after 277 s, peak 129 MiB,
statuses 9.2-9.4 kB, 5.08 writes per trial with the retire; finished 113 MiB; restarted with the
twenty kept 84 MiB at 0.05 requests/s. What a restarted operator then keeps per finished
experiment is its metric series, 520 bytes a result row (bench/finished_metrics_memory.py):
9.9 MiB for twenty finished 1,000-point experiments.
Ten 1,000-point experiments at once on a quiet machine (--experiments 10 --running-window 20
--timeout 480, load 1.0 at the start): all 10,000 ScaleTrials after 48.5 s (each experiment's
last one 28-29 s after the apply for six, 48 s for four; was 401 s at load 34), operator RSS
peak 129 MiB through the creates; 0.15 API requests/s with the ten running and nothing
progressing; then, with the stand-in running them, 4 of 10 Succeeded after 212-462 s and the
run stopped at its timeout: RSS peak 186 MiB (goal 300), largest status 10,683 bytes.
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families
from tests.cluster.processes import Operator, install
from tests.cluster.standin import InstantStandIn
from tests.harness.controlplane import ControlPlane, start_control_plane
from tests.harness.ports import wait_until

from scalelab.kube.mpijob import LABEL_ARCHIVED, LABEL_EXPERIMENT, LABEL_MANAGED_BY, MANAGED_BY

NS = "bench"
NAME = "thousand"
RFC3339 = "%Y-%m-%dT%H:%M:%SZ"
WRITE_VERBS = {"POST", "PUT", "PATCH", "DELETE", "APPLY", "CREATE", "UPDATE"}
TRACEMALLOC_SITE = Path(__file__).resolve().parent / "tracemalloc_site"
#: First on the operator's PYTHONPATH: `import kubernetes` fails there, as in the operator image.
IMAGE_SITE = Path(__file__).resolve().parent / "image_site"


def experiment(name: str, concurrent: int, repeats: int = 10) -> dict[str, Any]:
    """20 batch sizes × 5 GPU counts × `repeats` (10: 1,000 trials), all runnable."""
    return {
        "apiVersion": "scalelab.dev/v1alpha1",
        "kind": "ScaleExperiment",
        "metadata": {"name": name},
        "spec": {
            "workload": {"model": "linear", "dataset": "lab1-line", "datasetSize": 1_000_000},
            "sweep": {
                "batchSizes": [2**i * 16 for i in range(10)] + [3 * 2**i * 16 for i in range(10)],
                "gpus": [1, 2, 4, 8, 16],
                "repeats": repeats,
            },
            "training": {"maxEpochs": 10},
            "resources": {"gpusPerProcess": 1},
            "execution": {"maxConcurrentTrials": concurrent, "maxGPUs": 4096},
        },
    }


def count(api: client.CustomObjectsApi, group: str, plural: str, experiment: str = "") -> int:
    """Objects of a kind in the bench namespace (of one experiment, if named), from a one-item
    page (cheap at any size)."""
    version = "v1alpha1" if group == "scalelab.dev" else "v2beta1"
    selector = f"{LABEL_EXPERIMENT}={experiment}" if experiment else ""
    page: Any = api.list_namespaced_custom_object(
        group, version, NS, plural, limit=1, label_selector=selector
    )
    return len(page["items"]) + int(page["metadata"].get("remainingItemCount") or 0)


def last_created(api: client.CustomObjectsApi, since: float) -> dict[str, float]:
    """Per experiment, seconds from `since` (wall clock) to its newest ScaleTrial's
    creationTimestamp (whole seconds: the API server's resolution). One paged read of every
    trial, once they all exist: a one-item page with a label selector has no item count."""
    for attempt in range(10):
        try:
            return _last_created(api, since)
        except ApiException as error:  # a loaded API server's cache may lag the continue token
            print(f"  listing the trials failed ({error.status}), again ({attempt})", flush=True)
            time.sleep(2)
    return {}


def _last_created(api: client.CustomObjectsApi, since: float) -> dict[str, float]:
    newest: dict[str, float] = {}
    token = None
    while True:
        page: Any = api.list_namespaced_custom_object(
            "scalelab.dev", "v1alpha1", NS, "scaletrials", limit=500, _continue=token
        )
        for item in page["items"]:
            meta = item["metadata"]
            stamp = calendar.timegm(time.strptime(meta["creationTimestamp"], RFC3339))
            name = meta["labels"][LABEL_EXPERIMENT]
            newest[name] = max(newest.get(name, 0.0), stamp - since)
        token = page["metadata"].get("continue")
        if not token:
            return newest


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


def operator_requests(op: Operator) -> Counter[str]:
    """The operator's own count of its API requests, by "client verb resource"."""
    out: Counter[str] = Counter()
    for family in text_string_to_metric_families(op.metrics()):
        for s in family.samples:
            if s.name == "scalelab_operator_api_requests_total":
                labels = s.labels
                out[f"{labels['client']} {labels['verb']} {labels['resource']}"] += int(s.value)
    return out


def operator_writes(op: Operator) -> Counter[str]:
    """The operator's own count of its API writes, by "verb resource"."""
    out: Counter[str] = Counter()
    for family in text_string_to_metric_families(op.metrics()):
        for s in family.samples:
            if s.name == "scalelab_operator_api_writes_total":
                out[f"{s.labels['verb']} {s.labels['resource']}"] += int(s.value)
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


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def start(op: Operator) -> Operator:
    """Start the operator; a traced one may need more than the harness's 60 s to answer."""
    try:
        return op.start()
    except TimeoutError:
        wait_until(op.healthy, 600, "the traced operator's /healthz")
        return op


def pid_of(op: Operator) -> int:
    assert op.proc is not None
    return op.proc.pid


def settle(op: Operator, quiet_cpu: float = 0.2, limit: float = 300.0) -> float:
    """Wait until the operator used under `quiet_cpu` CPU-s in each of three 2-s intervals in a
    row (done with what it listed at start); the seconds waited."""
    t0, last, quiet = time.monotonic(), cpu_seconds(pid_of(op)), 0
    while time.monotonic() - t0 < limit and quiet < 3:
        time.sleep(2)
        now = cpu_seconds(pid_of(op))
        quiet = quiet + 1 if now - last < quiet_cpu else 0
        last = now
    return time.monotonic() - t0


def wait_retired(cp: ControlPlane, op: Operator, timeout: float = 900.0) -> None:
    """Wait until the operator has labelled every ScaleTrial and MPIJob of the finished
    experiments out of its watches (kube/apply.py `retire`); print how long it took after the
    last experiment finished and what it wrote for it."""
    selector = f"{LABEL_MANAGED_BY}={MANAGED_BY},!{LABEL_ARCHIVED}"
    t0, before = time.monotonic(), operator_writes(op)

    def left() -> int:
        out = cp.kubectl("get", "scaletrials,mpijobs", "-n", NS, "-l", selector, "-o", "name")
        return len(out.stdout.split())

    wait_until(lambda: left() == 0, timeout, "the finished experiments' objects to be retired")
    wrote = operator_writes(op) - before
    print(
        f"retired after {time.monotonic() - t0:.0f} s more: "
        f"{', '.join(f'{k} {v}' for k, v in sorted(wrote.items()))}; RSS peak "
        f"{rss_mib(pid_of(op))[1]:.0f} MiB; load {load()}",
        flush=True,
    )


def request_rate(op: Operator, seconds: float, what: str) -> float:
    """Print and return the operator's API requests per second over `seconds` from now."""
    before = operator_requests(op)
    time.sleep(seconds)
    delta = operator_requests(op) - before
    rate = sum(delta.values()) / seconds
    rss_now, rss_peak = rss_mib(pid_of(op))
    print(
        f"{what}: operator API requests {rate:.2f}/s over {seconds:.0f} s "
        f"({', '.join(f'{k} {v}' for k, v in delta.most_common(6)) or 'none'}); "
        f"RSS {rss_now:.0f} MiB (peak {rss_peak:.0f}); load {load()}",
        flush=True,
    )
    return rate


def wait_for_each(
    names: list[str], ready: Callable[[str], bool], timeout: float, what: str, t0: float
) -> dict[str, float]:
    """Seconds since `t0` at which `ready(name)` first held, for each name (printed)."""
    left, at = list(names), {}
    while left and time.monotonic() - t0 < timeout:
        for name in list(left):
            if ready(name):
                at[name] = time.monotonic() - t0
                left.remove(name)
                print(f"  {name}: {what} after {at[name]:.1f} s", flush=True)
        time.sleep(1.0)
    return at


def profiled_env(path: Path | None) -> dict[str, str]:
    """The operator's environment: bench/image_site first on PYTHONPATH (no kubernetes client,
    as in the operator image) and, with `path`, bench/tracemalloc_site profiling it there."""
    sites = [str(TRACEMALLOC_SITE)] if path is not None else []
    pythonpath = os.pathsep.join(
        p for p in (*sites, str(IMAGE_SITE), os.environ.get("PYTHONPATH")) if p
    )
    if path is None:
        return {"PYTHONPATH": pythonpath}
    return {"PYTHONPATH": pythonpath, "SCALELAB_TRACEMALLOC_OUT": str(path.resolve())}


def trace(op: Operator) -> None:
    """Start tracing the operator's allocations (bench/tracemalloc_site)."""
    os.kill(pid_of(op), signal.SIGUSR1)
    time.sleep(1)


def dump_profile(op: Operator, path: Path) -> None:
    """Ask the traced operator for its allocations (SIGUSR2) and wait for the file."""
    path.unlink(missing_ok=True)
    os.kill(pid_of(op), signal.SIGUSR2)
    deadline = time.monotonic() + 120
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(1)
    print(f"tracemalloc profile: {path} ({path.stat().st_size if path.exists() else 0} bytes)")


def arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--concurrent", type=int, default=50, help="maxConcurrentTrials (first wave)")
    ap.add_argument("--interval", type=float, default=1.0, help="operator reconcile interval, s")
    ap.add_argument("--experiments", type=int, default=1, help="experiments applied at once")
    ap.add_argument("--repeats", type=int, default=10, help="repeats: 100 × R points each")
    ap.add_argument("--running-window", type=float, default=0.0, help="s, stand-in held back")
    ap.add_argument("--idle-window", type=float, default=0.0, help="s, idle request rates")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--dump-status", type=Path, help="write the (first) final status JSON here")
    ap.add_argument(
        "--profile", type=Path, help="py-spy record the operator into this file (speedscope)"
    )
    ap.add_argument("--tracemalloc", type=Path, help="the operator's allocations into this file")
    return ap.parse_args()


def names(args: argparse.Namespace) -> list[str]:
    return [NAME] if args.experiments == 1 else [f"{NAME}-{i:02d}" for i in range(args.experiments)]


def run_experiments(
    args: argparse.Namespace, cp: ControlPlane, op: Operator, api: client.CustomObjectsApi
) -> tuple[dict[str, dict[str, Any]], int]:
    """Apply the experiments and run them to the end; their final bodies, the stand-in's writes."""
    points = 100 * args.repeats
    every = names(args)
    standin = None if args.running_window > 0 else InstantStandIn(cp.kubeconfig, NS)
    cpu0 = cpu_snapshot(cp, pid_of(op))
    docs = [experiment(n, args.concurrent, args.repeats) for n in every]
    t0, applied = time.monotonic(), time.time()
    cp.kubectl("apply", "-n", NS, "-f", "-", input=yaml.safe_dump_all(docs))
    total = points * len(every)
    wave = False
    while time.monotonic() - t0 < args.timeout:
        if not wave and count(api, "kubeflow.org", "mpijobs") >= args.concurrent:
            wave = True
            print(f"first wave of {args.concurrent} MPIJobs after {time.monotonic() - t0:.1f} s")
        if count(api, "scalelab.dev", "scaletrials") >= total:
            break
        time.sleep(0.5)
    print(f"all {total} ScaleTrials exist after {time.monotonic() - t0:.1f} s", flush=True)
    created = last_created(api, applied)
    for name in every:
        last = created.get(name, float("nan"))
        print(f"  {name}: its last trial created {last:.0f} s after the apply")
    if created:
        print(f"every experiment's trials exist after {max(created.values()):.0f} s", flush=True)
    print(f"  CPU seconds until then: {cpu_since(cpu0, cpu_snapshot(cp, pid_of(op)))}")
    jobs = count(api, "kubeflow.org", "mpijobs")
    print(f"MPIJobs now: {jobs} (first waves: {args.concurrent} each)", flush=True)
    if standin is None:
        request_rate(op, args.running_window, f"{len(every)} running, nothing progressing")
        standin = InstantStandIn(cp.kubeconfig, NS)
    bodies: dict[str, dict[str, Any]] = {}

    def succeeded(name: str) -> bool:
        body: Any = api.get_namespaced_custom_object(
            "scalelab.dev", "v1alpha1", NS, "scaleexperiments", name
        )
        bodies[name] = body
        return bool((body.get("status") or {}).get("phase") == "Succeeded")

    print("Succeeded:", flush=True)
    done = wait_for_each(every, succeeded, args.timeout, "Succeeded", t0)
    rss_now, rss_peak = rss_mib(pid_of(op))
    print(f"  CPU seconds in all: {cpu_since(cpu0, cpu_snapshot(cp, pid_of(op)))}")
    last = max(done.values(), default=0.0)
    print(f"{len(done)} of {len(every)} Succeeded, the last after {last:.1f} s")
    print(f"operator RSS: now {rss_now:.0f} MiB, peak {rss_peak:.0f} MiB; load {load()}")
    standin.stop.set()
    return bodies, standin.writes


def report_statuses(bodies: dict[str, dict[str, Any]]) -> None:
    sizes = []
    for name, body in bodies.items():
        status = body.get("status") or {}
        status_bytes = len(json.dumps(status, separators=(",", ":")))
        object_bytes = len(json.dumps(body, separators=(",", ":")))
        sizes.append(status_bytes)
        print(f"  {name} status: {status_bytes} bytes ({len(status.get('results', []))} result "
              f"rows); whole object {object_bytes} bytes")  # fmt: skip
    print(f"largest status: {max(sizes, default=0)} bytes")


def report_writes(op: Operator, delta: Counter[str], standin_writes: int, trials: int) -> None:
    # Not the operator's: the stand-in's, this script's apply, and the controller manager's
    # and scheduler's leader-election lease renewals (the operator runs standalone).
    others = standin_writes + delta["POST scaleexperiments"] + delta["PUT leases"]
    operator_writes = sum(delta.values()) - others
    print(
        f"API writes: {sum(delta.values())} total, stand-in {standin_writes}, bench apply and "
        f"leader-election leases {others - standin_writes}, operator+kopf {operator_writes} "
        f"= {operator_writes / trials:.3f} per trial"
    )
    for family in text_string_to_metric_families(op.metrics()):
        for sample in family.samples:
            if sample.name.startswith(
                ("scalelab_operator_reconcile_duration_seconds_", "scalelab_operator_api_writes")
            ) and not sample.name.endswith("_created"):
                print(f"  operator {sample.name} {sample.labels} {sample.value:g}")
    for key, value in sorted(delta.items(), key=lambda kv: -kv[1]):
        print(f"  {value:6d}  {key}")


def main() -> None:
    args = arguments()
    print(f"load average at start: {load()}", flush=True)
    cp = start_control_plane()
    op: Operator | None = None
    try:
        install(cp)
        cp.kubectl("create", "namespace", NS)
        env = {"SCALELAB_RECONCILE_INTERVAL_SECONDS": str(args.interval)}
        op = start(Operator(cp, cp.workdir, env={**env, **profiled_env(args.tracemalloc)}))
        admin = config.new_client_from_config(config_file=str(cp.kubeconfig))  # type: ignore[no-untyped-call]
        api = client.CustomObjectsApi(admin)
        time.sleep(2)
        print(f"operator RSS idle: {rss_mib(pid_of(op))[0]:.0f} MiB", flush=True)
        if args.idle_window > 0:
            print(f"operator settled after {settle(op):.0f} s", flush=True)
            request_rate(op, args.idle_window, "no experiments, idle")
        if args.tracemalloc is not None:
            trace(op)
        before = api_writes(cp)
        spy = None
        if args.profile is not None:
            spy = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                 str(pid_of(op)), "--rate", "50", "--format", "speedscope", "--output",
                 str(args.profile), "--nonblocking"],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1)
        bodies, standin_writes = run_experiments(args, cp, op, api)
        if spy is not None:
            spy.send_signal(2)
            spy.wait(timeout=60)
        if args.tracemalloc is not None:
            dump_profile(op, args.tracemalloc)
        if args.dump_status is not None and bodies:
            args.dump_status.write_text(
                json.dumps(next(iter(bodies.values())).get("status"), indent=1)
            )
        report_statuses(bodies)
        trials = 100 * args.repeats * args.experiments
        report_writes(op, api_writes(cp) - before, standin_writes, trials)
        finished = all(
            (b.get("status") or {}).get("phase") in ("Succeeded", "Failed") for b in bodies.values()
        )
        if finished:
            wait_retired(cp, op)
        else:
            print("not every experiment finished within --timeout: no retire to wait for")
        if args.idle_window > 0:
            time.sleep(5)
            request_rate(
                op, args.idle_window, f"{len(bodies)} finished, the operator that ran them"
            )
            op.stop()
            start(op)
            print(f"restarted operator settled after {settle(op):.0f} s", flush=True)
            request_rate(op, args.idle_window, f"{len(bodies)} finished, a restarted operator")
        print(f"control plane RSS MiB: { {k: round(v) for k, v in cp.memory_rss_mib().items()} }")
        print(f"load average at end: {load()}")
    finally:
        if op is not None:
            op.stop()
        cp.stop()
        shutil.rmtree(cp.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
