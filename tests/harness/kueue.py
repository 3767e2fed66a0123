"""Kueue's controller manager (built by hack/build-kueue.sh) beside a test control plane, with its
admission webhooks served and called by the real API server.

Certificates: the manager runs as a process on this machine, not behind a Service, so Kueue's own
certificate rotation (which writes a Secret for the `kueue-webhook-service` DNS name and patches
the webhook configurations) is turned off (`internalCertManagement.enable: false`). The webhook
server instead serves the control plane's own serving certificate (subject alt name 127.0.0.1,
signed by the test CA), and the release's webhook configurations are rewritten from
`clientConfig.service` to `clientConfig.url: https://127.0.0.1:<port><path>` with the test CA as
`caBundle`; likewise the conversion webhook (`/convert`) that the release's kustomization
patches into five CRDs (they serve v1beta1 and v1beta2, stored as v1beta2). Only the webhooks
of Kueue's own kinds and of MPIJobs are registered: the release's configurations also intercept
Pods, Jobs, Deployments and other frameworks' kinds, which this manager (integrations:
`kubeflow.org/mpijob` only) does not serve.

With its own certificate management off, the manager reads a metrics serving certificate from the
fixed path /etc/kueue/metrics/certs (cmd/kueue/main.go) and exits without one (its metrics server
stays off here). The harness writes the same test certificate there when /etc/kueue does not
exist, and removes /etc/kueue at stop; a machine that has /etc/kueue is refused, not changed.
One harness at a time holds /etc/kueue: `running` first takes a host-wide lock (KUEUE_LOCK), so
the node tier's Kueue tests, which hack/test.sh runs beside the cluster tier's, wait for them.

On the real-node tier (`visibility_ip`: the node address) the manager also serves Kueue's
visibility API, the pending workloads of a queue with their positions, through the API server
(tests/harness/kueue_visibility.py); `wait_for_pods_ready` turns on Kueue's WaitForPodsReady
(a workload whose pods are not all ready in time is evicted and requeued).
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.harness import kueue_visibility
from tests.harness.controlplane import REPO, ControlPlane
from tests.harness.locks import hold, release
from tests.harness.ports import free_port, wait_until

BUILD_SCRIPT = REPO / "hack" / "build-kueue.sh"
#: Where Kueue's manager reads its metrics certificate without internal cert management.
ETC = Path("/etc/kueue")
#: One Kueue harness at a time on this machine: they share ETC (Kueue reads its certificates
#: from there) and the visibility API's certificate folder. hack/test.sh runs the node tier's
#: Kueue tests beside the cluster tier's, so the later one waits for the earlier (minutes).
KUEUE_LOCK = Path("/run/lock/scalelab-kueue.lock")
KUEUE_LOCK_WAIT_SECONDS = 600.0
METRICS_CERTS = ETC / "metrics" / "certs"
NAMESPACE = "kueue-system"
ESTABLISHED = "jsonpath={.status.conditions[?(@.type=='Established')].status}"
#: The webhooks this manager serves: Kueue's own kinds and the MPIJob integration.
SERVED = ("kueue-x-k8s-io", "kubeflow-org-v2beta1-mpijob")
#: The CRDs the release converts through the manager's /convert webhook
#: (config/components/crd/kustomization.yaml).
CONVERTED = ("localqueues", "clusterqueues", "cohorts", "workloads", "multikueueclusters")


def kueue_home() -> Path:
    """The cached Kueue build (binary, CRDs, webhook configurations); builds it once."""
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], check=True, capture_output=True, text=True
    ).stdout
    return Path(out.strip().splitlines()[-1])


def webhook_configurations(release: str, port: int, ca: bytes) -> list[dict[str, Any]]:
    """The release's webhook configurations, pointed at https://127.0.0.1:port and cut to the
    webhooks this manager serves."""
    bundle = base64.b64encode(ca).decode()
    out = []
    for doc in yaml.safe_load_all(release):
        if not doc:
            continue
        hooks = []
        for hook in doc.get("webhooks") or []:
            path = hook["clientConfig"]["service"]["path"]
            if any(s in path for s in SERVED):
                url = f"https://127.0.0.1:{port}{path}"
                hook["clientConfig"] = {"url": url, "caBundle": bundle}
                hooks.append(hook)
        doc["metadata"] = {"name": f"kueue-{doc['metadata']['name']}"}
        doc["webhooks"] = hooks
        out.append(doc)
    return out


def crds(release: str, port: int, ca: bytes) -> list[dict[str, Any]]:
    """The release's CRDs, the converted ones with their conversion webhook at 127.0.0.1:port."""
    out = []
    for doc in yaml.safe_load_all(release):
        if not doc:
            continue
        if doc["spec"]["names"]["plural"] in CONVERTED:
            doc["spec"]["conversion"] = {
                "strategy": "Webhook",
                "webhook": {
                    "clientConfig": {
                        "url": f"https://127.0.0.1:{port}/convert",
                        "caBundle": base64.b64encode(ca).decode(),
                    },
                    "conversionReviewVersions": ["v1"],
                },
            }
        out.append(doc)
    return out


def manager_configuration(
    webhook_port: int,
    health_port: int,
    certs: Path,
    visibility: tuple[str, int] | None = None,
    *,
    wait_for_pods_ready: str | None = None,
    requeue_seconds: int = 1,
) -> dict[str, Any]:
    """Kueue's Configuration (config.kueue.x-k8s.io/v1beta2) for a manager on this machine;
    `visibility`: the visibility server's address and port (else off); `wait_for_pods_ready`:
    the timeout of Kueue's WaitForPodsReady (e.g. "40s"; else off), after which an evicted
    workload is requeued in about `requeue_seconds` (the base of Kueue's exponential backoff)."""
    extra: dict[str, Any] = {}
    if visibility is not None:
        extra["visibilityServer"] = {"bindAddress": visibility[0], "bindPort": visibility[1]}
    if wait_for_pods_ready is not None:
        extra["waitForPodsReady"] = {
            "timeout": wait_for_pods_ready,
            # Requeue soon (Kueue's default base is 60 s; the tests wait for the rerun).
            "requeuingStrategy": {"timestamp": "Eviction", "backoffBaseSeconds": requeue_seconds},
        }
    return {
        **extra,
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": "0"},  # off: the tests read Workloads, not Kueue's metrics
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(certs)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "integrations": {"frameworks": ["kubeflow.org/mpijob"]},
        # The pending-workloads API is an aggregated API server with its own certificate at a
        # fixed path (/visibility): served only where the harness can route to it.
        "featureGates": {"VisibilityOnDemand": visibility is not None},
    }


@dataclass
class Kueue:
    """A running Kueue manager for one control plane (start() / stop())."""

    cp: ControlPlane
    workdir: Path
    home: Path = field(default_factory=Path)
    proc: subprocess.Popen[bytes] | None = None
    visibility_ip: str | None = None  # serve the visibility API at this (non-loopback) address
    wait_for_pods_ready: str | None = None
    requeue_seconds: int = 1
    webhook_port: int = 0
    visibility_port: int = 0
    made_etc: bool = False
    made_visibility: bool = False

    def start(self) -> Kueue:
        self.home = kueue_home()
        ca = (self.cp.workdir / "ca.crt").read_bytes()
        self.webhook_port, health = free_port(), free_port()
        defs = crds((self.home / "crds.yaml").read_text(), self.webhook_port, ca)
        # Too large for client-side apply's last-applied annotation.
        self.cp.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(defs))
        for crd in ("clusterqueues", "localqueues", "resourceflavors", "workloads"):
            wait_until(
                lambda crd=crd: (
                    "True"
                    in self.cp.kubectl(
                        "get", "crd", f"{crd}.kueue.x-k8s.io", "-o", ESTABLISHED
                    ).stdout
                ),
                60,
                f"Kueue CRD {crd} established",
            )
        self.cp.kubectl("create", "namespace", NAMESPACE, check=False)
        certs = self.workdir / "kueue-certs"
        certs.mkdir(exist_ok=True)
        if ETC.exists():
            raise RuntimeError(f"{ETC} exists on this machine: the Kueue harness will not touch it")
        METRICS_CERTS.mkdir(parents=True)
        self.made_etc = True
        for name, src in (("tls.crt", "server.crt"), ("tls.key", "server.key")):
            for folder in (certs, METRICS_CERTS):
                (folder / name).write_bytes((self.cp.workdir / src).read_bytes())
        visibility = None
        if self.visibility_ip is not None:
            if not kueue_visibility.enable(self.cp, self.workdir):
                raise RuntimeError(f"{kueue_visibility.CERT_DIR} exists on this machine")
            self.made_visibility = True
            self.visibility_port = free_port()
            visibility = (self.visibility_ip, self.visibility_port)
        config = self.workdir / "kueue-config.yaml"
        config.write_text(yaml.safe_dump(manager_configuration(
            self.webhook_port, health, certs, visibility,
            wait_for_pods_ready=self.wait_for_pods_ready, requeue_seconds=self.requeue_seconds,
        )))  # fmt: skip
        log = open(self.workdir / "kueue.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            # --kubeconfig, not only $KUBECONFIG: the visibility server's delegated authentication
            # reads the flag (else it looks for an in-cluster account).
            [
                str(self.home / "kueue"),
                f"--config={config}",
                f"--kubeconfig={self.cp.kubeconfig}",
                "--zap-log-level=info",
            ],
            env={**os.environ, "KUBECONFIG": str(self.cp.kubeconfig)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until(self._serving, 120, "Kueue's webhook server")
        except TimeoutError:
            raise RuntimeError("Kueue did not start:\n" + self.log_tail()) from None
        hooks = webhook_configurations(
            (self.home / "webhooks.yaml").read_text(), self.webhook_port, ca
        )
        self.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(hooks))
        if visibility is not None:
            kueue_visibility.register(self.cp, NAMESPACE, *visibility)
        return self

    def _serving(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError("Kueue exited:\n" + self.log_tail())
        with socket.create_connection(("127.0.0.1", self.webhook_port), timeout=1):
            return True

    def log_tail(self, lines: int = 40) -> str:
        p = self.workdir / "kueue.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-lines:]) if p.exists() else ""

    def stop(self) -> None:
        # Without their server, webhooks that fail closed would refuse every later MPIJob.
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            for name in ("kueue-mutating-webhook-configuration",
                         "kueue-validating-webhook-configuration"):  # fmt: skip
                self.cp.kubectl("delete", kind, name, "--ignore-not-found", check=False)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.made_visibility:
            kueue_visibility.disable(self.cp, NAMESPACE)
            self.made_visibility = False
        if self.made_etc:
            shutil.rmtree(ETC, ignore_errors=True)
            self.made_etc = False


@contextlib.contextmanager
def running(cp: ControlPlane, workdir: Path, **options: Any) -> Iterator[Kueue]:
    """A started Kueue (`options`: Kueue's fields, e.g. wait_for_pods_ready), stopped on leaving;
    also after a failed start, so /etc/kueue and the webhooks go (a fixture's body)."""
    lock = hold(KUEUE_LOCK, KUEUE_LOCK_WAIT_SECONDS, "another Kueue harness",
                "the pytest session whose Kueue test runs")  # fmt: skip
    k = Kueue(cp, workdir, **options)
    try:
        yield k.start()
    finally:
        k.stop()
        release(lock)
