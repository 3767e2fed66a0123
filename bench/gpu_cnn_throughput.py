"""GPU check: `cnn` images/s through scalelab vs a bare TensorFlow loop, for a few batch sizes.

Runs unchanged wherever it is started: on the first visible GPU if there is one, else on the CPU
(say so in the output). Both sides train the same Keras network (`--cnn-arch`, random weights) on
the same random images with plain SGD, one process, and count images/s over the steps after the
first 10 (Horovod's synthetic benchmark convention). The bare loop is one tf.function step per
batch with data already on the device, the fastest simple loop TensorFlow offers without XLA.

    python bench/gpu_cnn_throughput.py                      # GPU defaults: resnet50, 224 px
    python bench/gpu_cnn_throughput.py --arch resnet-small --image-size 32 --batches 16 32
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

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
SKIP = 10


def bare(arch: str, size: int, batch: int, steps: int) -> None:
    """Child process: the bare loop; prints images/s and the device."""
    import numpy as np
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for g in gpus:
        tf.config.experimental.set_memory_growth(g, True)
    sys.path.insert(0, str(ROOT / "trainer"))
    from scalelab_trainer.models import _resnet_small

    tf.keras.utils.set_random_seed(0)
    net = (tf.keras.applications.ResNet50(weights=None, input_shape=(size, size, 3), classes=10,
                                          classifier_activation=None)
           if arch == "resnet50" else _resnet_small(size, 10))  # fmt: skip
    opt = tf.keras.optimizers.SGD(0.01)
    rng = np.random.default_rng(0)
    x = tf.identity(tf.constant(rng.random((4 * batch, size, size, 3), dtype=np.float32)))
    y = tf.identity(tf.constant(rng.integers(0, 10, 4 * batch)))

    @tf.function
    def train_step(xb: tf.Tensor, yb: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
                yb, net(xb, training=True), from_logits=True))  # fmt: skip
        grads = tape.gradient(loss, net.trainable_variables)
        opt.apply_gradients(zip(grads, net.trainable_variables, strict=True))
        return loss

    times = []
    for s in range(steps):
        lo = (s % 4) * batch
        t0 = time.perf_counter()
        train_step(x[lo : lo + batch], y[lo : lo + batch]).numpy()
        times.append(time.perf_counter() - t0)
    steady = times[SKIP:]
    device = (
        tf.config.experimental.get_device_details(gpus[0]).get("device_name") if gpus else "CPU"
    )
    print(json.dumps({"imagesPerSecond": batch * len(steady) / sum(steady), "device": device}))


def scalelab(arch: str, size: int, batch: int, steps: int) -> float:
    epochs = -(-steps // 4)
    argv = [sys.executable, "-m", "scalelab_trainer", "--model", "cnn", "--dataset",
            "synthetic-images", "--cnn-arch", arch, "--image-size", str(size), "--dataset-size",
            str(4 * batch), "--batch-size", str(batch), "--learning-rate", "0.01",
            "--max-epochs", str(epochs), "--relative-tolerance", "0",
            "--no-gradient-noise-scale", "--throughput-skip-steps", str(SKIP)]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, env=ENV, cwd=ROOT, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return float(result["samplesPerSecond"])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="resnet50", choices=["resnet50", "resnet-small"])
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--worker", type=int, default=0, help="internal: run the bare loop at batch")
    a = p.parse_args()
    if a.worker:
        bare(a.arch, a.image_size, a.worker, a.steps)
        return
    common = ["--arch", a.arch, "--image-size", str(a.image_size), "--steps", str(a.steps)]
    for batch in a.batches:
        ours, theirs, device = [], [], "?"
        for _ in range(a.repeats):
            out = subprocess.run([sys.executable, __file__, *common, "--worker", str(batch)],
                                 capture_output=True, text=True, env=ENV, check=True)  # fmt: skip
            got = json.loads(out.stdout.strip().splitlines()[-1])
            theirs.append(float(got["imagesPerSecond"]))
            device = got["device"]
            ours.append(scalelab(a.arch, a.image_size, batch, a.steps))
        b, s = statistics.median(theirs), statistics.median(ours)
        line = f"{device} {a.arch} {a.image_size}px batch {batch}: bare TF {b:.1f} img/s, "
        line += f"scalelab {s:.1f} img/s, ratio {s / b:.3f} (medians of {a.repeats})"
        print(line, flush=True)


if __name__ == "__main__":
    main()
