"""User workloads for the plugin tests: one that works and one per way of being broken.

The trainer imports them by entry point (`tests.trainer.plugin_cases:<name>`), as it would a
team's package."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorflow as tf

from scalelab_trainer.plugin import Context, Workload


def _data(ctx: Context, features: int = 2, classes: int = 2) -> tuple[Any, Any]:
    rng = np.random.default_rng(ctx.seed)
    x = rng.normal(size=(ctx.dataset_size, features)).astype(np.float32)
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
    y = np.arange(ctx.dataset_size) % 5
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
