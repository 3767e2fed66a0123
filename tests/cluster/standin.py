"""A test stand-in for the Kubeflow MPI operator and the kubelet: it runs MPIJobs on this machine.

It watches MPIJobs (as the admin, like the MPI operator's own account), and for each new one runs
the launcher container's exact trainer command — `mpirun -np N <flags> python -m scalelab_trainer
<flags>` becomes what `scalelab run` would run (planner.local_command: horovodrun over Gloo, plain
`python` for N = 1) — with KUBECONFIG holding a token of the worker pods' ServiceAccount, so rank
0's status patches go through RBAC exactly as in a pod. It writes the MPIJob's status the way
mpi-operator v0.8.0 does (pkg/controller/mpi_job_controller.go, updateMPIJobStatus): Created, then
Running, then Succeeded (reason MPIJobSucceeded) or Failed (the launcher Job's reason,
BackoffLimitExceeded or DeadlineExceeded, with the last failed pod's message); it retries the
launcher `runPolicy.backoffLimit` times and kills it after `activeDeadlineSeconds`.

`fail` names trials whose "container" exits 1 with a message instead of running the trainer (a
crashing image), `hang` trials that sleep silently (a hung allreduce), `unpullable` trials whose
image the "kubelet" cannot pull: their MPIJob stays Created and the Events kubelet 1.36 writes
about worker 0 (Warning `Failed` "Failed to pull image …" and "Error: ErrImagePull", Normal
`BackOff` "Back-off pulling image …") are written every 2 s until the name is removed, then they
run.
`InstantStandIn` finishes the MPIJobs of one namespace at once, with a made-up result, for
sweeps of hundreds of trials.
Suspended MPIJobs (Kueue) only get the Suspended condition, as mpi-operator v0.8.0 writes it;
once unsuspended (Kueue admitted them) they run. A running MPIJob suspended again (Kueue preempted
it) has its launcher stopped with SIGTERM, as deleting its pods does, shows Suspended, and runs
from the start once unsuspended (a new pod: nothing of the first run is kept). A deleted MPIJob's
launcher is stopped the same way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from scalelab import planner
from tests.harness.controlplane import REPO
from tests.harness.horovod import quiet_env

GROUP, VERSION, PLURAL = "kubeflow.org", "v2beta1", "mpijobs"
MERGE = "application/merge-patch+json"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(kind: str, reason: str, message: str) -> dict[str, str]:
    return {"type": kind, "status": "True", "reason": reason, "message": message,
            "lastTransitionTime": _now()}  # fmt: skip


def local_command(launcher: list[str], python: str = sys.executable) -> tuple[int, list[str]]:
    """(N, argv on this machine) for the launcher's `mpirun -np N ... python -m ...` command
    (under Kueue after `sh -c WAIT_FOR_WORKERS sh`: the stand-in's workers are always there)."""
    assert "mpirun" in launcher, launcher
    launcher = launcher[launcher.index("mpirun") :]
    processes = int(launcher[launcher.index("-np") + 1])
    program = launcher[launcher.index("python") :]
    program[0] = python
    return processes, planner.local_command(processes, program, python)


@dataclass
class Run:
    """One launcher attempt the stand-in made."""

    job: str
    namespace: str
    argv: list[str]
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""


@dataclass
class StandIn:
    """Runs every MPIJob it sees, until stopped."""

    admin_kubeconfig: Path
    token_kubeconfig: Callable[[str, str], Path]  # (namespace, service account) → kubeconfig
    fail: dict[str, str] = field(default_factory=dict)  # trial/job name → failure message
    ignore: set[str] = field(default_factory=set)  # namespaces left to another controller
    hang: set[str] = field(default_factory=set)  # trial/job names whose "container" hangs
    unpullable: dict[str, str] = field(default_factory=dict)  # trial/job name → image
    #: trial/job name → seconds its first attempt's pods take to be ready (Running) after it
    #: is created or admitted, e.g. longer than Kueue's WaitForPodsReady timeout
    slow_start: dict[str, float] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    uids: dict[str, set[str]] = field(default_factory=dict)  # "ns/name" → uids seen
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _procs: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    _started: set[str] = field(default_factory=set)
    _preempted: set[str] = field(default_factory=set)  # running, then suspended: stopping
    _resumed_at: dict[str, int] = field(default_factory=dict)  # key → resourceVersion resumed
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> StandIn:
        self.api = client.CustomObjectsApi(
            config.new_client_from_config(config_file=str(self.admin_kubeconfig))
        )
        thread = threading.Thread(target=self._watch, name="standin-watch", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            procs = list(self._procs.values())
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        for t in self._threads:
            t.join(timeout=10)

    def runs_of(self, job: str) -> list[Run]:
        return [r for r in self.runs if r.job == job]

    def not_made_and_run_once(self, namespace: str, jobs: list[dict[str, Any]]) -> list[str]:
        """The names of `jobs` (MPIJob objects) created under more than one UID or run more or
        less than once: a duplicate the operator made, or a launch lost."""
        names = [j["metadata"]["name"] for j in jobs]
        return [
            n for n in names if len(self.uids[f"{namespace}/{n}"]) != 1 or len(self.runs_of(n)) != 1
        ]

    # ------------------------------------------------------------------------------ watching

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                stream = watch.Watch().stream(
                    self.api.list_cluster_custom_object, GROUP, VERSION, PLURAL, timeout_seconds=5
                )
                for event in stream:
                    if self._stop.is_set():
                        return
                    self._on(event["type"], event["object"])
            except Exception as e:  # the API server may be restarting between tests
                print(f"standin: watch error {e!r}", file=sys.stderr)
                time.sleep(0.5)

    def _on(self, kind: str, job: dict[str, Any]) -> None:
        meta = job["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        if meta["namespace"] in self.ignore:
            return
        with self._lock:
            self.uids.setdefault(key, set()).add(meta["uid"])
        if kind == "DELETED":  # its pods go with it (garbage collection)
            with self._lock:
                running = key in self._started
            if running:
                self._preempt(key)
            return
        if kind not in ("ADDED", "MODIFIED"):
            return
        conditions = {
            c["type"]: c["status"] for c in (job.get("status") or {}).get("conditions", [])
        }
        if conditions.get("Succeeded") == "True" or conditions.get("Failed") == "True":
            return
        if (job["spec"].get("runPolicy") or {}).get("suspend"):
            with self._lock:
                running = key in self._started
                # (an event older than the resume its thread already saw is stale news)
                stale = int(meta["resourceVersion"]) <= self._resumed_at.get(key, 0)
            if running and not stale:  # preempted: its thread stops the launcher, waits, reruns
                self._preempt(key)
            elif conditions.get("Suspended") != "True":  # as mpi-operator marks a suspended job
                self._status(job, [_condition("Suspended", "MPIJobSuspended", "suspended")])
            return
        with self._lock:
            if key in self._started:
                return
            self._started.add(key)
        thread = threading.Thread(
            target=self._run_job, args=(job,), name=f"standin-{key}", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    # ------------------------------------------------------------------------------- running

    def _status(self, job: dict[str, Any], conditions: list[dict[str, str]], **extra: Any) -> None:
        meta = job["metadata"]
        body = {"status": {"conditions": conditions, **extra}}
        deadline = time.monotonic() + 90  # as the MPI operator's work queue retries: through
        while not self._stop.is_set():  # an API server or etcd restart too
            try:
                self.api.patch_namespaced_custom_object_status(
                    GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], body,
                    _content_type=MERGE, _request_timeout=10,
                )  # fmt: skip
                return
            except Exception as e:
                if isinstance(e, ApiException) and e.status == 404:
                    return  # garbage-collected meanwhile
                if time.monotonic() > deadline:
                    print(f"standin: status of {meta['name']} not written: {e!r}", file=sys.stderr)
                    return
                time.sleep(0.5)

    def _preempt(self, key: str) -> None:
        with self._lock:
            self._preempted.add(key)
            proc = self._procs.get(key)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the kubelet's first word to a deleted pod

    def _run_job(self, job: dict[str, Any]) -> None:
        """Run the job to its end; while Kueue holds it after a preemption, wait and rerun."""
        current: dict[str, Any] | None = job
        while current is not None and not self._stop.is_set():
            if not self._run_once(current):
                return
            current = self._resumed(current)

    def _resumed(self, job: dict[str, Any]) -> dict[str, Any] | None:
        """The job once it is unsuspended (Kueue readmitted it); None once gone or stopping."""
        meta = job["metadata"]
        while not self._stop.is_set():
            try:
                now = self.api.get_namespaced_custom_object(
                    GROUP, VERSION, meta["namespace"], PLURAL, meta["name"]
                )
            except ApiException as e:
                if e.status == 404:
                    return None
                time.sleep(0.5)  # the API server may be restarting
                continue
            if not (now["spec"].get("runPolicy") or {}).get("suspend"):
                key = f"{meta['namespace']}/{meta['name']}"
                with self._lock:
                    self._resumed_at[key] = int(now["metadata"]["resourceVersion"])
                    self._preempted.discard(key)
                return dict(now)
            time.sleep(0.5)
        return None

    def _is_preempted(self, namespace: str, name: str) -> bool:
        with self._lock:
            return f"{namespace}/{name}" in self._preempted

    def _run_once(self, job: dict[str, Any]) -> bool:
        """Run the job's launcher until it ends (False) or Kueue preempts it (True)."""
        meta, spec = job["metadata"], job["spec"]
        name, namespace = meta["name"], meta["namespace"]
        run_policy = spec.get("runPolicy") or {}
        backoff = int(run_policy.get("backoffLimit", 6))
        deadline = float(run_policy.get("activeDeadlineSeconds") or 3600)
        launcher = spec["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
        worker = spec["mpiReplicaSpecs"]["Worker"]["template"]["spec"]
        account = worker.get("serviceAccountName", "default")
        created = {
            "type": "Created", "status": "True", "reason": "MPIJobCreated",
            "message": f"MPIJob {namespace}/{name} is created.", "lastTransitionTime": _now(),
        }  # fmt: skip
        self._status(job, [created])
        while name in self.unpullable and not self._stop.is_set():
            self._pull_failed(namespace, f"{name}-worker-0", self.unpullable.get(name, ""))
            time.sleep(2)
        until = time.monotonic() + self.slow_start.pop(name, 0.0)
        while time.monotonic() < until and not self._stop.is_set():
            if self._is_preempted(namespace, name):  # suspended before its pods were ready
                suspended = _condition("Suspended", "MPIJobSuspended", "MPIJob suspended")
                self._status(job, [created, suspended])
                return True
            time.sleep(0.2)
        kubeconfig = self._token(namespace, account)
        start = _now()
        running = {
            "type": "Running", "status": "True", "reason": "MPIJobRunning",
            "message": f"MPIJob {namespace}/{name} is running.", "lastTransitionTime": start,
        }  # fmt: skip
        self._status(job, [created, running], startTime=start)
        started = time.monotonic()
        outcome, message = "BackoffLimitExceeded", ""
        for _ in range(backoff + 1):
            remaining = deadline - (time.monotonic() - started)
            if remaining <= 0:
                outcome = "DeadlineExceeded"
                break
            run = None
            if not self._is_preempted(namespace, name):
                run = self._attempt(name, namespace, launcher["command"], kubeconfig, remaining)
            if run is None or self._is_preempted(namespace, name):
                # as mpi-operator v0.8.0 shows a suspended job that was running
                stopped = {**running, "status": "False", "reason": "MPIJobSuspended",
                           "lastTransitionTime": _now()}  # fmt: skip
                suspended = _condition("Suspended", "MPIJobSuspended", "MPIJob suspended")
                self._status(job, [created, stopped, suspended])
                return True
            if run.returncode == 0:
                outcome = "Succeeded"
                break
            if self._stop.is_set():
                return False
            if run.returncode is None:
                outcome, message = (
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                )
                break
            message = (run.stderr.strip().splitlines() or [f"exit code {run.returncode}"])[-1]
        end = _now()
        stopped = {**running, "status": "False", "lastTransitionTime": end}
        if outcome == "Succeeded":
            final = {
                "type": "Succeeded", "status": "True", "reason": "MPIJobSucceeded",
                "message": f"MPIJob {namespace}/{name} successfully completed.",
                "lastTransitionTime": end,
            }  # fmt: skip
        else:
            text = (
                "Job has reached the specified backoff limit"
                if outcome.startswith("Backoff")
                else ""
            )
            final = {
                "type": "Failed", "status": "True",
                "reason": f"{outcome}/Error" if outcome.startswith("Backoff") else outcome,
                "message": f"{text}: {message}" if text else message, "lastTransitionTime": end,
            }  # fmt: skip
        self._status(job, [created, stopped, final], completionTime=end)
        return False

    def _pull_failed(self, namespace: str, pod: str, image: str) -> None:
        """The Warning Events a kubelet writes about a pod whose image it cannot pull."""
        core = client.CoreV1Api(self.api.api_client)
        for reason, message in (
            ("Failed", f'Failed to pull image "{image}": rpc error: code = NotFound desc = '
                       f"failed to pull and unpack image: {image}: not found"),
            ("Failed", "Error: ErrImagePull"),
            ("BackOff", f'Back-off pulling image "{image}"'),  # a Normal Event in 1.36
        ):  # fmt: skip
            event = {
                "metadata": {"generateName": f"{pod}.", "namespace": namespace},
                "involvedObject": {"kind": "Pod", "name": pod, "namespace": namespace,
                                   "apiVersion": "v1", "fieldPath": "spec.containers{worker}"},
                "reason": reason, "message": message,
                "type": "Normal" if reason == "BackOff" else "Warning",
                "source": {"component": "kubelet", "host": "standin"},
                "firstTimestamp": _now(), "lastTimestamp": _now(), "count": 1,
            }  # fmt: skip
            try:
                core.create_namespaced_event(namespace, event)
            except Exception as e:  # a test's namespace may be going away
                print(f"standin: event not written: {e!r}", file=sys.stderr)

    def _token(self, namespace: str, account: str) -> Path:
        for _ in range(100):
            try:
                return self.token_kubeconfig(namespace, account)
            except RuntimeError:  # the operator creates the account; it may still be coming
                time.sleep(0.2)
        return self.token_kubeconfig(namespace, account)

    def _attempt(
        self, name: str, namespace: str, launcher: list[str], kubeconfig: Path, timeout: float
    ) -> Run:
        if name in self.fail:
            argv = [sys.executable, "-c", f"import sys; sys.exit({self.fail[name]!r})"]
        elif name in self.hang:  # a hung collective: alive, silent, never finishing
            argv = [sys.executable, "-c", "import time; time.sleep(3600)"]
        else:
            _, argv = local_command(launcher)
        run = Run(job=name, namespace=namespace, argv=argv)
        self.runs.append(run)
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=quiet_env({"KUBECONFIG": str(kubeconfig)}),
            start_new_session=True,
            cwd=REPO,  # the tests' own workloads import from here (tests/cluster/paced.py)
        )
        with self._lock:
            self._procs[f"{namespace}/{name}"] = proc
        try:
            run.stdout, run.stderr = proc.communicate(timeout=timeout)
            run.returncode = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            run.stdout, run.stderr = proc.communicate()
            run.returncode = None
        return run


class InstantStandIn:
    """For sweeps too big to run the trainer for: each new MPIJob in `namespace` "runs" at once
    (the trial's result is patched as rank 0 would, then the MPIJob is marked Succeeded as the
    MPI operator would). Used by bench/operator_1000_points.py and the compact-status test; the
    session's StandIn must ignore the namespace. `writes` counts its own API writes."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.api = client.CustomObjectsApi(
            config.new_client_from_config(config_file=str(kubeconfig))
        )
        self.namespace = namespace
        self.pool = ThreadPoolExecutor(max_workers=8)
        self.done: set[str] = set()
        self.writes = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        threading.Thread(target=self._watch, name="instant-standin", daemon=True).start()

    @staticmethod
    def result(name: str) -> dict[str, Any]:
        """The result a trial named `name` reports (fixed per name, different across names)."""
        digest = sum(name.encode())  # not hash(): the same in every process
        return {
            "phase": "Succeeded", "reason": "converged", "epochs": 10, "steps": 1234,
            "finalLoss": 0.5 + digest % 1000 / 1e4, "samplesPerSecond": 1e4 + digest % 5000,
            "seconds": 3.21 + digest % 100 / 100, "params": {"w": 10.01, "b": 1.99},
        }  # fmt: skip

    def _watch(self) -> None:
        while not self.stop.is_set():
            try:
                for event in watch.Watch().stream(
                    self.api.list_namespaced_custom_object,
                    GROUP, VERSION, self.namespace, PLURAL, timeout_seconds=5,
                ):  # fmt: skip
                    name = event["object"]["metadata"]["name"]
                    with self.lock:
                        if name in self.done:
                            continue
                        self.done.add(name)
                    self.pool.submit(self._finish, name)
            except Exception as e:  # the watch times out or the server hiccups: re-list
                print(f"instant standin: {e!r}", file=sys.stderr)

    def _finish(self, name: str) -> None:
        self.api.patch_namespaced_custom_object_status(
            "scalelab.dev", "v1alpha1", self.namespace, "scaletrials", name,
            {"status": {"result": self.result(name)}}, _content_type=MERGE,
        )  # fmt: skip
        now = _now()
        conditions = [
            {"type": kind, "status": "True", "reason": f"MPIJob{kind}", "lastTransitionTime": now}
            for kind in ("Created", "Succeeded")
        ]
        self.api.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, PLURAL, name,
            {"status": {"conditions": conditions, "completionTime": now}}, _content_type=MERGE,
        )  # fmt: skip
        with self.lock:
            self.writes += 2
