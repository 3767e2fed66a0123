"""A real one-node Kubernetes cluster for tests: the control plane of controlplane.py plus a
node that runs real pods — containerd + runc + the CNI bridge, kubelet, kube-proxy, CoreDNS and
a device plugin advertising CPU-backed `nvidia.com/gpu` — every piece a local process with its
state under one per-run folder, and every change to the host undone at teardown.

Used by the `node_cluster` pytest fixture (tests/node/conftest.py) and, for development, by
`python -m tests.harness.cluster`, which prints `export KUBECONFIG=…` first and tears down on
Ctrl-C or SIGTERM. Binaries: hack/build-control-plane.sh and hack/build-node.sh; images:
hack/build-images.sh. The recipe and why each setting is needed: docs/real-node.md.

Network: the node's address is 198.19.255.10, a /32 on `lo` (this kernel has no dummy links; the
address is not a loopback address, which the kubelet refuses), pods and services
come from 198.18.0.0/15 too (RFC 2544); pods have a route to 198.19.0.0/16 (services and the
node) and no default route, and there is no masquerade, so pods have no egress and no traffic can
leave the machine. CoreDNS runs as a host process on the node address and is the pods'
nameserver (kubelet `clusterDNS`); the MPI operator names workers by Service DNS.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.controlplane import (
    REPO,
    ControlPlane,
    NodeNetwork,
    start_control_plane,
)
from tests.harness.locks import hold, release
from tests.harness.ports import free_port, rss_mib, serve_until_interrupted, wait_until

NODE_NAME = "scalelab-node"
BRIDGE = "scalelab-br0"
CNI_NETWORK = "scalelab"
CNI_BIN = Path("/usr/lib/cni")
NETNS_DIR = Path("/run/netns")  # containerd's network namespaces (deleted one by one first)
#: Paths the kubelet and the CNI plugins write whatever --root-dir says; cleaned at teardown.
HOST_PATHS = [
    Path("/var/lib/kubelet"),  # device-plugins/ is a constant of the device-plugin API
    Path("/var/log/pods"),
    Path("/var/log/containers"),
    Path("/var/lib/cni"),  # libcni's result cache
    Path("/run/containerd"),  # shim sockets of the CRI runtime
    NETNS_DIR,
]
#: Kernel settings the node may change: the bridge plugin turns on forwarding, the kubelet sets
#: its "kernel defaults" (protectKernelDefaults is off), kube-proxy tunes conntrack.
SYSCTLS = [
    "net/ipv4/ip_forward", "net/ipv4/conf/all/route_localnet", "vm/overcommit_memory",
    "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops", "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes", "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
]  # fmt: skip
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_NAMES = ("kubepods", "k8s.io")
#: One real node per machine: the node's address, bridge, cgroups and host paths above are
#: fixed, so a second node (a second pytest session, the playground beside the suite) waits here
#: for the first to stop instead of breaking both.
NODE_LOCK = Path("/run/lock/scalelab-node.lock")
NODE_LOCK_WAIT_SECONDS = 1800.0


def _script_output(script: str) -> str:
    """stdout of one of the hack/ build scripts (each builds once, then answers from its cache)."""
    return subprocess.run(
        ["bash", str(REPO / "hack" / script)], check=True, stdout=subprocess.PIPE, text=True
    ).stdout


def node_bin() -> Path:
    """The directory holding kubelet, kube-proxy, coredns and fake-gpu-plugin (built once)."""
    return Path(_script_output("build-node.sh").strip().splitlines()[-1])


def built_images() -> dict[str, Path]:
    """name → image archive from hack/build-images.sh (built once, cached as archives)."""
    pairs = (line.split("=", 1) for line in _script_output("build-images.sh").splitlines())
    return {p[0].strip(): Path(p[1].strip()) for p in pairs if len(p) == 2}


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=120)


@dataclass
class HostSnapshot:
    """What the node changes on the host, read before it starts, so teardown can restore it."""

    node_ip: str = ""
    iptables: dict[str, str] = field(default_factory=dict)
    sysctls: dict[str, str] = field(default_factory=dict)
    existing: set[Path] = field(default_factory=set)
    netns: set[str] = field(default_factory=set)

    @classmethod
    def take(cls, node_ip: str) -> HostSnapshot:
        snap = cls(node_ip=node_ip)
        for tool in ("iptables", "ip6tables"):
            r = _run(f"{tool}-save", check=False)
            snap.iptables[tool] = r.stdout if r.returncode == 0 else ""
        for key in SYSCTLS:
            with contextlib.suppress(OSError):
                snap.sysctls[key] = (Path("/proc/sys") / key).read_text().strip()
        snap.existing = {p for p in HOST_PATHS if p.exists()}
        snap.netns = set(os.listdir(NETNS_DIR)) if NETNS_DIR.exists() else set()
        return snap

    def restore(self) -> list[str]:
        """Undo the node's changes; returns what could not be undone (empty when clean)."""
        problems: list[str] = []
        for tool, saved in self.iptables.items():
            problems += _restore_iptables(tool, saved)
        for key, value in self.sysctls.items():
            path = Path("/proc/sys") / key
            try:
                if path.read_text().strip() != value:
                    path.write_text(value + "\n")
            except OSError as e:
                problems.append(f"sysctl {key}: {e}")
        _run("ip", "link", "delete", BRIDGE, check=False)
        _run("ip", "addr", "delete", f"{self.node_ip}/32", "dev", "lo", check=False)
        if NETNS_DIR.exists():
            for ns in set(os.listdir(NETNS_DIR)) - self.netns:
                _run("ip", "netns", "delete", ns, check=False)
        for p in HOST_PATHS:
            if p in self.existing:
                _clean_inside(p)
            else:
                _unmount_below(p)
                shutil.rmtree(p, ignore_errors=True)
        problems += _remove_cgroups()
        return problems


def _restore_iptables(tool: str, saved: str) -> list[str]:
    """Put the tables back as they were; tables that did not exist before are emptied."""
    if not saved and _run(f"{tool}-save", check=False).returncode != 0:
        return []
    before = {line[1:].strip() for line in saved.splitlines() if line.startswith("*")}
    after = {
        line[1:].strip()
        for line in _run(f"{tool}-save", check=False).stdout.splitlines()
        if line.startswith("*")
    }
    problems = []
    if saved:
        r = subprocess.run(
            [f"{tool}-restore"], input=saved, capture_output=True, text=True, check=False
        )
        if r.returncode != 0:
            problems.append(f"{tool}-restore: {r.stderr.strip()}")
    for table in after - before:
        _run(tool, "-t", table, "-F", check=False)
        _run(tool, "-t", table, "-X", check=False)
    return problems


def _mounts_below(root: Path) -> list[str]:
    prefix = str(root.resolve())
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].encode().decode("unicode_escape")
        if target == prefix or target.startswith(prefix + "/"):
            mounts.append(target)
    return sorted(mounts, key=len, reverse=True)


def _unmount_below(root: Path) -> None:
    """Unmount everything at or below `root`, deepest first (kubelet bind-mounts its root onto
    itself; token volumes are tmpfs under it)."""
    for _ in range(3):
        mounts = _mounts_below(root)
        if not mounts:
            return
        for m in mounts:
            _run("umount", "-l", m, check=False)


def _clean_inside(p: Path) -> None:
    """A host path that existed before the node: only what the node added goes."""
    if p == Path("/var/lib/kubelet"):
        for sock in ("device-plugins/kubelet.sock", "device-plugins/scalelab-fake-gpu.sock"):
            with contextlib.suppress(FileNotFoundError):
                (p / sock).unlink()
    elif p == Path("/var/lib/cni"):
        for f in (p / "results").glob(f"{CNI_NETWORK}-*"):
            f.unlink(missing_ok=True)


def _remove_cgroups() -> list[str]:
    """Remove the kubepods and k8s.io cgroups in every hierarchy, leaves first."""
    left: list[str] = []
    if not CGROUP_ROOT.exists():
        return left
    for hierarchy in CGROUP_ROOT.iterdir():
        for name in CGROUP_NAMES:
            top = hierarchy / name
            if not top.is_dir():
                continue
            dirs = sorted((d for d in top.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts))
            for d in [*dirs, top]:
                try:
                    d.rmdir()
                except OSError:
                    left.append(str(d))
    return left[:5]


@dataclass
class Node:
    """containerd, kubelet, kube-proxy, CoreDNS and the fake GPU plugin for one control plane."""

    cp: ControlPlane
    workdir: Path
    bin: Path
    gpus: int = 4
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    snapshot: HostSnapshot | None = None
    dns_ready_port: int = 0

    @property
    def net(self) -> NodeNetwork:
        assert self.cp.node is not None
        return self.cp.node

    @property
    def containerd_socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.procs[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log_tail(self, name: str, lines: int = 40) -> str:
        p = self.workdir / f"{name}.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-lines:]) if p.exists() else ""

    def _alive(self, name: str) -> None:
        if self.procs[name].poll() is not None:
            raise RuntimeError(f"{name} exited:\n{self.log_tail(name)}")

    def _cni_config(self) -> Path:
        d = self.workdir / "cni" / "net.d"
        d.mkdir(parents=True)
        conf = {
            "cniVersion": "1.0.0",
            "name": CNI_NETWORK,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,  # no egress: nothing from a pod leaves the machine
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.net.pod_cidr}]],
                        # Services and the node address only; no default route (no egress).
                        "routes": [{"dst": self.net.reachable_from_pods}],
                        "dataDir": str(self.workdir / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (d / "10-scalelab.conflist").write_text(json.dumps(conf, indent=1))
        return d

    # --- containerd ----------------------------------------------------------------------
    def _containerd(self) -> None:
        d = self.workdir / "containerd"
        d.mkdir()
        cni_conf = self._cni_config()
        config = f"""version = 2
root = "{d / "root"}"
state = "{d / "state"}"
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{d / "containerd.sock.ttrpc"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/scalelab/pause:3.10"
  # This VM lacks CAP_SYS_RESOURCE: without it every pod sandbox fails with
  # "can't get final child's PID from pipe" (docs/real-node.md).
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d / "runc"}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{cni_conf}"
"""
        (d / "config.toml").write_text(config)
        self._spawn("containerd", ["containerd", "--config", str(d / "config.toml")])
        wait_until(lambda: self.ctr("version").returncode == 0, 30, "containerd")

    def ctr(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "--address", str(self.containerd_socket), "-n", "k8s.io", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )

    def import_images(self, archives: dict[str, Path], timeout: float = 600) -> None:
        """Import image archives into the node's containerd (the kubelet never pulls), each
        within `timeout` seconds."""
        for name, path in archives.items():
            t = time.monotonic()
            r = self.ctr("images", "import", str(path), timeout=timeout)
            if r.returncode != 0:
                raise RuntimeError(f"ctr import {name} ({path}) failed: {r.stderr}")
            self.timings[f"import_{name}_seconds"] = time.monotonic() - t

    # --- kubelet -------------------------------------------------------------------------
    def _kubelet(self) -> None:
        d = self.workdir / "kubelet"
        d.mkdir()
        (d / "resolv.conf").write_text("nameserver 127.0.0.1\n")  # pods use clusterDNS only
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.net.ip,
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(self.cp.workdir / "ca.crt")},
            },
            "authorization": {"mode": "AlwaysAllow"},
            # This host has cgroup v1 (hybrid); kubelet 1.36 refuses it unless told otherwise.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "clusterDNS": [self.net.ip],
            "clusterDomain": "cluster.local",
            "resolvConf": str(d / "resolv.conf"),
            # A full-ish shared disk must not evict test pods or collect their images.
            "evictionHard": {
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "memory.available": "100Mi",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "maxPods": 60,
            "staticPodPath": "",
            "shutdownGracePeriod": "0s",
            # True would refuse this host's values; so the kubelet sets its kernel defaults
            # (vm.overcommit_memory, kernel.panic, ...) and teardown puts them back (SYSCTLS).
            "protectKernelDefaults": False,
        }
        (d / "config.yaml").write_text(json.dumps(config, indent=1))
        self._spawn("kubelet", [
            str(self.bin / "kubelet"),
            f"--config={d / 'config.yaml'}",
            f"--kubeconfig={self.cp.kubeconfig}",
            f"--root-dir={d / 'root'}",
            f"--cert-dir={d / 'pki'}",
            f"--node-ip={self.net.ip}",
            f"--hostname-override={NODE_NAME}",
            "--v=1",
        ])  # fmt: skip

    def _kube_proxy(self) -> None:
        d = self.workdir / "kube-proxy"
        d.mkdir()
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "iptables",
            "clientConnection": {"kubeconfig": str(self.cp.kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "bindAddress": self.net.ip,
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            "clusterCIDR": self.net.pod_cidr,
            # No conntrack sysctl changes: the VM may refuse them, and the defaults suffice.
            "conntrack": {
                "maxPerCore": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
            # Node ports on 127.0.0.1 would need route_localnet=1 on the host.
            "iptables": {"masqueradeAll": False, "localhostNodePorts": False},
        }
        (d / "config.yaml").write_text(json.dumps(config, indent=1))
        self._spawn("kube-proxy", [str(self.bin / "kube-proxy"), f"--config={d / 'config.yaml'}"])

    def _coredns(self) -> None:
        d = self.workdir / "coredns"
        d.mkdir()
        self.dns_ready_port = free_port()
        (d / "Corefile").write_text(f"""\
.:53 {{
    bind {self.net.ip}
    ready 127.0.0.1:{self.dns_ready_port}
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {self.cp.kubeconfig} test
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
""")
        self._spawn("coredns", [str(self.bin / "coredns"), "-conf", str(d / "Corefile")])

    def _node_ready(self) -> bool:
        r = self.cp.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
        if r.returncode != 0:
            return False
        node = json.loads(r.stdout)
        ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"]
        )
        gpus = node["status"].get("allocatable", {}).get("nvidia.com/gpu", "0")
        return ready and int(gpus) == self.gpus

    def start(self, archives: dict[str, Path]) -> Node:
        t0 = time.monotonic()
        self._containerd()
        self.timings["containerd_seconds"] = time.monotonic() - t0
        t = time.monotonic()
        self.import_images(archives)
        self.timings["image_import_seconds"] = time.monotonic() - t
        self._coredns()
        self._kube_proxy()
        self._kubelet()
        wait_until(lambda: self.cp.kubectl("get", "node", NODE_NAME, check=False).returncode == 0,
                   60, "node registration")  # fmt: skip
        self._spawn("fake-gpu-plugin", [str(self.bin / "fake-gpu-plugin"), f"--count={self.gpus}"])
        try:
            wait_until(self._node_ready, 90, "node Ready with fake GPUs")
        except TimeoutError:
            raise RuntimeError(
                "node not Ready:\n"
                + self.log_tail("kubelet")
                + "\n--- fake-gpu-plugin\n"
                + self.log_tail("fake-gpu-plugin")
            ) from None
        for name in self.procs:
            self._alive(name)
        wait_until(lambda: _http_ok(f"http://127.0.0.1:{self.dns_ready_port}/ready"), 60, "coredns")
        self.timings["node_ready_seconds"] = time.monotonic() - t0
        return self

    def drain(self) -> None:
        """Delete every pod (so the kubelet unmounts volumes and containerd stops shims)."""
        self.cp.kubectl(
            "delete", "pods", "--all", "-A", "--grace-period=1", "--wait=true", "--timeout=60s",
            check=False,
        )  # fmt: skip

    def stop(self) -> list[str]:
        """Stop the node's processes and restore the host; returns what was left behind."""
        for name in ("fake-gpu-plugin", "kubelet", "kube-proxy", "coredns"):
            _terminate(self.procs.get(name))
        # Containers outlive the kubelet: kill what containerd still runs, then containerd.
        if "containerd" in self.procs and self.procs["containerd"].poll() is None:
            tasks = self.ctr("tasks", "ls", "-q").stdout.split()
            for cid in tasks:
                self.ctr("tasks", "kill", "-s", "SIGKILL", cid)
            for cid in tasks:
                self.ctr("tasks", "delete", "-f", cid)
            _terminate(self.procs.get("containerd"))
        # Shims whose task could not be deleted would keep running without their containerd.
        _run("pkill", "-KILL", "-f", f"containerd-shim.*-address {self.containerd_socket}",
             check=False)  # fmt: skip
        if shutil.which(str(self.bin / "kube-proxy")):
            _run(str(self.bin / "kube-proxy"), "--cleanup", check=False)
        _unmount_below(self.workdir)
        # The image store holds every imported image unpacked (16 GB with the CUDA image), made
        # again from the cached archives by the next node: deleted once nothing is mounted in it,
        # so that kept test directories do not fill the disk.
        store = self.workdir / "containerd" / "root"
        if not _mounts_below(store):
            shutil.rmtree(store, ignore_errors=True)
        problems = self.snapshot.restore() if self.snapshot else []
        return problems

    def memory_rss_mib(self) -> dict[str, float]:
        """Resident memory of each node process, MiB."""
        return rss_mib(self.procs)


def _http_ok(url: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(url, timeout=2) as r:
        return int(r.status) == 200


def _terminate(p: subprocess.Popen[bytes] | None, timeout: float = 20) -> None:
    if p is None or p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


@dataclass
class Cluster:
    """A control plane and its one real node."""

    cp: ControlPlane
    node: Node
    images: dict[str, Path]  # every built image's archive, imported or left for later
    lock: int = -1  # the NODE_LOCK descriptor, closed (released) by stop()

    @property
    def kubeconfig(self) -> Path:
        return self.cp.kubeconfig

    def stop(self) -> list[str]:
        self.node.drain()
        problems = self.node.stop()
        self.cp.stop()
        release(self.lock)
        self.lock = -1
        return problems


def _node_lock(wait: float = NODE_LOCK_WAIT_SECONDS) -> int:
    """Hold NODE_LOCK (a descriptor to close), waiting at most `wait` seconds for another node."""
    return hold(NODE_LOCK, wait, "another real-node cluster",
                "its pytest session or `python -m tests.harness.cluster`")  # fmt: skip


def start_cluster(
    workdir: Path | None = None, gpus: int = 4, later: tuple[str, ...] = ()
) -> Cluster:
    """Build (once) and start a control plane and a real node in `workdir`, with every built
    image imported but those named in `later` (the caller imports them: Node.import_images)."""
    if os.geteuid() != 0:
        raise RuntimeError("the real-node cluster needs root (containerd, kubelet, iptables)")
    d = workdir or Path(tempfile.mkdtemp(prefix="scalelab-cluster-"))
    archives = built_images()
    nbin = node_bin()
    lock = _node_lock()
    try:
        cluster = _start_locked(d, {n: a for n, a in archives.items() if n not in later}, nbin,
                                gpus, lock)  # fmt: skip
    except BaseException:
        release(lock)
        raise
    cluster.images = archives
    return cluster


def _start_locked(d: Path, archives: dict[str, Path], nbin: Path, gpus: int, lock: int) -> Cluster:
    net = NodeNetwork()
    snapshot = HostSnapshot.take(net.ip)
    # The node address exists before the API server, which binds it.
    _run("ip", "addr", "replace", f"{net.ip}/32", "dev", "lo")
    (d / "control-plane").mkdir(parents=True)
    try:
        cp = start_control_plane(d / "control-plane", node=net)
    except BaseException:
        snapshot.restore()
        raise
    node = Node(cp=cp, workdir=d / "node", bin=nbin, gpus=gpus, snapshot=snapshot)
    node.workdir.mkdir(parents=True)
    try:
        node.start(archives)
    except BaseException:
        node.stop()
        cp.stop()
        raise
    return Cluster(cp=cp, node=node, images=archives, lock=lock)


def main() -> None:
    """Start a cluster for development and keep it up until Ctrl-C or SIGTERM; `--install`: with
    scalelab, the MPI operator, Kueue and Prometheus running on it (tests/harness/playground.py)."""
    if "--install" in sys.argv[1:]:
        from tests.harness import playground  # here: playground imports this module

        playground.main()
        return
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM during start-up too
    workdir = Path(tempfile.mkdtemp(prefix="scalelab-cluster-"))
    try:
        c = start_cluster(workdir)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    try:
        print(f"export KUBECONFIG={c.kubeconfig}", flush=True)
        print(
            f"# kubectl: {c.cp.kubectl_path}; node timings: {c.node.timings}",
            file=sys.stderr,
            flush=True,
        )
        serve_until_interrupted()
    except KeyboardInterrupt:
        pass  # a SIGTERM before serve_until_interrupted began: the line above makes one likely
    finally:
        left = c.stop()
        if left:
            print(f"# teardown left: {left}", file=sys.stderr)
        if os.environ.get("KEEP") != "1":
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
