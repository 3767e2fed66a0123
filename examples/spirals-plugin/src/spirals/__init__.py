"""Two interleaved spirals, classified by a Keras MLP: an example scalelab user workload.

`workload(ctx)` is the entry point (`workload.entryPoint: spirals:workload`). Parameters
(`workload.parameters`), each optional:
  units (int, 64)     units per hidden layer      turns (float, 1.5)  turns of each spiral
  layers (int, 3)     hidden layers               noise (float, 0.1)  std of the point jitter
  test_examples (int, 512)  held-out points for testAccuracy
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from scalelab_trainer.plugin import Context, Workload

DEFAULTS: dict[str, Any] = {
    "units": 64,
    "layers": 3,
    "turns": 1.5,
    "noise": 0.1,
    "test_examples": 512,
}


def points(n: int, turns: float, noise: float, rng: np.random.Generator) -> tuple[Any, Any]:
    """n points on two spirals (labels 0 and 1), jittered; float32 x of shape (n, 2)."""
    label = rng.integers(0, 2, n)
    t = np.sqrt(rng.random(n)) * turns * 2 * np.pi
    r = t / (turns * 2 * np.pi)
    angle = t + np.pi * label
    x = np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)
    x += rng.normal(0, noise, x.shape) * r[:, None]
    return x.astype(np.float32), label.astype(np.int64)


def _parameters(given: Any) -> dict[str, Any]:
    unknown = set(given) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown parameters {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    p = {**DEFAULTS, **given}
    for name in ("units", "layers", "test_examples"):
        if not isinstance(p[name], int) or p[name] < (0 if name == "layers" else 1):
            raise ValueError(f"parameter {name} must be a positive integer, got {p[name]!r}")
    if not 0 <= float(p["noise"]) < 1 or float(p["turns"]) <= 0:
        raise ValueError("parameters: noise must be in [0, 1), turns > 0")
    return p


def workload(ctx: Context) -> Workload:
    """The scalelab entry point: data drawn from the trial seed, the same on every rank."""
    p = _parameters(ctx.parameters)
    rng = np.random.default_rng(ctx.seed)
    # A generated dataset has no natural size: without workload.datasetSize, draw 2,048 points.
    x, y = points(ctx.dataset_size or 2048, p["turns"], p["noise"], rng)
    x_test, y_test = points(p["test_examples"], p["turns"], p["noise"], rng)

    def model() -> tf.keras.Model:
        net = tf.keras.Sequential([tf.keras.Input((2,))])
        for _ in range(p["layers"]):
            net.add(tf.keras.layers.Dense(p["units"], activation="relu"))
        net.add(tf.keras.layers.Dense(2))  # logits of the two spirals
        return net

    return Workload(
        model=model,
        x=x,
        y=y,
        loss="sparse_categorical_crossentropy",
        accuracy="sparse_categorical",
        x_test=x_test,
        y_test=y_test,
    )
