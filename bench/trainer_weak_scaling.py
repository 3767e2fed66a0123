"""Weak-scaling efficiency of 2 processes vs 1 on this machine, for `mlp` and `cnn`.

Each process keeps the same per-process batch b: E = thr(2, 2b) / (2 · thr(1, b)), thr = the
trainer's steady-state global samples/s (first 10 steps excluded). One intra-op thread per process,
so one process stands for one device. 1- and 2-process runs alternate; figures are
mean ± 1.96·sd over the repeats (Horovod's benchmark convention), with the median beside them;
the efficiency is also given from median step times, which other load on a shared machine
disturbs less than the mean.

    .venv/bin/python bench/trainer_weak_scaling.py [--repeats 5] [--models mlp cnn]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
WORKLOADS = {  # per-process batch, flags
    "mlp": (256, "--model mlp --dataset digits --dataset-size 2000 --hidden-units 512 "
                 "--learning-rate 0.01 --max-epochs 40"),
    "cnn": (32, "--model cnn --dataset synthetic-images --dataset-size 1024 --image-size 32 "
                "--learning-rate 0.01 --max-epochs 2"),
}  # fmt: skip


def throughput(np: int, batch: int, flags: str) -> tuple[float, float]:
    """(mean-step, median-step) global samples/s of one run."""
    argv = [sys.executable, "-m", "scalelab_trainer", *flags.split(), "--batch-size",
            str(batch), "--relative-tolerance", "0", "--intra-op-threads", "1",
            "--no-gradient-noise-scale"]  # fmt: skip
    if np > 1:
        argv = [str(BIN / "horovodrun"), "-np", str(np), "--gloo", "-H", f"localhost:{np}", *argv]
    out = subprocess.run(argv, capture_output=True, text=True, env=ENV, cwd=ROOT, check=True)
    for line in reversed(out.stdout.splitlines()):
        if '"event":"result"' in line:
            r = json.loads(line[line.index("{") :])
            return float(r["samplesPerSecond"]), batch / float(r["stepTimeSeconds"]["p50"])
    raise RuntimeError("no result event")


def summary(values: list[float]) -> str:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3g} ± {1.96 * sd:.2g} (median {statistics.median(values):.3g})"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--models", nargs="+", default=list(WORKLOADS))
    a = p.parse_args()
    for model in a.models:
        b, flags = WORKLOADS[model]
        one, two, eff, eff50 = [], [], [], []
        for i in range(a.repeats):
            (t1, m1), (t2, m2) = throughput(1, b, flags), throughput(2, 2 * b, flags)
            one.append(t1)
            two.append(t2)
            eff.append(t2 / (2 * t1))
            eff50.append(m2 / (2 * m1))
            print(f"{model} repeat {i}: 1 proc {t1:.0f}/s, 2 procs {t2:.0f}/s, E {eff[-1]:.3f}; "
                  f"median-step E {eff50[-1]:.3f}", flush=True)  # fmt: skip
        print(f"{model} b={b}/process: thr(1) {summary(one)} samples/s; thr(2) {summary(two)} "
              f"samples/s; weak-scaling efficiency {summary(eff)}; from median steps "
              f"{summary(eff50)}")  # fmt: skip


if __name__ == "__main__":
    main()
