"""bench/gpu_check.sh --dry: the prepared GPU check runs end to end on the CPU with tiny shapes
(the bare Horovod loop and our trainer, every configuration), so the script cannot rot while no
GPU runs it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.horovod

REPO = Path(__file__).resolve().parents[2]
CONFIGS = ("float32", "float16", "float32+xla", "float16+xla")


def test_the_gpu_check_runs_end_to_end_on_the_cpu_in_its_dry_mode() -> None:
    out = subprocess.run(
        ["bash", "bench/gpu_check.sh", "--dry"],
        cwd=REPO, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("device CPU; TensorFlow")
    for config in CONFIGS:
        [row] = [line for line in lines if line.split()[:1] == [config]]
        bare, ours, ratio = (float(v) for v in row.split()[1:4])
        assert bare > 0
        assert ours > 0
        assert ratio == pytest.approx(ours / bare, rel=0.01, abs=0.001)
        assert ("emulated" in row) == ("float16" in config)
    [noise] = [line for line in lines if line.startswith("noise estimator:")]
    assert re.search(r"overhead [+-]\d", noise)
    assert any(line.startswith("NCCL: ") for line in lines)
    assert "dry: figures mean nothing" in lines[-1]
