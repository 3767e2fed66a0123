"""The fake dcgm-exporter (hack/node/fake-dcgm-exporter) beside the test node, published to the
cluster as the NVIDIA GPU Operator publishes dcgm-exporter: a Service with its endpoints and a
ServiceMonitor (honorLabels, so the pod/namespace/container labels name the GPU's pod, not the
exporter's), which the Prometheus Operator turns into a scrape job like ours.

Used by tests/harness/promop.py's `operated`. The exporter runs as a host process on the node's
address: the node's GPUs are fake, and the node runs on this machine.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from tests.harness.controlplane import REPO
from tests.harness.ports import free_port, wait_until

EXPORTER = REPO / "hack" / "node" / "fake-dcgm-exporter" / "fake_dcgm_exporter.py"
NAMESPACE = "gpu-operator"
NAME = "nvidia-dcgm-exporter"
#: The scrape job the Prometheus Operator makes of the ServiceMonitor below.
JOB = f"serviceMonitor/{NAMESPACE}/{NAME}/"


def start_exporter(ip: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The exporter listening on ip:<free port>; the process and its port."""
    port = free_port()
    log = open(workdir / "fake-dcgm-exporter.log", "wb")  # noqa: SIM115 - process lifetime
    proc = subprocess.Popen(
        [sys.executable, str(EXPORTER), f"--listen={ip}:{port}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"http://{ip}:{port}/metrics", timeout=2):
                return True
        except OSError:
            return False

    wait_until(up, 30, "the fake dcgm-exporter")
    return proc, port


def objects(ip: str, port: int, interval: str) -> list[dict[str, Any]]:
    """Namespace, Service, Endpoints and ServiceMonitor of the exporter at ip:port."""
    labels = {"app": NAME}
    meta = {"name": NAME, "namespace": NAMESPACE, "labels": labels}
    port_spec = {"name": "gpu-metrics", "port": port, "protocol": "TCP"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": {"ports": [port_spec]}},
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": meta,
            "subsets": [{"addresses": [{"ip": ip}], "ports": [port_spec]}],
        },
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": meta,
            "spec": {
                "selector": {"matchLabels": labels},
                "endpoints": [{"port": "gpu-metrics", "interval": interval, "honorLabels": True}],
            },
        },
    ]
