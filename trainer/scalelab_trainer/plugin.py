"""The user workload plugin, API version 2: bring your own Keras model and data.

A ScaleExperiment with `workload.model: custom` names an entry point `module:function`; every
rank of every trial imports it and calls it with a `Context` (the experiment's
`workload.parameters`, the trial seed, the examples asked for). It returns a `Workload`, with
the data either in memory (arrays, version 1) or streamed from files (`Records`, version 2):

    from scalelab_trainer.plugin import Context, Workload

    def workload(ctx: Context) -> Workload:
        rng = np.random.default_rng(ctx.seed)  # the same data on every rank
        x = rng.normal(size=(ctx.dataset_size or 1000, 8)).astype("float32")
        y = (x.sum(axis=1) > 0).astype("int64")
        units = int(ctx.parameters.get("units", 32))
        return Workload(
            model=lambda: keras.Sequential([keras.Input((8,)), keras.layers.Dense(units),
                                            keras.layers.Dense(2)]),
            x=x, y=y, loss="sparse_categorical_crossentropy", accuracy="sparse_categorical",
        )

    def streamed(ctx: Context) -> Workload:  # version 2: one key per example, loaded by tf.data
        files = sorted(glob.glob(os.path.join(ctx.parameters["dataDir"], "train", "*.png")))
        return Workload(model=..., loss="sparse_categorical_crossentropy",
                        records=Records(keys=files, load=load_png))  # load(key) -> (x, y)

The trainer does everything else exactly as for its built-in workloads: the first
`ctx.dataset_size` examples are the dataset (every example given when it is None: the experiment
left workload.datasetSize out; the result's `datasetSize` says how many were used); global batch
s is examples [s·B, (s+1)·B) of the epoch's order and rank r of N takes its r-th contiguous share,
so a global batch is the same examples for any N; rank 0's initial weights are broadcast; the
learning-rate rule and warmup, every optimizer, the gradient noise scale, divergence, stopping
rules, events, metrics and status apply unchanged. The model's own losses (`model.losses`:
kernel regularisers, `add_loss`) are added to the loss it trains on and to the full-dataset loss
it reports, once per step (not per example).

Rules the trainer checks before the first step (a broken plugin ends the trial Failed with a
`PluginError` naming the cause, on every rank together, never a hang):
- `x` and `y` are numeric arrays with the same number of examples (first axis), at least
  `dataset_size` of them (at least one when it is None), all finite; `x` is given to the model
  as float32 (Keras' Embedding casts it back to integers); `y` is int64 when integer (class
  labels), else float32.
- Or (version 2) `records`: at least `dataset_size` keys (at least one when it is None; strings,
  e.g. file paths) in a fixed order and `load(key) -> (x, y)` written in TensorFlow ops (it runs
  inside tf.data); the same casts apply to what it returns. Only keys are held in memory; see
  `Records`.
- The data is the same on every rank (a checksum of the arrays, or of the keys, is compared):
  draw it from `ctx.seed`, never from the rank or the clock; list files in a sorted order.
- `model()` builds a fresh `keras.Model` (called once per trial, after the trainer seeded Keras'
  random generators with the trial seed); its output on a batch must fit `loss`.
- `loss`: "mean_squared_error" (output shaped like y, or y's shape + (1,)),
  "sparse_categorical_crossentropy" (logits of shape (batch, classes), integer labels in
  [0, classes)), "binary_crossentropy" (one logit per example, labels 0/1), or a callable
  `loss(y_true, y_pred) -> per-example losses, shape (batch,)`.
- `accuracy` (optional, needs `x_test` and `y_test`, or `test_records`): "sparse_categorical"
  (argmax = label), "binary" (logit > 0 = label), or a callable
  `accuracy(y_true, y_pred) -> per-example 1/0`; reported as `testAccuracy`.

Versioning: `API_VERSION` is 2; the trainer speaks 1 and 2 (`SPOKEN`). Version 2 added
`records` and `test_records` and gave `x`, `y` and `loss` defaults (a version-1 plugin, which
passes them, works unchanged). Fields may be added to `Context` and `Workload` with defaults;
anything else raises the version, and a trainer refuses a `Workload` whose `api_version` it does
not speak.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt
import tensorflow as tf

API_VERSION = 2
#: The plugin API versions this trainer speaks.
SPOKEN = (1, 2)

#: Losses the trainer knows by name (any other is a callable returning per-example losses).
LOSSES = ("mean_squared_error", "sparse_categorical_crossentropy", "binary_crossentropy")
#: Accuracies the trainer knows by name.
ACCURACIES = ("sparse_categorical", "binary")

PerExample = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


class PluginError(Exception):
    """A user workload that cannot run; the message names the cause (the trial's reason)."""


@dataclass(frozen=True)
class Context:
    """What the trainer tells the entry point about the trial."""

    parameters: Mapping[str, Any]  # workload.parameters of the experiment (read-only)
    seed: int  # the trial's seed (workload.seed + repeat): draw data and anything random from it
    # workload.datasetSize: return at least this many training examples (the first this many
    # are the dataset); None when the experiment leaves it out: every example returned is.
    dataset_size: int | None
    api_version: int = API_VERSION


@dataclass(frozen=True)
class Records:
    """Examples read through tf.data, for data larger than memory (plugin API 2).

    `keys` holds one string per example in a fixed base order (typically the sorted paths of
    one file per example, e.g. PNG images); the first `dataset_size` are the dataset (all of
    them when it is None).
    `load(key)` turns one key (a scalar tf.string) into the example `(x, y)` with TensorFlow
    ops (`tf.io.read_file`, `tf.io.decode_png`, ...): it runs inside tf.data, in parallel, for
    exactly the examples this rank computes, in the order the trainer asks for them. Its
    output shapes must be the same for every key.

    Memory: each rank holds the keys and the epoch's order (one int64 per example) and a few
    prefetched batches of its own share; the data itself stays in the files.
    """

    keys: Sequence[str]
    load: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]


@dataclass(frozen=True)
class Workload:
    """A model builder, its data (arrays, or records), its loss and optionally an accuracy."""

    model: Callable[[], tf.keras.Model]
    x: npt.ArrayLike | None = None
    y: npt.ArrayLike | None = None
    loss: str | PerExample | None = None  # required: None is refused
    accuracy: str | PerExample | None = None
    x_test: npt.ArrayLike | None = None
    y_test: npt.ArrayLike | None = None
    api_version: int = API_VERSION
    records: Records | None = None  # version 2: the training examples, instead of x and y
    test_records: Records | None = None  # version 2: the held-out set, instead of x_test, y_test
