"""User workloads for the plugin tests: ones that work (in memory, plugin API 1, and streamed as
records, plugin API 2) and one per way of being broken.

The trainer imports them by entry point (`tests.trainer.plugin_cases:<name>`), as it would a
team's package."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import tensorflow as tf

from scalelab_trainer.plugin import Context, Records, Workload

#: The examples a case gives when the trial sets no --dataset-size (then all of them are used).
ALL = 80


def _size(ctx: Context) -> int:
    return ALL if ctx.dataset_size is None else ctx.dataset_size


def _data(ctx: Context, features: int = 2, classes: int = 2) -> tuple[Any, Any]:
    rng = np.random.default_rng(ctx.seed)
    x = rng.normal(size=(_size(ctx), features)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) % classes
    return x, y


def _mlp(inputs: int, outputs: int, units: int = 8) -> tf.keras.Model:
    return tf.keras.Sequential(
        [
            tf.keras.Input((inputs,)),
            tf.keras.layers.Dense(units, activation="relu"),
            tf.keras.layers.Dense(outputs),
        ]
    )


def good(ctx: Context) -> Workload:
    """A classifier with a held-out set; `units` from the parameters."""
    x, y = _data(ctx)
    units = int(ctx.parameters.get("units", 8))
    return Workload(
        model=lambda: _mlp(2, 2, units),
        x=x,
        y=y,
        loss="sparse_categorical_crossentropy",
        accuracy="sparse_categorical",
        x_test=x[:64],
        y_test=y[:64],
    )


def regression(ctx: Context) -> Workload:
    """A callable loss (per-example absolute error) on float targets, no accuracy."""
    x, _ = _data(ctx, features=3)
    y = (x @ np.array([1.0, -2.0, 0.5], np.float32)).astype(np.float32)
    return Workload(
        model=lambda: _mlp(3, 1), x=x, y=y, loss=lambda t, p: tf.abs(tf.squeeze(p, -1) - t)
    )


def raises(ctx: Context) -> Workload:
    raise ValueError("parameter depth must be > 0")


def builder_raises(ctx: Context) -> Workload:
    x, y = _data(ctx)

    def model() -> tf.keras.Model:
        raise RuntimeError("out of ideas")

    return Workload(model=model, x=x, y=y, loss="sparse_categorical_crossentropy")


def output_misfit(ctx: Context) -> Workload:
    x, _ = _data(ctx)
    return Workload(model=lambda: _mlp(2, 3), x=x, y=x[:, 0].copy(), loss="mean_squared_error")


def labels_outside(ctx: Context) -> Workload:
    x, _ = _data(ctx)
    y = np.arange(_size(ctx)) % 5
    return Workload(model=lambda: _mlp(2, 2), x=x, y=y, loss="sparse_categorical_crossentropy")


def wrong_input_shape(ctx: Context) -> Workload:
    x, y = _data(ctx, features=3)
    return Workload(model=lambda: _mlp(2, 2), x=x, y=y, loss="sparse_categorical_crossentropy")


def uneven(ctx: Context) -> Workload:
    x, y = _data(ctx)
    return Workload(model=lambda: _mlp(2, 2), x=x, y=y[:-1], loss="sparse_categorical_crossentropy")


def not_a_workload(ctx: Context) -> dict[str, Any]:
    return {"model": None}


def rank_dependent(ctx: Context) -> Workload:
    """Data drawn from the rank: the same examples are no longer the same on every rank."""
    rank = int(os.environ.get("HOROVOD_RANK", "0"))
    return good(Context(ctx.parameters, ctx.seed + rank, ctx.dataset_size))


def fails_on_rank_1(ctx: Context) -> Workload:
    if os.environ.get("HOROVOD_RANK", "0") == "1":
        raise OSError("a file only rank 0 has")
    return good(ctx)


# --- plugin API 2: records streamed through tf.data ------------------------------------------
# The keys are example indices; `load` computes example i from i alone (a stateless draw), so
# the same examples can also be handed over in memory and the two paths compared.


def _indexed(key: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    i = tf.strings.to_number(key, tf.int64)
    x = tf.random.stateless_normal([2], seed=tf.stack([i, tf.constant(7, tf.int64)]))
    return x, tf.cast(x[0] > 0, tf.int64)


def _indexed_arrays(n: int, first: int = 0) -> tuple[Any, Any]:
    pairs = [_indexed(tf.constant(str(i))) for i in range(first, first + n)]
    return np.stack([p[0].numpy() for p in pairs]), np.array([int(p[1]) for p in pairs])


def _keys(n: int, first: int = 0) -> list[str]:
    return [str(i) for i in range(first, first + n)]


def streamed(ctx: Context) -> Workload:
    """The examples of `in_memory`, streamed: one key per example, loaded by tf.data."""
    return Workload(
        model=lambda: _mlp(2, 2, int(ctx.parameters.get("units", 8))),
        loss="sparse_categorical_crossentropy",
        accuracy="sparse_categorical",
        records=Records(keys=_keys(_size(ctx)), load=_indexed),
        test_records=Records(keys=_keys(64, first=100_000), load=_indexed),
    )


def in_memory(ctx: Context) -> Workload:
    """The examples of `streamed`, as arrays (plugin API 1)."""
    x, y = _indexed_arrays(_size(ctx))
    x_test, y_test = _indexed_arrays(64, first=100_000)
    return Workload(
        model=lambda: _mlp(2, 2, int(ctx.parameters.get("units", 8))),
        x=x,
        y=y,
        loss="sparse_categorical_crossentropy",
        accuracy="sparse_categorical",
        x_test=x_test,
        y_test=y_test,
        api_version=1,
    )


def slow_input(ctx: Context) -> Workload:
    """Records whose loading sleeps: the step loop waits for its input."""

    def load(key: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x, y = _indexed(key)
        x = tf.py_function(lambda v: (time.sleep(0.02), v)[1], [x], tf.float32)
        return tf.ensure_shape(x, [2]), y

    return Workload(
        model=lambda: _mlp(2, 2),
        loss="sparse_categorical_crossentropy",
        records=Records(keys=_keys(_size(ctx)), load=load),
    )


def _regularised_mlp(l2: float) -> tf.keras.Model:
    reg = tf.keras.regularizers.L2(l2) if l2 else None
    return tf.keras.Sequential(
        [
            tf.keras.Input((2,)),
            tf.keras.layers.Dense(8, activation="relu", kernel_regularizer=reg),
            tf.keras.layers.Dense(2, kernel_regularizer=reg),
        ]
    )


def regularised(ctx: Context) -> Workload:
    """`good`'s data, an MLP with an L2 penalty on its kernels (`l2` from the parameters)."""
    x, y = _data(ctx)
    l2 = float(ctx.parameters.get("l2", 0.0))
    return Workload(
        model=lambda: _regularised_mlp(l2), x=x, y=y, loss="sparse_categorical_crossentropy"
    )


def streamed_regularised(ctx: Context) -> Workload:
    """`streamed` with an L2 penalty on the kernels."""
    l2 = float(ctx.parameters.get("l2", 0.0))
    return Workload(
        model=lambda: _regularised_mlp(l2),
        loss="sparse_categorical_crossentropy",
        records=Records(keys=_keys(_size(ctx)), load=_indexed),
    )


def activity_regularised(ctx: Context) -> Workload:
    x, y = _data(ctx)

    def model() -> tf.keras.Model:
        return tf.keras.Sequential(
            [tf.keras.Input((2,)), tf.keras.layers.Dense(2, activity_regularizer="l2")]
        )

    return Workload(model=model, x=x, y=y, loss="sparse_categorical_crossentropy")


def records_of_unknown_shape(ctx: Context) -> Workload:
    def load(key: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        n = tf.strings.to_number(key, tf.int64) % 3 + 1
        return tf.ones([n]), tf.constant(0, tf.int64)

    return Workload(
        model=lambda: _mlp(2, 2),
        loss="sparse_categorical_crossentropy",
        records=Records(keys=_keys(_size(ctx)), load=load),
    )


def too_few_records(ctx: Context) -> Workload:
    return Workload(
        model=lambda: _mlp(2, 2),
        loss="sparse_categorical_crossentropy",
        records=Records(keys=_keys(_size(ctx) - 1), load=_indexed),
    )
