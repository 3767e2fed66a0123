"""A stand-in for NVIDIA's dcgm-exporter on the test node's fake GPUs (hack/node/fake-gpu-plugin):
serves DCGM_FI_DEV_GPU_UTIL for every device the kubelet allocated, labelled with the pod,
namespace and container holding it as dcgm-exporter labels them with its Kubernetes mapping, so
the dashboard's DCGM panel, the idle-GPU alert and `scalelab report --prometheus` are proven on
real pods.

Started by tests/harness/dcgm.py beside the node; standard library only (run by any Python 3).

Where each part comes from, all node-local as dcgm-exporter's are:
- which device is whose: the kubelet's device-manager checkpoint (device-plugins/
  kubelet_internal_checkpoint: pod UID, container, resource, device IDs), the state that the
  kubelet's pod-resources API, which dcgm-exporter asks, answers from;
- the pod's name and namespace: the kubelet's log directory of the pod (/var/log/pods/
  <namespace>_<name>_<uid>);
- the utilisation: a fake GPU computes on the CPU, so its "utilisation" is the CPU time its
  pod used over the last second, per device the pod holds, as a percentage of one core (its
  cgroup's cpuacct.usage, or cpu.stat on cgroup v2), capped at 100. A stopped trainer reads 0.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RESOURCE = "nvidia.com/gpu"
CGROUP = Path("/sys/fs/cgroup")
HELP = "# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).\n# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n"


@dataclass(frozen=True)
class Allocation:
    """One device held by one container."""

    device: str
    pod_uid: str
    container: str


def allocations(checkpoint: Path) -> list[Allocation]:
    """The devices of RESOURCE the kubelet has allocated, from its checkpoint."""
    try:
        data = json.loads(checkpoint.read_text())["Data"]
    except (OSError, ValueError, KeyError):
        return []
    found = []
    for entry in data.get("PodDeviceEntries") or []:
        if entry.get("ResourceName") != RESOURCE:
            continue
        for ids in (entry.get("DeviceIDs") or {}).values():  # by NUMA node
            for device in ids:
                found.append(Allocation(device, entry["PodUID"], entry["ContainerName"]))
    return found


def pod_names(log_dir: Path) -> dict[str, tuple[str, str]]:
    """Pod UID -> (namespace, name), from the kubelet's per-pod log directories."""
    names = {}
    for d in log_dir.glob("*_*_*"):
        namespace, name, uid = d.name.split("_", 2)
        names[uid] = (namespace, name)
    return names


def pod_cpu_seconds(uid: str) -> float | None:
    """CPU seconds the pod's cgroup has used (cgroup v1 cpuacct, else v2), None if not found
    (or gone while it was looked for: the kubelet removes a deleted pod's cgroups at any time)."""
    try:
        for f in CGROUP.glob(f"cpuacct/kubepods*/**/pod{uid}/cpuacct.usage"):
            return int(f.read_text()) / 1e9
        for f in CGROUP.glob(f"kubepods*/**/pod{uid}/cpu.stat"):
            usage = re.search(r"^usage_usec (\d+)$", f.read_text(), re.MULTILINE)
            return int(usage.group(1)) / 1e6 if usage else None
    except (FileNotFoundError, NotADirectoryError):
        return None
    return None


class Sampler(threading.Thread):
    """Each second: every pod's CPU use over that second, in cores."""

    def __init__(self, checkpoint: Path) -> None:
        super().__init__(daemon=True)
        self.checkpoint = checkpoint
        self.cores: dict[str, float] = {}
        self._last: dict[str, tuple[float, float]] = {}

    def run(self) -> None:
        while True:
            now, cores = time.monotonic(), {}
            for uid in {a.pod_uid for a in allocations(self.checkpoint)}:
                used = pod_cpu_seconds(uid)
                if used is None:
                    continue
                before = self._last.get(uid)
                if before:
                    cores[uid] = max(0.0, (used - before[1]) / (now - before[0]))
                self._last[uid] = (now, used)
            self.cores = cores
            time.sleep(1.0)


def exposition(sampler: Sampler, log_dir: Path, hostname: str) -> str:
    """The metric text: one DCGM_FI_DEV_GPU_UTIL series per allocated device."""
    allocated = allocations(sampler.checkpoint)
    per_pod: dict[str, int] = {}
    for a in allocated:
        per_pod[a.pod_uid] = per_pod.get(a.pod_uid, 0) + 1
    names, lines = pod_names(log_dir), [HELP]
    for a in sorted(allocated, key=lambda a: a.device):
        if a.pod_uid not in names or a.pod_uid not in sampler.cores:
            continue
        namespace, pod = names[a.pod_uid]
        util = min(100.0, 100.0 * sampler.cores[a.pod_uid] / per_pod[a.pod_uid])
        index = a.device.rsplit("-", 1)[-1]
        labels = {
            "gpu": index, "UUID": f"GPU-{a.device}", "device": f"nvidia{index}",
            "modelName": "scalelab fake GPU", "Hostname": hostname,
            "container": a.container, "namespace": namespace, "pod": pod,
        }  # fmt: skip
        text = ",".join(f'{k}="{v}"' for k, v in labels.items())
        lines.append(f"DCGM_FI_DEV_GPU_UTIL{{{text}}} {util:.0f}\n")
    return "".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:9400", help="HOST:PORT of /metrics")
    parser.add_argument(
        "--checkpoint", type=Path,
        default=Path("/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint"),
    )  # fmt: skip
    parser.add_argument("--pod-logs", type=Path, default=Path("/var/log/pods"))
    parser.add_argument("--hostname", default="scalelab-node")
    args = parser.parse_args()
    sampler = Sampler(args.checkpoint)
    sampler.start()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = exposition(sampler, args.pod_logs, args.hostname).encode()
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *a: object) -> None:
            pass

    host, port = args.listen.rsplit(":", 1)
    ThreadingHTTPServer((host, int(port)), Handler).serve_forever()


if __name__ == "__main__":
    main()
