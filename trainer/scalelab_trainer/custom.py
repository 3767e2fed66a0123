"""`--model custom`: load a user workload (plugin.py), check it, and hand build.py a Dataset (or,
plugin API 2, a Stream of records) and a Model like the built-in ones.

Every check runs on every rank before the first collective, and the ranks then agree on the
outcome with one allgather (failed?, data checksums): a plugin that fails anywhere fails the
trial on every rank with the same `PluginError`, and data that differs between ranks (drawn from
the rank or the clock instead of the seed) is refused, since it would break the guarantee that a
global batch is the same examples for any process count.
"""

from __future__ import annotations

import importlib
import json
import types
import zlib
from typing import Any

import numpy as np
import tensorflow as tf

from scalelab_trainer import world
from scalelab_trainer.config import TrialConfig
from scalelab_trainer.datasets import Dataset
from scalelab_trainer.models import Keras, float32_outputs
from scalelab_trainer.plugin import (
    ACCURACIES,
    LOSSES,
    SPOKEN,
    Context,
    PerExample,
    PluginError,
    Records,
    Workload,
)
from scalelab_trainer.stream import Stream, stream_of

PROBE = 2  # examples of the output check


class Custom(Keras):
    """A user's Keras model trained with the user's per-example loss."""

    def __init__(self, net: tf.keras.Model, loss: PerExample, accuracy: PerExample | None) -> None:
        super().__init__(net, 0)
        self.loss = loss
        self.accuracy = accuracy

    def per_example_loss(self, x: tf.Tensor, y: tf.Tensor, training: bool) -> tf.Tensor:
        out = float32_outputs(self.net(x, training=training))
        return tf.cast(self.loss(y, out), tf.float32)

    def correct(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        assert self.accuracy is not None  # only built with a test set and an accuracy
        hits = self.accuracy(y, self.net(x, training=False))
        return tf.reduce_sum(tf.cast(hits, tf.float32))


def build(cfg: TrialConfig) -> tuple[Dataset | Stream, Custom]:
    """The user's data and model, identical on every rank, or PluginError on every rank."""
    try:
        built: tuple[Dataset | Stream, Custom] | None = _load(cfg)
        error = None
    except PluginError as e:
        built, error = None, str(e)
    _agree(error, built[0] if built else None)
    assert built is not None  # _agree raised otherwise
    return built


def _load(cfg: TrialConfig) -> tuple[Dataset | Stream, Custom]:
    wl = _call_entry_point(cfg)
    data: Dataset | Stream
    if wl.records is not None:
        data = _stream(wl, cfg.dataset_size)
        has_test = data.test is not None
    else:
        data = _dataset(wl, cfg.dataset_size)
        has_test = data.x_test is not None
    if wl.loss is None:
        raise PluginError("the workload has no loss (Workload.loss is required)")
    loss, accuracy = _loss(wl.loss), _accuracy(wl.accuracy)
    if accuracy is not None and not has_test:
        raise PluginError(
            "accuracy needs a held-out set to measure it on (x_test and y_test, or test_records)"
        )
    tf.keras.utils.set_random_seed(cfg.seed)
    try:
        net = wl.model()
    except Exception as e:
        raise PluginError(f"the model builder raised {type(e).__name__}: {e}") from e
    if not isinstance(net, tf.keras.Model):
        raise PluginError(f"the model builder must return a keras.Model, got {_kind(net)}")
    model = Custom(net, loss, accuracy)
    _probe(model, data if isinstance(data, Dataset) else _first(data), wl.loss)
    if accuracy is None:  # the held-out set serves only the accuracy
        data = Dataset(data.x, data.y) if isinstance(data, Dataset) else _without_test(data)
    return data, model


def _without_test(stream: Stream) -> Stream:
    return Stream(stream.keys, stream.load, stream.x_spec, stream.y_spec)


def _call_entry_point(cfg: TrialConfig) -> Workload:
    target = cfg.entry_point or ""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise PluginError(f"--entry-point must be module:function, got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise PluginError(
            f"entry point {target}: cannot import {module_name!r} ({type(e).__name__}: {e}); "
            "is the package installed in the trainer's Python (the trainer image)?"
        ) from e
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise PluginError(f"entry point {target}: {module_name} has no function {attr!r}")
    params = types.MappingProxyType(json.loads(cfg.workload_parameters))
    ctx = Context(parameters=params, seed=cfg.seed, dataset_size=cfg.dataset_size)
    try:
        wl = fn(ctx)
    except Exception as e:
        raise PluginError(f"entry point {target} raised {type(e).__name__}: {e}") from e
    if not isinstance(wl, Workload):
        raise PluginError(
            f"entry point {target} must return scalelab_trainer.plugin.Workload, got {_kind(wl)}"
        )
    if wl.api_version not in SPOKEN:
        spoken = " and ".join(map(str, SPOKEN))
        raise PluginError(
            f"the workload speaks plugin API {wl.api_version}; this trainer speaks {spoken}"
        )
    return wl


def _kind(value: Any) -> str:
    return type(value).__qualname__


def _array(value: Any, name: str) -> np.ndarray[Any, Any]:
    try:
        arr = np.asarray(value)
    except Exception as e:
        raise PluginError(f"{name} is not an array: {e}") from e
    if arr.ndim == 0 or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise PluginError(
            f"{name} must be a numeric array of examples, got {arr.dtype} {arr.shape}"
        )
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise PluginError(f"{name} holds NaN or infinite values")
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        return arr.astype(np.int64)
    return arr.astype(np.float32)


def _pair(x: Any, y: Any, names: tuple[str, str]) -> tuple[np.ndarray[Any, Any], ...]:
    xa, ya = _array(x, names[0]), _array(y, names[1])
    if xa.shape[0] != ya.shape[0]:
        raise PluginError(
            f"{names[0]} has {xa.shape[0]} examples but {names[1]} has {ya.shape[0]} "
            "(the first axis counts examples)"
        )
    return xa.astype(np.float32), ya


def _records(records: Any, size: int | None, name: str) -> Stream:
    """The first `size` keys of `records` (all when `size` is None) as a Stream, its example
    shapes read from the first example."""
    if not isinstance(records, Records):
        raise PluginError(f"{name} must be scalelab_trainer.plugin.Records, got {_kind(records)}")
    keys = np.asarray([str(k) for k in records.keys], dtype=str)
    if size is not None and len(keys) < size:
        raise PluginError(
            f"{name} has {len(keys)} keys; workload.datasetSize asks for {size} examples "
            "(lower datasetSize or give more)"
        )
    if not len(keys):
        raise PluginError(f"{name} has no keys")
    try:
        stream = stream_of(keys[:size], records.load)
    except Exception as e:
        raise PluginError(
            f"{name}: load({keys[0]!r}) cannot be traced ({type(e).__name__}: {_first_line(e)})"
        ) from e
    for what, spec in (("x", stream.x_spec), ("y", stream.y_spec)):
        if not spec.shape.is_fully_defined():
            raise PluginError(
                f"{name}: load must give every example the same shape; {what} is {spec.shape} "
                "(set it with tf.ensure_shape or tf.reshape)"
            )
    return stream


def _stream(wl: Workload, size: int | None) -> Stream:
    if wl.x is not None or wl.x_test is not None:
        raise PluginError("records replaces x, y, x_test and y_test: give one or the other")
    train = _records(wl.records, size, "records")
    if wl.test_records is None:
        return train
    test = _records(wl.test_records, None, "test_records")
    if test.x_spec.shape != train.x_spec.shape:
        raise PluginError(
            f"test_records examples are {test.x_spec.shape}, records' are {train.x_spec.shape}"
        )
    return Stream(train.keys, train.load, train.x_spec, train.y_spec, test)


def _first(stream: Stream) -> Dataset:
    """The stream's first examples, in memory: what the model and the loss are checked on."""
    try:
        x, y = next(iter(stream.examples(np.arange(min(PROBE, stream.size))).batch(PROBE)))
    except Exception as e:
        raise PluginError(
            f"records: load({stream.keys[0]!r}) raised {type(e).__name__}: {_first_line(e)}"
        ) from e
    return Dataset(x=x.numpy(), y=y.numpy())


def _dataset(wl: Workload, size: int | None) -> Dataset:
    """The first `size` examples of x and y (all when `size` is None), and the held-out set."""
    if wl.x is None or wl.y is None:
        raise PluginError("the workload has no data: give x and y, or records (plugin API 2)")
    x, y = _pair(wl.x, wl.y, ("x", "y"))
    if not x.shape[0]:
        raise PluginError("x and y hold no examples")
    if size is not None and x.shape[0] < size:
        raise PluginError(
            f"the workload has {x.shape[0]} training examples; workload.datasetSize asks for "
            f"{size} (lower datasetSize or return more)"
        )
    if (wl.x_test is None) != (wl.y_test is None):
        raise PluginError("x_test and y_test come together (both or neither)")
    x_test = y_test = None
    if wl.x_test is not None:
        x_test, y_test = _pair(wl.x_test, wl.y_test, ("x_test", "y_test"))
        if x_test.shape[1:] != x.shape[1:]:
            raise PluginError(f"x_test examples are {x_test.shape[1:]}, x's are {x.shape[1:]}")
    return Dataset(x=x[:size], y=y[:size], x_test=x_test, y_test=y_test)


def _loss(loss: Any) -> PerExample:
    if callable(loss):
        return loss  # type: ignore[no-any-return]
    if loss == "mean_squared_error":
        return _squared_error
    if loss == "sparse_categorical_crossentropy":
        return lambda y, out: tf.keras.losses.sparse_categorical_crossentropy(
            y, out, from_logits=True
        )
    if loss == "binary_crossentropy":
        return lambda y, out: tf.nn.sigmoid_cross_entropy_with_logits(
            tf.cast(y, tf.float32), _one_per_example(out)
        )
    raise PluginError(f"loss must be one of {', '.join(LOSSES)} or a callable, got {loss!r}")


def _squared_error(y: tf.Tensor, out: tf.Tensor) -> tf.Tensor:
    y = tf.cast(y, out.dtype)
    if out.shape.rank == y.shape.rank + 1 and out.shape[-1] == 1:
        out = tf.squeeze(out, -1)
    if out.shape.rank != y.shape.rank:
        raise ValueError(f"output shape {out.shape} does not fit targets of shape {y.shape}")
    err = tf.square(out - y)
    return tf.reduce_mean(tf.reshape(err, [tf.shape(err)[0], -1]), axis=1)


def _one_per_example(out: tf.Tensor) -> tf.Tensor:
    if out.shape.rank == 2 and out.shape[-1] == 1:
        return tf.squeeze(out, -1)
    if out.shape.rank != 1:
        raise ValueError(f"binary_crossentropy needs one logit per example, got {out.shape}")
    return out


def _accuracy(accuracy: Any) -> PerExample | None:
    if accuracy is None or callable(accuracy):
        return accuracy  # type: ignore[no-any-return]
    if accuracy == "sparse_categorical":
        return lambda y, out: tf.equal(tf.argmax(out, axis=-1), tf.cast(y, tf.int64))
    if accuracy == "binary":
        return lambda y, out: tf.equal(
            tf.cast(_one_per_example(out) > 0, tf.int64), tf.cast(y, tf.int64)
        )
    raise PluginError(
        f"accuracy must be one of {', '.join(ACCURACIES)}, a callable or None, got {accuracy!r}"
    )


def _probe(model: Custom, ds: Dataset, loss_name: Any) -> None:
    """Apply the model and the loss to the first examples: shapes must fit, before any step."""
    x, y = tf.constant(ds.x[:PROBE]), tf.constant(ds.y[:PROBE])
    name = loss_name if isinstance(loss_name, str) else "the loss"
    try:
        out = model.net(x, training=False)
    except Exception as e:
        raise PluginError(
            f"the model cannot take the data: x examples of shape {ds.x.shape[1:]} "
            f"({type(e).__name__}: {_first_line(e)})"
        ) from e
    active = [m.name for m in model.net.submodules if getattr(m, "activity_regularizer", None)]
    if active:
        raise PluginError(
            f"activity regularisers are not supported (layers {active}); the trainer adds "
            "the model's weight regularisers (kernel_regularizer, bias_regularizer) to the loss"
        )
    if loss_name == "sparse_categorical_crossentropy":
        classes = int(out.shape[-1]) if out.shape.rank == 2 else 0
        low, high = int(ds.y.min()), int(ds.y.max())
        if ds.y.ndim != 1 or classes < 1 or low < 0 or high >= classes:
            raise PluginError(
                f"{name} needs logits of shape (batch, classes) and integer labels in "
                f"[0, classes): the model outputs {tuple(out.shape)}, labels span "
                f"[{low}, {high}] with shape {ds.y.shape}"
            )
    try:
        per = model.per_example_loss(x, y, training=False)
    except Exception as e:
        raise PluginError(
            f"the model's output {tuple(out.shape)} does not fit {name} with targets "
            f"{tuple(y.shape)} ({type(e).__name__}: {_first_line(e)})"
        ) from e
    if per.shape != (x.shape[0],):
        raise PluginError(
            f"{name} must give one loss per example, shape ({x.shape[0]},), got {tuple(per.shape)}"
        )


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [""])[0][:300]


def _checksum(ds: Dataset | Stream) -> list[int]:
    """CRC-32 of the training data and labels, or of a stream's keys and its size (low 31 bits:
    exact in an int64 tensor)."""
    if isinstance(ds, Stream):
        return [zlib.crc32("\n".join(ds.keys).encode()) & 0x7FFFFFFF, ds.size]
    return [zlib.crc32(np.ascontiguousarray(a).tobytes()) & 0x7FFFFFFF for a in (ds.x, ds.y)]


def _agree(error: str | None, ds: Dataset | Stream | None) -> None:
    """Every rank learns whether any rank failed and whether their data agree."""
    if world.size() == 1:
        if error:
            raise PluginError(error)
        return
    mine = [1, 0, 0] if ds is None else [0, *_checksum(ds)]
    # Horovod: one small allgather; every rank calls it, failed or not, so none waits alone.
    rows = world.hvd().allgather(tf.constant([mine], tf.int64)).numpy()
    if error:
        raise PluginError(error)
    failed = [r for r, row in enumerate(rows) if row[0]]
    if failed:
        raise PluginError(f"the workload failed on rank(s) {failed} (see their logs)")
    if len({tuple(row[1:]) for row in rows}) > 1:
        raise PluginError(
            "the workload's data differ between ranks: build x and y (or the records' keys, "
            "in a sorted order) from ctx.seed (never from the rank, the host or the clock)"
        )
