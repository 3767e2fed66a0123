"""The scalelab install and the operator process, shared by the cluster tests and the benchmarks."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from tests.harness.controlplane import ControlPlane
from tests.harness.ports import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
OPERATOR_NS, OPERATOR_SA = "scalelab-system", "scalelab-operator"
CRDS = ("scaleexperiments.scalelab.dev", "scaletrials.scalelab.dev", "mpijobs.kubeflow.org")
ESTABLISHED = "jsonpath={.status.conditions[?(@.type=='Established')].status}"


def install(cp: ControlPlane, kustomization: Path = REPO / "manifests") -> ControlPlane:
    """The real MPIJob CRD, then `kubectl apply -k manifests/` (or an overlay of it); waits until
    the CRDs serve. The prerequisite first, as a cluster has it: an operator pod that starts
    before the MPIJob CRD serves can miss it for good (kopf: "Unresolved resources cannot be
    served"), and its trials then never leave Pending."""
    # The MPIJob CRD is too large for client-side apply's last-applied annotation.
    cp.kubectl("apply", "--server-side", "-f", str(cp.bin / "mpijobs-crd.yaml"))
    wait_established(cp, CRDS[2:])
    cp.kubectl("apply", "-k", str(kustomization))
    wait_established(cp, CRDS[:2])
    return cp


def wait_established(cp: ControlPlane, crds: tuple[str, ...]) -> None:
    """Until each CRD is Established. Polled: `kubectl wait --for=condition=Established` fails
    at once (kubectl 1.36: "status.conditions accessor error") while the status has no
    conditions yet, which a busy API server leaves for a moment after the create."""
    for crd in crds:
        wait_until(
            lambda crd=crd: "True" in cp.kubectl("get", "crd", crd, "-o", ESTABLISHED).stdout,
            60,
            f"CRD {crd} established",
        )


class Operator:
    """`python -m scalelab operator -A` as a subprocess with the operator ServiceAccount's token."""

    def __init__(self, cp: ControlPlane, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.cp, self.workdir, self.extra_env = cp, workdir, env or {}
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Operator:
        kubeconfig = self.cp.service_account_kubeconfig(
            OPERATOR_NS, OPERATOR_SA, self.workdir / "operator.kubeconfig"
        )
        env = dict(os.environ)
        env.update(
            KUBECONFIG=str(kubeconfig),
            SCALELAB_RECONCILE_INTERVAL_SECONDS="0.5",
            # Trials run side by side on one machine here: no fixed per-rank metrics ports.
            SCALELAB_TRAINER_METRICS_PORT="0",
            # Trials here report progress within seconds of starting; flag silence quickly.
            SCALELAB_STALL_SECONDS="15",
        )
        env.update(self.extra_env)
        self.starts += 1
        log = open(self.workdir / f"operator-{self.starts}.log", "wb")  # noqa: SIM115 - process lifetime
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "scalelab", "operator", "--all-namespaces",
                f"--metrics-port={self.metrics_port}", f"--liveness-port={self.liveness_port}",
            ],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True,
        )  # fmt: skip
        wait_until(self.healthy, 60, "scalelab operator /healthz")
        return self

    def healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"operator exited {self.proc.returncode}:\n{self.log_tail()}")
        url = f"http://127.0.0.1:{self.liveness_port}/healthz"
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, like a node dying under the operator."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            return str(r.read().decode())

    def log_tail(self, lines: int = 60) -> str:
        path = self.workdir / f"operator-{self.starts}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def local_run(tmp_path: Path, spec_file: Path, timeout: float = 300) -> Path:
    """`scalelab run` of the file on this machine (no report); its results directory."""
    out = tmp_path / "local"
    subprocess.run(
        [sys.executable, "-m", "scalelab", "run", str(spec_file), "--out", str(out), "--no-report"],
        check=True, capture_output=True, cwd=REPO, timeout=timeout,
    )  # fmt: skip
    return out


def local_results(
    tmp_path: Path, spec_file: Path, timeout: float = 300
) -> dict[str, dict[str, Any]]:
    """`scalelab run` of the same file on this machine: trial name → result row of results.json."""
    data = json.loads((local_run(tmp_path, spec_file, timeout) / "results.json").read_text())
    return {t["name"]: t for t in data["trials"]}


def cluster_report(
    cp: ControlPlane, name: str, namespace: str, out: Path
) -> subprocess.CompletedProcess[str]:
    """`scalelab report --experiment NAME -n NS --out DIR` with the admin's kubeconfig."""
    return subprocess.run(
        [sys.executable, "-m", "scalelab", "report", "--experiment", name, "-n", namespace,
         "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
        env={**os.environ, "KUBECONFIG": str(cp.kubeconfig)},
    )  # fmt: skip


#: What differs between two runs of one experiment on two machines: timings and where it ran.
TIMING_TRIAL_KEYS = frozenset(
    {"samplesPerSecond", "seconds", "wallSeconds", "gpuSeconds", "scalingEfficiency",
     "timeToTargetSeconds", "startedAt", "finishedAt", "modelledSeconds", "modelRatio",
     "stepSeconds", "queueSeconds", "times", "deviceSeconds"}
)  # fmt: skip
TIMING_CURVES = frozenset({"seconds", "samplesPerSecond", "stepSeconds"})
TIMING_CRITICAL_BATCH = frozenset({"efficiency"})
HOST_KEYS = frozenset({"host", "updatedAt", "groups", "recommendation", "scalingPredictions"})


def comparable(results: dict[str, Any]) -> dict[str, Any]:
    """A results.json without timings and host fields (the recommendation and the scaling
    predictions are fitted to timings)."""
    out = {k: v for k, v in results.items() if k not in HOST_KEYS}
    if out.get("criticalBatch"):  # its scaling efficiencies are throughput ratios
        out["criticalBatch"] = {
            k: v for k, v in out["criticalBatch"].items() if k not in TIMING_CRITICAL_BATCH
        }
    out["trials"] = [
        {k: v for k, v in t.items() if k not in TIMING_TRIAL_KEYS}
        | {"curves": {k: v for k, v in t["curves"].items() if k not in TIMING_CURVES}}
        for t in results["trials"]
    ]
    return out


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two JSON values differ, field by field (floats to 1e-9 relative)."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(a.keys() | b.keys())
        return [d for k in keys for d in differences(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in differences(x, y, f"{path}[{i}]")
        ]
    if isinstance(a, float) and isinstance(b, float):
        same = math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-300)
    else:
        same = a == b
    return [] if same else [f"{path}: {a!r} vs {b!r}"]
