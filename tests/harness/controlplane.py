"""A real Kubernetes control plane for tests: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler as local processes on free loopback ports, RBAC on, no container runtime.

Used by the `control_plane` pytest fixture (tests/harness/fixtures.py) and, for development, by
`python -m tests.harness.controlplane` which starts one and prints its kubeconfig path.
The binaries come from hack/build-control-plane.sh (built once, cached outside the repository).
The start-up follows controller-runtime's envtest (pkg/internal/testing/controlplane).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.ports import free_port, rss_mib, serve_until_interrupted, wait_until

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "hack" / "build-control-plane.sh"

# The apiserver refuses a loopback advertise address and needs one when the host has no default
# route (controller-runtime#669, #1562). It is only written into the `kubernetes` Endpoints and
# never dialled here; 192.0.2.1 is the documentation range (RFC 5737), not a private network.
ADVERTISE_ADDRESS = "192.0.2.1"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"

#: The controllers the API-only tests rely on, and only those (each costs memory and CPU);
#: clusterrole-aggregation fills the bootstrap view/edit/admin roles.
CONTROLLERS = [
    "garbage-collector-controller", "namespace-controller", "serviceaccount-controller",
    "serviceaccount-token-controller", "job-controller", "clusterrole-aggregation-controller",
]  # fmt: skip
#: What pods on a real node need besides: the kube-root-ca.crt ConfigMap every projected token
#: volume mounts, Deployments, Services' endpoints (CoreDNS and kube-proxy read EndpointSlices;
#: the Prometheus Operator's ServiceMonitors discover Endpoints, its default role),
#: the collection of deleted pods, the node lifecycle (taints), and PersistentVolumes: a claim
#: binds to its volume, and both lose the protection finalizers the API server adds once unused
#: (without those controllers a claim, and its namespace, would never finish deleting).
NODE_CONTROLLERS = [
    "root-ca-certificate-publisher-controller", "deployment-controller",
    "replicaset-controller", "endpointslice-controller", "endpoints-controller",
    "pod-garbage-collector-controller",
    "node-lifecycle-controller",  # lifts the not-ready taint the kubelet registers with
    "persistentvolume-binder-controller", "persistentvolume-protection-controller",
    "persistentvolumeclaim-protection-controller",
]  # fmt: skip


@dataclass(frozen=True)
class NodeNetwork:
    """Addresses of the real-node test cluster (tests/harness/cluster.py), all from the RFC 2544
    benchmarking range 198.18.0.0/15 so nothing can be confused with a real network. Not the
    node address 192.0.2.x the first plan named: this VM's own eth0 is 192.0.2.2/24 (gateway
    192.0.2.1), where a node address would shadow a neighbour and be answered by ARP."""

    ip: str = "198.19.255.10"
    pod_cidr: str = "198.18.0.0/20"
    service_cidr: str = "198.19.0.0/20"

    #: What pods route through their gateway: the service range and the node address.
    reachable_from_pods: str = "198.19.0.0/16"

    @property
    def api_service_ip(self) -> str:
        """The `kubernetes` Service's ClusterIP: the first address of the service range."""
        return str(ipaddress.ip_network(self.service_cidr)[1])


def control_plane_bin(*binaries: str) -> Path:
    """The directory holding the built binaries (builds them on first use, minutes): all of them,
    or only `binaries` when named (e.g. "kubectl")."""
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), *binaries], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    return Path(out.strip().splitlines()[-1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(d: Path, extra_sans: tuple[str, ...] = ()) -> None:
    """CA, apiserver serving cert, admin client cert (system:masters), service-account key pair.
    `extra_sans` (e.g. "IP:198.19.255.10") are added to the serving cert's subject alt names."""
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=scalelab-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip
    # Newer Python TLS rejects leaf certificates without an authority key identifier.
    leaf = (
        "basicConstraints=CA:FALSE\nsubjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    (d / "server.ext").write_text(
        leaf + "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "subjectAltName="
        + ",".join(
            [
                "IP:127.0.0.1",
                "DNS:localhost",
                "DNS:kubernetes.default.svc",
                "DNS:kubernetes.default.svc.cluster.local",
                *extra_sans,
            ]
        )
        + "\n"
    )
    (d / "client.ext").write_text(
        leaf + "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
    )
    for name, subject, ext in (
        ("server", "/CN=kube-apiserver", "server.ext"),
        ("admin", "/O=system:masters/CN=scalelab-admin", "client.ext"),
    ):
        _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", "-subj", subject, cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-out", f"{name}.crt", "-extfile", ext,
                 cwd=d)  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


def write_kubeconfig(path: Path, server: str, ca: Path, user: dict[str, str]) -> Path:
    """A kubeconfig (JSON is valid YAML) for one user against one server."""
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "test", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "user"}}],
        "current-context": "test",
    }
    path.write_text(json.dumps(cfg, indent=1))
    return path


@dataclass
class ControlPlane:
    """A running etcd + kube-apiserver (+ controller manager, scheduler) and how to reach it."""

    workdir: Path
    bin: Path
    with_controllers: bool = True
    #: Set by the real-node harness (tests/harness/cluster.py): the API server binds and
    #: advertises this address (pods reach it through the `kubernetes` Service), admits
    #: ServiceAccount tokens into pods, and runs the controllers that pods on a node need.
    node: NodeNetwork | None = None
    port: int = 0
    kubeconfig: Path = field(default=Path())
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    args: dict[str, list[str]] = field(default_factory=dict)  # each component's flags, to restart
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def server(self) -> str:
        return f"https://{self.node.ip if self.node else '127.0.0.1'}:{self.port}"

    @property
    def kubectl_path(self) -> Path:
        return self.bin / "kubectl"

    def _spawn(self, name: str, args: list[str]) -> None:
        self.args[name] = args
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.procs[name] = subprocess.Popen(
            [str(self.bin / name.split("#", maxsplit=1)[0]), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of pytest must not leave orphans half-dead
        )

    def log_tail(self, name: str, lines: int = 40) -> str:
        p = self.workdir / f"{name}.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-lines:]) if p.exists() else ""

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.workdir / "ca.crt"))
        ctx.load_cert_chain(self.workdir / "admin.crt", self.workdir / "admin.key")
        return ctx

    def get(self, path: str) -> tuple[int, bytes]:
        """GET a path as the admin user."""
        try:
            with urllib.request.urlopen(self.server + path, context=self._ssl(), timeout=5) as r:
                return int(r.status), bytes(r.read())
        except urllib.error.HTTPError as e:
            return int(e.code), bytes(e.read())

    def start(self) -> ControlPlane:
        t0 = time.monotonic()
        d = self.workdir
        node = self.node
        make_certificates(d, (f"IP:{node.ip}", f"IP:{node.api_service_ip}") if node else ())
        self.timings["certificates_seconds"] = time.monotonic() - t0

        etcd_port, etcd_peer = free_port(), free_port()
        (d / "etcd").mkdir(mode=0o700)
        self._spawn("etcd", [
            "--name=default", f"--data-dir={d / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync",  # test data; fsync dominates write latency on a shared disk
            "--log-level=warn",
        ])  # fmt: skip

        self.port = free_port()
        self._spawn("kube-apiserver", [
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--bind-address={node.ip if node else '127.0.0.1'}", f"--secure-port={self.port}",
            f"--advertise-address={node.ip if node else ADVERTISE_ADDRESS}",
            f"--cert-dir={d / 'apiserver-certs'}",
            f"--tls-cert-file={d / 'server.crt'}", f"--tls-private-key-file={d / 'server.key'}",
            f"--client-ca-file={d / 'ca.crt'}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={d / 'sa.pub'}",
            f"--service-account-signing-key-file={d / 'sa.key'}",
            f"--service-cluster-ip-range={node.service_cidr if node else '10.0.0.0/24'}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            "--profiling=false",
            *(self._node_apiserver_flags() if node else
              # No kubelets here; envtest disables the ServiceAccount admission plugin likewise.
              ["--disable-admission-plugins=ServiceAccount"]),
        ])  # fmt: skip
        admin = {"client-certificate": str(d / "admin.crt"), "client-key": str(d / "admin.key")}
        self.kubeconfig = write_kubeconfig(d / "admin.kubeconfig", self.server, d / "ca.crt", admin)
        try:
            ready = wait_until(lambda: self.get("/readyz")[0] == 200, 120, "kube-apiserver")
        except TimeoutError:
            raise RuntimeError(
                "kube-apiserver did not become ready:\n" + self.log_tail("kube-apiserver")
            ) from None
        self.timings["apiserver_ready_seconds"] = ready

        if self.with_controllers:
            self._spawn("kube-controller-manager", [
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
                f"--service-account-private-key-file={d / 'sa.key'}",
                f"--root-ca-file={d / 'ca.crt'}",
                "--use-service-account-credentials=false",
                # The controllers the tests rely on, and only those (each costs memory and CPU).
                "--controllers=" + ",".join(CONTROLLERS + (NODE_CONTROLLERS if node else [])),
            ])  # fmt: skip
            self._spawn("kube-scheduler", [
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            ])  # fmt: skip
        self.timings["total_start_seconds"] = time.monotonic() - t0
        return self

    def _node_apiserver_flags(self) -> list[str]:
        d = self.workdir
        return [
            # logs/exec/port-forward dial the kubelet at its InternalIP with the admin identity;
            # by name they would go through the host's resolver, which does not know the node.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={d / 'admin.crt'}",
            f"--kubelet-client-key={d / 'admin.key'}",
        ]

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run the same-version kubectl against this control plane."""
        r = subprocess.run(
            [str(self.kubectl_path), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            input=input, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if check and r.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")
        return r

    def service_account_kubeconfig(
        self, namespace: str, name: str, path: Path | None = None
    ) -> Path:
        """A kubeconfig that authenticates as a ServiceAccount (a real TokenRequest token), so
        the authorizer applies that account's RBAC. The account must exist."""
        token = self.kubectl(
            "create", "token", name, "-n", namespace, "--duration=2h"
        ).stdout.strip()
        path = path or self.workdir / f"sa-{namespace}-{name}.kubeconfig"
        return write_kubeconfig(path, self.server, self.workdir / "ca.crt", {"token": token})

    def restart(self, name: str, down_seconds: float = 0.0, kill: bool = False) -> float:
        """Stop one component (SIGTERM, or SIGKILL with `kill`), keep it down `down_seconds`, and
        start it again with the same flags: the same ports and the same etcd data folder, so its
        clients reconnect to what they knew. Returns the seconds until the API server answers
        /readyz again (the fault tests' "recovered")."""
        p = self.procs[name]
        p.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        time.sleep(down_seconds)
        t0 = time.monotonic()
        self._spawn(name, self.args[name])
        try:
            wait_until(lambda: self.get("/readyz")[0] == 200, 120, f"kube-apiserver after {name}")
        except TimeoutError:
            raise RuntimeError(
                f"the control plane did not recover from a restart of {name}:\n"
                + self.log_tail(name)
            ) from None
        return time.monotonic() - t0

    def memory_rss_mib(self) -> dict[str, float]:
        """Resident memory of each component, MiB."""
        return rss_mib(self.procs)

    def stop(self) -> None:
        """Stop the components in reverse start order, each before the next: the API server
        before etcd (with etcd gone first it ignores SIGTERM for ~25 s)."""
        for p in reversed(list(self.procs.values())):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def start_control_plane(
    workdir: Path | None = None, with_controllers: bool = True, node: NodeNetwork | None = None
) -> ControlPlane:
    """Build (once) and start a control plane in `workdir` (a new temporary folder by default)."""
    d = workdir or Path(tempfile.mkdtemp(prefix="scalelab-cp-"))
    cp = ControlPlane(
        workdir=d, bin=control_plane_bin(), with_controllers=with_controllers, node=node
    )
    try:
        return cp.start()
    except BaseException:
        cp.stop()
        raise


def main() -> None:
    """Start a control plane for development and keep it up until Ctrl-C or SIGTERM."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM during start-up too
    cp = start_control_plane()
    try:
        print(f"export KUBECONFIG={cp.kubeconfig}", flush=True)
        print(f"# kubectl: {cp.kubectl_path}; timings: {cp.timings}", file=sys.stderr, flush=True)
        serve_until_interrupted()
    except KeyboardInterrupt:
        pass  # a SIGTERM before serve_until_interrupted began: the line above makes one likely
    finally:
        cp.stop()
        if os.environ.get("KEEP") != "1":
            shutil.rmtree(cp.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
