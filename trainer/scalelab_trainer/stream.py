"""Streamed training data (plugin API 2): each rank reads its share of every global batch from
files through tf.data, in the order the in-memory path would gather it.

The order: epoch e's order is `step.epoch_order` (the identity, or with --shuffle a permutation
of the example indices drawn from (seed, e)), global batch s is positions [s·B, min((s+1)·B, n))
of it, and rank r of N takes the contiguous share `Layout.shares` gives, the rule the in-memory
step applies in its graph. Each rank builds, per epoch, a tf.data pipeline over the keys of its
own positions only (`Feed`): `load` runs in parallel with the order kept, the batches are
prefetched, so reading overlaps the steps. Global batch s is therefore the same examples for any
N, and every example is read by exactly one rank per epoch.

Memory, per rank: the n keys (strings, e.g. file paths) and one epoch order (n int64), the
tf.data buffers (a few of this rank's batches and the examples being loaded), and the model; the
examples stay in the files. Measuring the full-dataset loss (and the test accuracy) is one more
streamed pass over the data, sharded like the in-memory one (`streamed_mean`).

The step loop waits for its next batch in `Feed.batch`; those seconds are the input's share of
an epoch (`InputTime`): `inputBound` when it is more than INPUT_BOUND_FRACTION of the epoch's
step loop. Called by custom.py (building a `Stream`), build.py and epochs.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from scalelab_trainer import world
from scalelab_trainer.step import Layout

#: An epoch is input-bound when the step loop waited for input more than this share of its time.
INPUT_BOUND_FRACTION = 0.1

#: The input-time fields of `epoch` and `progress` events and of the result (the trial contract).
INPUT_FIELDS = ("inputWaitSeconds", "stepCallSeconds", "inputWaitFraction", "inputBound")

Load = Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]


@dataclass(frozen=True)
class Stream:
    """Examples held as keys, loaded by tf.data: `load(key) -> (x, y)`, cast as in memory."""

    keys: npt.NDArray[np.str_]  # one per example, the base order
    load: Load
    x_spec: tf.TensorSpec  # one example's x and y, after the cast
    y_spec: tf.TensorSpec
    test: Stream | None = None  # the held-out set, for the accuracy

    @property
    def size(self) -> int:
        return len(self.keys)

    def examples(self, ids: npt.NDArray[np.int64] | tf.Tensor) -> tf.data.Dataset:
        """The examples `ids`, in this order, loaded in parallel (the order kept)."""
        keys, load = tf.constant(self.keys), cast_load(self.load)

        def example(i: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return load(tf.gather(keys, i))

        ids = tf.data.Dataset.from_tensor_slices(ids)
        return ids.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def empty(self) -> tuple[tf.Tensor, tf.Tensor]:
        """A batch of no examples: a rank's share of a global batch smaller than N."""
        x, y = self.x_spec, self.y_spec
        return tf.zeros([0, *x.shape], x.dtype), tf.zeros([0, *y.shape], y.dtype)


def stream_of(keys: npt.NDArray[np.str_], load: Load) -> Stream:
    """A Stream of `keys`, its example shapes read from the first example's."""
    spec = tf.data.Dataset.from_tensor_slices(keys[:1]).map(cast_load(load)).element_spec
    return Stream(keys, load, spec[0], spec[1])


def cast_load(load: Load) -> Load:
    """`load` with x as float32 and y as int64 when integer (labels), else float32."""

    def loaded(key: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x, y = load(key)
        x, y = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
        label = tf.int64 if y.dtype.is_integer or y.dtype == tf.bool else tf.float32
        return tf.cast(x, tf.float32), tf.cast(y, label)

    return loaded


def share_ids(layout: Layout, order: npt.NDArray[np.int64]) -> list[npt.NDArray[np.int64]]:
    """The example ids this rank computes at each step of an epoch in `order`."""
    lo, hi = layout.shares()
    return [order[a:b] for a, b in zip(lo, hi, strict=True)]


def _runs(sizes: list[int]) -> list[tuple[int, int]]:
    """Consecutive equal sizes as (size, count): the steps one fixed-size batching covers (a
    share's size is the same for every full global batch, so there are at most two runs)."""
    out: list[tuple[int, int]] = []
    for size in sizes:
        if out and out[-1][0] == size:
            out[-1] = (size, out[-1][1] + 1)
        else:
            out.append((size, 1))
    return out


class Feed:
    """This rank's batches of every epoch from `first` to `last`, step by step, prefetched across
    epoch ends (the next epoch's first batches load during the epoch-end measurements); the
    seconds the step loop waited for them, per epoch."""

    def __init__(
        self,
        stream: Stream,
        layout: Layout,
        order_of: Callable[[int], npt.NDArray[np.int64]],
        epochs: tuple[int, int],
    ) -> None:
        self.stream, self.layout, self.order_of = stream, layout, order_of
        lo, hi = layout.shares()
        self.sizes = [int(k) for k in hi - lo]  # this rank's examples at each step of an epoch
        first, last = epochs
        batches = tf.data.Dataset.range(first, last + 1).flat_map(self._epoch)
        self.batches = iter(batches.prefetch(tf.data.AUTOTUNE)) if any(self.sizes) else None
        self.waited = 0.0  # seconds spent in `batch` this epoch
        self.last_wait = 0.0
        self.called = 0.0  # seconds in step calls this epoch (the epoch loop adds them)

    def _ids(self, epoch: tf.Tensor) -> npt.NDArray[np.int64]:
        """The example ids this rank computes in `epoch`, step after step."""
        return np.concatenate(share_ids(self.layout, self.order_of(int(epoch))))

    def _epoch(self, epoch: tf.Tensor) -> tf.data.Dataset:
        """One epoch's batches: a fixed-size batching per run of equal share sizes."""
        ids = tf.ensure_shape(tf.py_function(self._ids, [epoch], tf.int64), [sum(self.sizes)])
        batches: tf.data.Dataset | None = None
        pos = 0
        for size, count in _runs(self.sizes):
            if size:
                part = self.stream.examples(ids[pos : pos + size * count]).batch(size)
                batches = part if batches is None else batches.concatenate(part)
            pos += size * count
        assert batches is not None  # some share is not empty (else there is no Feed)
        return batches

    def batch(self, s: int) -> tuple[tf.Tensor, tf.Tensor]:
        """This rank's share of the epoch's step s (steps are asked for in order)."""
        if not self.sizes[s] or self.batches is None:
            self.last_wait = 0.0
            return self.stream.empty()
        t0 = time.perf_counter()
        x, y = next(self.batches)
        self.last_wait = time.perf_counter() - t0
        self.waited += self.last_wait
        return x, y

    def epoch_done(self) -> tuple[float, float]:
        """The epoch's seconds waited for input and spent in step calls; the next starts at 0."""
        spent = self.waited, self.called
        self.waited = self.called = 0.0
        return spent


@dataclass
class InputTime:
    """Seconds the step loop waited for input and spent in step calls (rank 0's calls; with
    N > 1 the wait and its fraction are the largest of any rank's)."""

    wait: float = 0.0
    calls: float = 0.0
    fraction: float = 0.0

    def add(self, other: InputTime) -> None:
        self.wait += other.wait
        self.calls += other.calls
        total = self.wait + self.calls
        self.fraction = self.wait / total if total > 0 else 0.0

    def fields(self) -> dict[str, float | bool]:
        """The event's and the result's fields (INPUT_FIELDS)."""
        values = (self.wait, self.calls, self.fraction, self.fraction > INPUT_BOUND_FRACTION)
        return dict(zip(INPUT_FIELDS, values, strict=True))


def input_time(waited: float, calls: float, size: int) -> InputTime:
    """One epoch's input time; with N > 1 the largest wait and wait fraction of any rank (the
    slowest input holds every rank back at the next allreduce)."""
    total = waited + calls
    fraction = waited / total if total > 0 else 0.0
    if size > 1:
        # Horovod: every rank closes the same epochs, so every rank makes this call.
        hvd = world.hvd()
        both = hvd.allreduce(tf.constant([waited, fraction], tf.float64), op=hvd.Max).numpy()
        waited, fraction = float(both[0]), float(both[1])
    return InputTime(waited, calls, fraction)


def streamed_mean(
    part: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    stream: Stream,
    layout: Layout,
    chunk: int,
) -> Callable[[], tf.Tensor]:
    """Σ part(x, y) over the stream / its size: each rank reads its contiguous shard of the base
    order in batches of `chunk`, then the ranks SUM-allreduce (the in-memory rule)."""
    n, N, r = stream.size, layout.size, layout.rank
    lo, hi = n * r // N, n * (r + 1) // N
    specs = (
        tf.TensorSpec([None, *stream.x_spec.shape], stream.x_spec.dtype),
        tf.TensorSpec([None, *stream.y_spec.shape], stream.y_spec.dtype),
    )
    summed = tf.function(
        lambda x, y: tf.cast(part(x, y), tf.float64), input_signature=specs, autograph=False
    )

    def mean() -> tf.Tensor:
        total = tf.zeros([], tf.float64)
        batches = stream.examples(np.arange(lo, hi, dtype=np.int64)).batch(chunk)
        for x, y in batches.prefetch(tf.data.AUTOTUNE):
            total += summed(x, y)
        if N > 1:
            # Horovod: each rank summed its shard; every rank sees the same value and so makes
            # the same stopping decision.
            total = world.hvd().allreduce(total, op=world.hvd().Sum)
        return total / n

    return mean
