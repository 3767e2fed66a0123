"""The least TensorFlow 2 program that does lab 1's work: the floor for any TF2 trainer of it.

Gradient descent and SGD on the lab's line (seed 0, rate 0.001, the relative-change rule on the
loss before each update, GD's per epoch, SGD's epoch mean), then the 200×200 loss surface; the
epoch loop and the step loop are one `tf.function` graph (AutoGraph off, Grappler off as the
trainer's linear trials run), called once per trial, and the surface is one vectorized op. It
measures nothing else: no gradient noise, no exact loss per epoch, no per-epoch parameters, no
events. Two ways, printed as one JSON line (`compute` from after `import tensorflow`, as the
bench's other sides):

- per trial (default): each trial traces its own graph, batch size a Python constant (what a
  trainer that compiles each trial's constants into its graph pays);
- `--shared-trace`: one graph for both, batch size a tensor and the same variables reset (the
  best a trainer could do with tracing counted).

Run by bench/trainer_lab1_vs_tf1.py beside the lab's TF1 code and scalelab, which checks that
its answers are the lab's (epochs exactly, w and b to 1e-8, surface to 1e-10).

    .venv/bin/python bench/lab1_tf2_floor.py [--shared-trace]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RATE, TOLERANCE, MAX_EPOCHS, N = 0.001, 0.001, 1000, 100


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shared-trace", action="store_true")
    shared = p.parse_args().shared_trace
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, str(ROOT))
    from tests.trainer.lab1_tf1 import lab_data

    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    t0 = time.perf_counter()
    x, y = lab_data(0)
    X, Y = tf.constant(x), tf.constant(y)

    def build(w: tf.Variable, b: tf.Variable) -> Any:
        def epochs(count: tf.Tensor, batch: Any) -> Any:
            steps = N // batch

            def epoch(e: Any, prev: Any, halt: Any) -> Any:
                def step(s: Any, total: Any) -> Any:
                    xb, yb = X[s * batch : (s + 1) * batch], Y[s * batch : (s + 1) * batch]
                    with tf.GradientTape() as tape:
                        loss = tf.reduce_mean(tf.square(w * xb + b - yb))
                    gw, gb = tape.gradient(loss, [w, b])
                    w.assign_sub(RATE * gw)
                    b.assign_sub(RATE * gb)
                    return s + 1, total + loss

                zero = tf.constant(0.0, tf.float64)
                _, total = tf.while_loop(lambda s, _: s < steps, step, (tf.constant(0), zero))
                mean = total / tf.cast(steps, tf.float64)
                stop = tf.logical_and(e > 0, tf.abs(mean - prev) / prev < TOLERANCE)
                return e + 1, mean, stop

            start = (tf.constant(0), tf.constant(np.nan, tf.float64), tf.constant(False))
            ran, _, _ = tf.while_loop(
                lambda e, _, halt: tf.logical_and(e < count, tf.logical_not(halt)), epoch, start
            )
            return ran

        return tf.function(epochs, autograph=False)

    def variables() -> tuple[tf.Variable, tf.Variable]:
        return tf.Variable(tf.zeros([], tf.float64)), tf.Variable(tf.zeros([], tf.float64))

    answers = {}
    if shared:
        w, b = variables()
        loop = build(w, b)
        for name, batch in (("gd", 100), ("sgd", 1)):
            w.assign(0.0)
            b.assign(0.0)
            ran = loop(tf.constant(MAX_EPOCHS), tf.constant(batch))
            answers[name] = [int(ran), float(w.numpy()), float(b.numpy())]
    else:
        for name, batch in (("gd", 100), ("sgd", 1)):
            w, b = variables()
            ran = build(w, b)(tf.constant(MAX_EPOCHS), batch)
            answers[name] = [int(ran), float(w.numpy()), float(b.numpy())]
    wg, bg = np.meshgrid(np.linspace(0, 20, 200), np.linspace(-18, 22, 200))
    grid = tf.constant(wg)[..., None] * X + tf.constant(bg)[..., None] - Y
    surface = tf.reduce_mean(tf.square(grid), -1).numpy()
    compute = time.perf_counter() - t0
    print(json.dumps({"compute": compute, **answers, "surface": surface.tolist()}))


if __name__ == "__main__":
    main()
