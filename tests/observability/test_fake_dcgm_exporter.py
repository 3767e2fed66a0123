"""The node tier's fake dcgm-exporter (hack/node/fake-dcgm-exporter) maps each device the
kubelet's checkpoint says it allocated to the pod holding it, as dcgm-exporter's Kubernetes
mapping labels it, and reads the pod's CPU use as the device's utilisation; devices of pods it
cannot name, and other resources, are left out."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from tests.observability.scene import ROOT

pytestmark = pytest.mark.unit
EXPORTER = ROOT / "hack" / "node" / "fake-dcgm-exporter" / "fake_dcgm_exporter.py"


def load(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The exporter as a module (hack/ is not a package; dataclasses need it in sys.modules)."""
    spec = importlib.util.spec_from_file_location("fake_dcgm_exporter", EXPORTER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def entry(uid: str, devices: list[str], resource: str = "nvidia.com/gpu") -> dict[str, object]:
    return {"PodUID": uid, "ContainerName": "worker", "ResourceName": resource,
            "DeviceIDs": {"-1": devices}, "AllocResp": ""}  # fmt: skip


def test_each_allocated_gpu_is_labelled_with_its_pod_and_reads_the_pods_cpu_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = load(monkeypatch)
    checkpoint = tmp_path / "kubelet_internal_checkpoint"
    checkpoint.write_text(json.dumps({"Data": {"PodDeviceEntries": [
        entry("u1", ["fake-gpu-1", "fake-gpu-3"]), entry("u2", ["fake-gpu-0"]),
        entry("u3", ["fake-gpu-2"]), entry("u1", ["x"], resource="example.com/fpga"),
    ]}, "Checksum": 0}))  # fmt: skip
    logs = tmp_path / "pods"
    (logs / "team-a_trial-worker-0_u1").mkdir(parents=True)
    (logs / "team-a_idle-worker-0_u2").mkdir()  # u3: no pod directory, not named
    used = {"u1": 0.0, "u2": 5.0, "u3": 0.0}
    monkeypatch.setattr(exporter, "pod_cpu_seconds", lambda uid: used[uid])
    sampler = exporter.Sampler(checkpoint)
    sampler.start()
    time.sleep(1.5)
    used["u1"] += 3.0  # 1.5 cores over the next second, over its two GPUs: 75% each
    time.sleep(1.2)
    text = exporter.exposition(sampler, logs, "node-1")
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert len(lines) == 3, text
    values = {line.split('gpu="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1]) for line in lines}
    assert values["0"] == 0  # a pod whose CPU did not move
    assert 40 <= values["1"] == values["3"] <= 100
    assert 'namespace="team-a",pod="trial-worker-0"' in lines[1]
    assert 'container="worker"' in lines[1]
    assert "DCGM_FI_DEV_GPU_UTIL{" in lines[0]
