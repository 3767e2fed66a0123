"""Trainer overhead: scalelab's throughput vs a bare Horovod DistributedGradientTape loop.

Same model (the trainer's `mlp`: Keras Dense layers, seeded), same data (digits), same global batch,
same plain SGD, same process count, measured the same way (global samples/s over the steps after
the first 10, from the mean step and, robust to other load, from the median step). The bare loop
is Horovod's TF2 example reduced to its core: a tf.function step with hvd.DistributedGradientTape
and one call per step. Runs alternate, and the ratio is taken per pair. Every pair prints the
load average it ran under; with --np 1 2 the last line is the scaling efficiency of each
(E = samples/s at 2 processes / (2 × at 1), same global batch, from the medians) and their
ratio E(scalelab)/E(bare), also as the ratio of the paired medians (np=2 over np=1). With
--control both sides run the bare loop: the same figures then show the bench's own noise on this
machine, the least difference between two trainers it can resolve.

    .venv/bin/python bench/trainer_overhead.py [--np 1 2] [--repeats 5] [--batch 256] [--control]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
SKIP = 10


def bare(batch: int, epochs: int, units: int, layers: int, threads: int) -> None:
    """Child process (under horovodrun): the bare loop; rank 0 prints samples/s."""
    import horovod.tensorflow as hvd
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    hvd.init()
    sys.path.insert(0, str(ROOT / "trainer"))
    from scalelab_trainer import datasets

    ds = datasets.digits(2000, 0.2, seed=0)
    tf.keras.utils.set_random_seed(0)
    net = tf.keras.Sequential([tf.keras.Input((64,))])
    for _ in range(layers):
        net.add(tf.keras.layers.Dense(units, activation="relu"))
    net.add(tf.keras.layers.Dense(10))
    opt = tf.keras.optimizers.SGD(0.01)
    x, y = tf.constant(ds.x), tf.constant(ds.y)
    n, size, rank = len(ds.y), hvd.size(), hvd.rank()
    local = batch // size

    @tf.function
    def train_step(xb: tf.Tensor, yb: tf.Tensor, first: bool) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(
                tf.keras.losses.sparse_categorical_crossentropy(
                    yb, net(xb, training=True), from_logits=True
                )
            )
        tape = hvd.DistributedGradientTape(tape)
        grads = tape.gradient(loss, net.trainable_variables)
        opt.apply_gradients(zip(grads, net.trainable_variables, strict=True))
        if first:
            hvd.broadcast_variables(net.variables, root_rank=0)
            hvd.broadcast_variables(opt.variables(), root_rank=0)
        return loss

    steps = n // batch
    times, count = [], 0
    for _ in range(epochs):
        for s in range(steps):
            lo = s * batch + rank * local
            t0 = time.perf_counter()
            train_step(x[lo : lo + local], y[lo : lo + local], count == 0).numpy()
            times.append(time.perf_counter() - t0)
            count += 1
    steady = times[SKIP:]
    if rank == 0:
        mean = batch * len(steady) / sum(steady)
        print(json.dumps({"samplesPerSecond": mean, "p50": statistics.median(steady)}))


def launch(np: int, argv: list[str]) -> str:
    cmd = (
        [str(BIN / "horovodrun"), "-np", str(np), "--gloo", "-H", f"localhost:{np}"]
        if np > 1
        else []
    )
    r = subprocess.run([*cmd, *argv], capture_output=True, text=True, env=ENV, cwd=ROOT, check=True)
    return r.stdout


def last_json(stdout: str, marker: str) -> dict[str, Any]:
    """The last JSON line on stdout that contains `marker` (horovodrun prefixes lines)."""
    for line in reversed(stdout.splitlines()):
        if "{" in line and marker in line:
            return json.loads(line[line.index("{") :])  # type: ignore[no-any-return]
    raise RuntimeError(f"no {marker} in output")


def run_bare(np: int, argv: list[str]) -> tuple[float, float]:
    """The bare loop's samples/s (from the mean step) and its median step in seconds."""
    out = last_json(launch(np, argv), "samplesPerSecond")
    return out["samplesPerSecond"], out["p50"]


def run_scalelab(np: int, argv: list[str]) -> tuple[float, float]:
    """The trainer's samples/s (from the mean step) and its median step in seconds."""
    out = last_json(launch(np, argv), '"event":"result"')
    return out["samplesPerSecond"], out["stepTimeSeconds"]["p50"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--np", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--units", type=int, default=512)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--worker", action="store_true")
    p.add_argument(
        "--control",
        action="store_true",
        help="A/A control: the bare loop on both sides, to measure the bench's own noise",
    )
    a = p.parse_args()
    if a.worker:
        bare(a.batch, a.epochs, a.units, a.layers, a.threads)
        return
    sizes = ["--batch", str(a.batch), "--epochs", str(a.epochs), "--units", str(a.units),
             "--layers", str(a.layers), "--threads", str(a.threads)]  # fmt: skip
    bare_argv = [sys.executable, __file__, "--worker", *sizes]
    scalelab_argv = (
        f"{sys.executable} -m scalelab_trainer --model mlp --dataset digits --dataset-size 2000 "
        f"--batch-size {a.batch} --hidden-units {a.units} --hidden-layers {a.layers} "
        f"--learning-rate 0.01 --max-epochs {a.epochs} --relative-tolerance 0 "
        f"--no-gradient-noise-scale --intra-op-threads {a.threads} --throughput-skip-steps {SKIP}"
    ).split()
    # The A/A control names its second side apart, so its output is never read as scalelab's.
    name, run_ours, ours_argv = (
        ("bare again", run_bare, bare_argv)
        if a.control
        else ("scalelab", run_scalelab, scalelab_argv)
    )
    medians: dict[int, tuple[float, float]] = {}
    paired: dict[int, float] = {}
    for np in a.np:
        ratios, ratios50, ours, theirs = [], [], [], []
        for i in range(a.repeats):
            b, b_p50 = run_bare(np, bare_argv)
            s, s_p50 = run_ours(np, ours_argv)
            # The median step is robust to other load on a shared machine; the mean is not.
            b50, s50 = a.batch / b_p50, a.batch / s_p50
            ours.append(s)
            theirs.append(b)
            ratios.append(s / b)
            ratios50.append(s50 / b50)
            load = " ".join(f"{v:.1f}" for v in os.getloadavg())
            print(f"np={np} repeat {i}: mean-step bare {b:.0f}/s {name} {s:.0f}/s ratio "
                  f"{s / b:.3f}; median-step bare {b50:.0f}/s {name} {s50:.0f}/s ratio "
                  f"{s50 / b50:.3f}; load average {load}", flush=True)  # fmt: skip
        print(
            f"np={np} global batch {a.batch}: median bare {statistics.median(theirs):.0f} "
            f"samples/s, {name} {statistics.median(ours):.0f} samples/s, median ratio "
            f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}); "
            f"median-step ratio {statistics.median(ratios50):.3f} (min {min(ratios50):.3f}, "
            f"max {max(ratios50):.3f})"
        )
        medians[np] = statistics.median(theirs), statistics.median(ours)
        paired[np] = statistics.median(ratios)
    if 1 in medians and 2 in medians:
        e_bare = medians[2][0] / (2 * medians[1][0])
        e_ours = medians[2][1] / (2 * medians[1][1])
        print(f"efficiency 1->2 processes at global batch {a.batch}: bare {e_bare:.3f}, "
              f"{name} {e_ours:.3f}, E({name})/E(bare) {e_ours / e_bare:.3f}; "
              f"from the paired ratios {paired[2] / paired[1]:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
