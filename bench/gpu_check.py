"""The one prepared GPU check (run by bench/gpu_check.sh): ResNet-50 synthetic images/s of our
trainer against a bare Horovod/TensorFlow loop, in float32, float16 and with XLA; whether NCCL
ran; each side's GPU memory peak; and the gradient noise estimator's cost.

Two child processes, so TensorFlow and Horovod start twice, not once per configuration: the bare
loop runs every configuration in one process, our trainer runs them as one --trial-list. Both
train the same Keras ResNet-50 (random weights) on the same kind of random images with plain SGD,
and count images/s over the steps after the first `skip` (Horovod's synthetic benchmark
convention). The bare loop is Horovod's way in its examples: hvd.init, the GPU of the local rank,
Keras's LossScaleOptimizer for float16, the forward and backward pass in one tf.function (XLA
with jit), the gradients averaged by one grouped allreduce.

--dry runs the same code end to end on the CPU in seconds (a small ResNet at 16 px, batch 8, a few
steps): tests/trainer/test_gpu_check_dry.py runs it so that the script cannot rot. Its figures
mean nothing. On one GPU the run takes about 4 to 6 minutes (TensorFlow start-up twice, four XLA
compilations per side, 30 timed steps per configuration).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: name → (mixed precision, XLA)
CONFIGS = {
    "float32": ("off", False),
    "float16": ("float16", False),
    "float32+xla": ("off", True),
    "float16+xla": ("float16", True),
}


def _sizes(dry: bool) -> dict[str, Any]:
    if dry:
        return {"arch": "resnet-small", "size": 16, "batch": 8, "steps": 6, "skip": 2}
    return {"arch": "resnet50", "size": 224, "batch": 64, "steps": 40, "skip": 10}


def bare(sizes: dict[str, Any]) -> None:
    """Child process: every configuration of the bare loop; one JSON line each."""
    import horovod.tensorflow as hvd
    import numpy as np
    import tensorflow as tf

    hvd.init()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        tf.config.experimental.set_memory_growth(gpus[hvd.local_rank()], True)
        tf.config.set_visible_devices(gpus[hvd.local_rank()], "GPU")
    size, batch = sizes["size"], sizes["batch"]
    rng = np.random.default_rng(0)
    x = tf.identity(tf.constant(rng.random((4 * batch, size, size, 3), dtype=np.float32)))
    y = tf.identity(tf.constant(rng.integers(0, 10, 4 * batch)))
    for name, (mode, xla) in CONFIGS.items():
        if gpus:
            tf.config.experimental.reset_memory_stats("GPU:0")
        rate = _bare_run(hvd, tf, sizes, (x, y), (mode, xla))
        peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] if gpus else None
        print(json.dumps({"config": name, "imagesPerSecond": rate, "peakBytes": peak}), flush=True)


def _bare_run(hvd: Any, tf: Any, sizes: dict[str, Any], data: Any, how: Any) -> float:
    mode, xla = how
    x, y = data
    batch = sizes["batch"]
    tf.keras.mixed_precision.set_global_policy("mixed_float16" if mode == "float16" else "float32")
    tf.keras.utils.set_random_seed(0)
    net = _network(tf, sizes)
    opt = tf.keras.optimizers.SGD(0.01)
    if mode == "float16":
        opt = tf.keras.mixed_precision.LossScaleOptimizer(opt)
    tf.keras.mixed_precision.set_global_policy("float32")

    def grads_of(xb: Any, yb: Any) -> Any:
        with tf.GradientTape() as tape:
            out = tf.cast(net(xb, training=True), tf.float32)
            loss = tf.reduce_mean(
                tf.keras.losses.sparse_categorical_crossentropy(yb, out, from_logits=True)
            )
            scaled = opt.get_scaled_loss(loss) if mode == "float16" else loss
        grads = tape.gradient(scaled, net.trainable_variables)
        return loss, grads

    compute = tf.function(grads_of, jit_compile=xla)

    @tf.function
    def step(xb: Any, yb: Any) -> Any:
        loss, grads = compute(xb, yb)
        # Horovod: average the gradients over the ranks (NCCL on GPUs), outside XLA.
        grads = hvd.grouped_allreduce(grads, op=hvd.Average)
        if mode == "float16":
            grads = opt.get_unscaled_gradients(grads)
        opt.apply_gradients(zip(grads, net.trainable_variables, strict=True))
        return loss

    times = []
    for s in range(sizes["steps"]):
        lo = (s % 4) * batch
        t0 = time.perf_counter()
        step(x[lo : lo + batch], y[lo : lo + batch]).numpy()
        times.append(time.perf_counter() - t0)
    steady = times[sizes["skip"] :]
    return float(batch * len(steady) / sum(steady))


def _network(tf: Any, sizes: dict[str, Any]) -> Any:
    if sizes["arch"] == "resnet50":
        return tf.keras.applications.ResNet50(
            weights=None,
            input_shape=(sizes["size"], sizes["size"], 3),
            classes=10,
            classifier_activation=None,
        )
    sys.path.insert(0, str(ROOT / "trainer"))
    from scalelab_trainer.models import _resnet_small

    return _resnet_small(sizes["size"], 10)


def ours(sizes: dict[str, Any], env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Our trainer, every configuration and the noise estimator's, as one trial list."""
    common = ["--model", "cnn", "--dataset", "synthetic-images", "--cnn-arch", sizes["arch"],
              "--image-size", str(sizes["size"]), "--num-classes", "10",
              "--dataset-size", str(4 * sizes["batch"]), "--batch-size", str(sizes["batch"]),
              "--learning-rate", "0.01", "--max-epochs", str(-(-sizes["steps"] // 4)),
              "--relative-tolerance", "0",
              "--throughput-skip-steps", str(sizes["skip"])]  # fmt: skip
    trials = [
        [*common, "--trial", name, "--mixed-precision", mode,
         "--jit-compile" if xla else "--no-jit-compile", "--no-gradient-noise-scale"]
        for name, (mode, xla) in CONFIGS.items()
    ]  # fmt: skip
    trials.append([*common, "--trial", "float32+noise", "--gradient-noise-scale"])
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(trials, f)
    out = subprocess.run(
        [sys.executable, "-m", "scalelab_trainer", "--trial-list", f.name],
        capture_output=True, text=True, env=env, cwd=ROOT, check=False,
    )  # fmt: skip
    os.unlink(f.name)
    results = {}
    for line in out.stdout.splitlines():
        if '"event":"result"' in line.replace(" ", ""):
            event = json.loads(line[line.index("{") :])
            results[event["trial"]] = event
    if out.returncode != 0 or len(results) != len(trials):
        raise SystemExit(f"our trainer failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return results


def runtime() -> str:
    """TensorFlow's and Horovod's builds, and the GPU (child process: no TF in this one)."""
    code = (
        "import json, tensorflow as tf, horovod.tensorflow as hvd\n"
        "g = tf.config.list_physical_devices('GPU')\n"
        "d = tf.config.experimental.get_device_details\n"
        "name = d(g[0]).get('device_name') if g else 'CPU'\n"
        "print(json.dumps([name, tf.__version__, tf.test.is_built_with_cuda(), "
        "hvd.nccl_built()]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    name, version, cuda, nccl = json.loads(out.stdout.strip().splitlines()[-1])
    return f"device {name}; TensorFlow {version} (CUDA build: {cuda}); Horovod NCCL build: {nccl}"


def _mib(value: Any) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def report(sizes: dict[str, Any], theirs: dict[str, Any], ours_: dict[str, Any], nccl: str) -> None:
    print(f"ResNet ({sizes['arch']}, {sizes['size']} px, batch {sizes['batch']}, "
          f"{sizes['steps'] - sizes['skip']} timed steps), images/s:")  # fmt: skip
    print(f"{'config':<13} {'bare':>9} {'scalelab':>9} {'ratio':>6}  peak MiB bare/scalelab")
    for name in CONFIGS:
        b, o = theirs[name], ours_[name]
        ratio = o["samplesPerSecond"] / b["imagesPerSecond"]
        computed = o["precision"]["compute"] + (", emulated" if o["precision"]["emulated"] else "")
        print(f"{name:<13} {b['imagesPerSecond']:>9.1f} {o['samplesPerSecond']:>9.1f} "
              f"{ratio:>6.3f}  {_mib(b['peakBytes'])}/{_mib(o.get('gpuMemoryPeakBytes'))}"
              f"  ({computed})")  # fmt: skip
    plain, noisy = ours_["float32"]["samplesPerSecond"], ours_["float32+noise"]["samplesPerSecond"]
    b_simple = ours_["float32+noise"]["gradientNoiseScale"]
    print(f"noise estimator: {noisy:.1f} images/s with B_simple, {plain:.1f} without: "
          f"overhead {1 - noisy / plain:+.1%} (B_simple {b_simple})")  # fmt: skip
    print(f"NCCL: {nccl}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    dry = os.environ.get("GPU_CHECK_DRY") == "1"
    p.add_argument(
        "--dry",
        action="store_true",
        default=dry,
        help="tiny shapes on the CPU, seconds: checks the script, not the GPU",
    )
    p.add_argument("--bare-worker", default=None, help="internal: the bare loop's sizes (JSON)")
    a = p.parse_args()
    if a.bare_worker:
        bare(json.loads(a.bare_worker))
        return
    sizes = _sizes(a.dry)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", NCCL_DEBUG="INFO")
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT / "trainer"), env.get("PYTHONPATH")])
    )
    t0 = time.perf_counter()
    print(runtime(), flush=True)
    out = subprocess.run([sys.executable, __file__, "--bare-worker", json.dumps(sizes)],
                         capture_output=True, text=True, env=env, check=False)  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"the bare loop failed:\n{out.stderr[-4000:]}")
    theirs = {r["config"]: r for r in map(json.loads, out.stdout.strip().splitlines())}
    lines = len(re.findall(r"NCCL INFO", out.stderr))
    nccl = (
        f"used by the bare Horovod loop ({lines} NCCL INFO lines)"
        if lines
        else "not used: no NCCL INFO line (a CPU build, or one process, which has no peer)"
    )
    report(sizes, theirs, ours(sizes, env), nccl)
    print(f"took {time.perf_counter() - t0:.0f} s{' (dry: figures mean nothing)' if a.dry else ''}")


if __name__ == "__main__":
    main()
