"""The Kubeflow MPI operator as a host process with the admin kubeconfig (the node tier and the
playground; tests/node/conftest.py says why not a pod), restarted whenever it exits, as its
Deployment's pod would be.

It exits when it cannot renew its leader lease, and it cannot while the API server restarts: the
Kueue harness restarts it once to serve Kueue's visibility API (tests/harness/kueue_visibility.py).
Nothing restarted it before, and MPIJobs that Kueue admitted afterwards never got pods.
"""

from __future__ import annotations

import subprocess
import threading

from tests.harness.controlplane import ControlPlane

#: The kubelet's first restart back-off, as a crashed container of the Deployment would wait.
BACKOFF_SECONDS = 2.0


class MpiOperator(threading.Thread):
    """start() runs the MPI operator (its leader-election lock lives in the namespace
    `mpi-operator`, created here); stop() ends it; `starts` counts how often it ran."""

    def __init__(self, cp: ControlPlane) -> None:
        super().__init__(daemon=True, name="mpi-operator")
        self.cp, self.starts = cp, 0
        self.stopped = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self.argv = [
            str(cp.bin / "mpi-operator"), f"--kubeConfig={cp.kubeconfig}",
            "--monitoring-port=0", "--kube-api-qps=50", "--kube-api-burst=100",
        ]  # fmt: skip

    def start(self) -> None:
        self.cp.kubectl("create", "namespace", "mpi-operator", check=False)
        super().start()

    def run(self) -> None:
        with (self.cp.workdir / "mpi-operator.log").open("ab") as log:
            while not self.stopped.is_set():
                self.starts += 1
                self.proc = subprocess.Popen(
                    self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
                while self.proc.poll() is None and not self.stopped.wait(0.5):
                    pass
                self.stopped.wait(BACKOFF_SECONDS)

    def stop(self) -> None:
        self.stopped.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.join(timeout=15)
