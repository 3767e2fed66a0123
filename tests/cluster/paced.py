"""A user workload that takes its time without taking the CPU, for the cluster tests that need
trials to be running while something happens to the operator, the API server or Kueue.

A linear trial lasts by computing (thousands of epochs), so each such test spent its seconds of
waiting as seconds of CPU, a core per trial, and its trials lasted longer or shorter with the
machine's load. Here every example the model is given costs `secondsPerExample` of sleep in a
pass-through first layer, and the rest is a one-unit regression the trainer runs like any team's
model (scalelab_trainer/plugin.py): an epoch on one process lasts about 2 × examples × that (its
steps, then the full-dataset loss) at almost no CPU, so a trial's length is set by its spec. The
stand-in runs trainers from the repository root, where they import `tests.cluster.paced:workload`.

TensorFlow is imported by `workload` (in the trainer), not by the tests that import `spec`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from scalelab_trainer.plugin import Context, Workload

ENTRY_POINT = "tests.cluster.paced:workload"


def spec(seconds_per_example: float = 0.01, examples: int = 64) -> dict[str, Any]:
    """`spec.workload` of a paced trial."""
    return {
        "model": "custom",
        "dataset": "custom",
        "entryPoint": ENTRY_POINT,
        "datasetSize": examples,
        "parameters": {"secondsPerExample": seconds_per_example},
    }


def workload(ctx: Context) -> Workload:
    """y = 2x + 1 with noise, learned by one Dense unit behind the pacing layer."""
    import tensorflow as tf

    seconds = float(ctx.parameters.get("secondsPerExample", 0.01))

    def sleep_then(a: np.ndarray) -> np.ndarray:
        time.sleep(seconds * len(a))
        return a

    def pace(x: Any) -> Any:
        y = tf.numpy_function(sleep_then, [x], x.dtype, stateful=True)
        y.set_shape(x.shape)
        return y

    n = ctx.dataset_size or 64
    rng = np.random.default_rng(ctx.seed)
    x = rng.normal(size=(n, 1)).astype(np.float32)
    y = (2 * x + 1 + 0.1 * rng.normal(size=(n, 1))).astype(np.float32)
    return Workload(
        model=lambda: tf.keras.Sequential(
            [tf.keras.Input((1,)), tf.keras.layers.Lambda(pace), tf.keras.layers.Dense(1)]
        ),
        x=x,
        y=y,
        loss="mean_squared_error",
    )
