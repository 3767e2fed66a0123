"""A playground cluster in one command, for an admin trying scalelab by hand (docs/gpu-pools.md
walks through it): the real one-node cluster of tests/harness/cluster.py with its fake
`nvidia.com/gpu` devices, scalelab installed as a user installs it (the operator as a pod, from
the local-images overlay), the Kubeflow MPI operator, Kueue with its webhooks and its
visibility API, and Prometheus configured by the Prometheus Operator from scalelab's monitors
(tests/harness/promop.py), with the fake GPUs' dcgm-exporter. Prints `export KUBECONFIG=…` once
everything is ready and tears it all down on Ctrl-C or SIGTERM.

    sudo .venv/bin/python -m tests.harness.playground   # or: -m tests.harness.cluster --install

Needs root (containerd, kubelet, iptables) and the builds of hack/build-control-plane.sh,
hack/build-node.sh, hack/build-images.sh, hack/build-kueue.sh, hack/build-prometheus.sh and
hack/build-prometheus-operator.sh (each builds once, then answers from its cache). The MPI
operator, Kueue's manager and Prometheus run as host processes with the admin kubeconfig, as on
the node tier (tests/node/conftest.py says why).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.cluster.processes import install
from tests.harness.cluster import Cluster, start_cluster
from tests.harness.controlplane import REPO, NodeNetwork
from tests.harness.kueue import Kueue, running
from tests.harness.mpi_operator import MpiOperator
from tests.harness.ports import serve_until_interrupted
from tests.harness.prometheus import Prometheus
from tests.harness.promop import operated
from tests.observability.scene import load_generator

OVERLAY = REPO / "tests" / "node" / "local-images"
MONITORING_OVERLAY = REPO / "tests" / "node" / "monitoring"
OPERATOR_NS = "scalelab-system"


@dataclass
class Playground:
    """What `playground` started, for the caller to print and to use."""

    cluster: Cluster
    kueue: Kueue
    mpi_operator: MpiOperator
    prometheus: Prometheus

    @property
    def kubeconfig(self) -> Path:
        return self.cluster.kubeconfig


@contextlib.contextmanager
def playground(workdir: Path) -> Iterator[Playground]:
    """Start everything in `workdir`; stop it all, in reverse order, on leaving."""
    with contextlib.ExitStack() as stack:
        cluster = start_cluster(workdir / "cluster")

        def stop_cluster() -> None:
            left = cluster.stop()
            if left:
                print(f"# teardown left: {left}", file=sys.stderr)

        stack.callback(stop_cluster)
        cp = cluster.cp
        install(cp, OVERLAY)
        (workdir / "kueue").mkdir()
        kueue = stack.enter_context(running(cp, workdir / "kueue", visibility_ip=NodeNetwork().ip))
        # After Kueue: serving its visibility API restarts the API server, and the MPI operator
        # exits when it cannot renew its leader lease (MpiOperator restarts it then).
        mpi = MpiOperator(cp)
        mpi.start()
        stack.callback(mpi.stop)
        cp.kubectl(
            "-n", OPERATOR_NS, "rollout", "status", "deploy/scalelab-operator", "--timeout=300s"
        )
        _, prometheus = stack.enter_context(
            operated(
                cp, MONITORING_OVERLAY, load_generator().rules_text(), workdir / "monitoring",
                NodeNetwork().ip,
            )
        )  # fmt: skip
        yield Playground(cluster, kueue, mpi, prometheus)


def main() -> None:
    """Start the playground and keep it up until Ctrl-C or SIGTERM."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM during start-up too
    workdir = Path(tempfile.mkdtemp(prefix="scalelab-playground-"))
    try:
        with playground(workdir) as p:
            print(f"export KUBECONFIG={p.kubeconfig}", flush=True)
            print(
                f"# kubectl: {p.cluster.cp.kubectl_path}; Kueue: {p.kueue.home.name}; "
                f"Prometheus: {p.prometheus.url}; logs: {workdir}",
                file=sys.stderr,
                flush=True,
            )
            serve_until_interrupted()
    finally:
        if os.environ.get("KEEP") != "1":
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
