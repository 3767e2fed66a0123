"""The compiled step loop: K optimizer steps per tf.function call, with Horovod in the graph.

Data sharding (the contract's central promise): the epoch's order is a permutation of the dataset
(identity unless shuffling), global batch s is positions [s·B, min((s+1)·B, n)), and rank r of N
takes the contiguous slice [g·r/N, g·(r+1)/N) of it (g = that batch's size). Each rank's loss is
its per-example losses summed and divided by g, and ranks SUM their gradients, so the update is the
gradient of the mean loss over exactly the same g examples whatever N is (an uneven last batch
included). Called by train.py; the loop returns one float64 vector per call (one host sync).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import horovod.tensorflow as hvd
import numpy as np
import tensorflow as tf

from scalelab_trainer.models import Model
from scalelab_trainer.noise import two_batch_estimates
from scalelab_trainer.optimizers import Optimizer
from scalelab_trainer.schedule import Schedule

# Indices into the vector a call returns.
DONE, LOSS_SUM, LAST_LOSS, DIVERGED, G2_SUM, TR_SUM, NOISE_COUNT, TARGET_HIT = range(8)


@dataclass(frozen=True)
class Layout:
    """Who takes which examples."""

    n: int  # dataset size
    batch: int  # global batch B
    size: int  # Horovod processes N
    rank: int  # this process
    micro: int  # micro-batches per rank (2 on one process when measuring noise, else 1)

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.n // self.batch)

    def batch_sizes(self, first: int, count: int) -> int:
        """Global examples in steps first .. first+count-1 (steps counted across epochs)."""
        pos = (np.arange(first, first + count) % self.steps_per_epoch) * self.batch
        return int(np.minimum(self.batch, self.n - pos).sum())


def sq_norm(tensors: list[tf.Tensor]) -> tf.Tensor:
    return tf.add_n([tf.reduce_sum(tf.square(t)) for t in tensors])


def build_step_loop(
    model: Model,
    opt: Optimizer,
    schedule: Schedule,
    layout: Layout,
    *,
    x: tf.Tensor,
    y: tf.Tensor,
    perm: tf.Variable,
    measure_noise: bool,
    quadratic_loss: Callable[[], tf.Tensor] | None,
    reduce: bool = True,
) -> Callable[..., tf.Tensor]:
    """A tf.function running `count` steps from global step `first`; stops early on divergence.

    `quadratic_loss` (linear models) gives the exact full-dataset loss after every update, so
    steps-to-target is counted per update; `reduce=False` builds the compute-only twin used to
    split step time into compute and allreduce.
    """
    dt = model.dtype
    n, B, N, r, M = layout.n, layout.batch, layout.size, layout.rank, layout.micro
    S = layout.steps_per_epoch
    variables = model.trainable

    def one_step(step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        start = (step % S) * B
        g = tf.minimum(tf.constant(B, tf.int64), n - start)  # this global batch's size
        lo, hi = start + g * r // N, start + g * (r + 1) // N  # this rank's contiguous slice
        gf = tf.cast(g, dt)
        grads: list[tf.Tensor] | None = None
        loss = tf.zeros([], dt)
        small_sq, small_n = tf.zeros([], dt), tf.zeros([], dt)
        for m in range(M):  # micro-batches: the small batches of the noise estimator on 1 process
            mlo, mhi = lo + (hi - lo) * m // M, lo + (hi - lo) * (m + 1) // M
            idx = perm[mlo:mhi]
            xb, yb = tf.gather(x, idx), tf.gather(y, idx)
            with tf.GradientTape() as tape:
                part = tf.reduce_sum(model.per_example_loss(xb, yb, training=True)) / gf
            gm = tape.gradient(part, variables)
            loss += part
            grads = gm if grads is None else [a + b for a, b in zip(grads, gm, strict=True)]
            if measure_noise:
                k = tf.cast(mhi - mlo, dt)
                # Gradient of the micro-batch's own mean loss is gm·g/k; its squared norm.
                has = tf.cast(k > 0, dt)
                small_sq += has * sq_norm(gm) * tf.square(gf / tf.maximum(k, 1))
                small_n += has
        assert grads is not None
        stats = tf.stack([loss, small_sq, small_n])
        if reduce and N > 1:
            # Horovod: one fused allreduce (SUM) of every gradient plus the step's statistics,
            # what DistributedGradientTape does, written out because the noise estimator needs
            # each rank's local gradient norm before the reduction (computed above).
            out = hvd.grouped_allreduce([*grads, stats], op=hvd.Sum)
            grads, stats = out[:-1], out[-1]
        # (one process: nothing to reduce, and skipping avoids a trip through Horovod's
        # background thread on every step)
        return grads, stats[0], stats[1] / tf.maximum(stats[2], 1), gf

    def loop(first: tf.Tensor, count: tf.Tensor, limit: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
        loss_sum, last = tf.zeros([], tf.float64), tf.zeros([], tf.float64)
        g2_sum, tr_sum, noise_n = (tf.zeros([], tf.float64) for _ in range(3))
        done, diverged, hit = (
            tf.constant(0, tf.int64),
            tf.constant(False),
            tf.constant(-1, tf.int64),
        )
        for i in tf.range(count):
            step = first + i
            grads, loss, small_sq, gf = one_step(step)
            loss64 = tf.cast(loss, tf.float64)
            if tf.logical_or(tf.logical_not(tf.math.is_finite(loss64)), loss64 > limit):
                diverged = tf.constant(True)
                break
            if measure_noise:
                b_small = tf.cast(gf, tf.float64) / (N * M)
                even = tf.equal(tf.math.floormod(tf.cast(gf, tf.int64), N * M), 0)
                g2, tr = two_batch_estimates(
                    tf.cast(small_sq, tf.float64),
                    tf.cast(sq_norm(grads), tf.float64),
                    b_small,
                    tf.cast(gf, tf.float64),
                )
                use = tf.logical_and(even, b_small < tf.cast(gf, tf.float64))
                zero = tf.zeros([], tf.float64)
                g2_sum += tf.where(use, g2, zero)
                tr_sum += tf.where(use, tr, zero)
                noise_n += tf.cast(use, tf.float64)
            if reduce:
                opt.apply(grads, variables, schedule.rate_tensor(tf.cast(step, tf.float64)))
            loss_sum += loss64
            last = loss64
            done += 1
            if quadratic_loss is not None:  # traced once: a Python-level switch
                hit = tf.where(tf.logical_and(hit < 0, quadratic_loss() <= target), step + 1, hit)
        return tf.stack(
            [
                tf.cast(done, tf.float64),
                loss_sum,
                last,
                tf.cast(diverged, tf.float64),
                g2_sum,
                tr_sum,
                noise_n,
                tf.cast(hit, tf.float64),
            ]
        )

    return cast(Callable[..., tf.Tensor], tf.function(loop))


def build_full_loss(
    model: Model, layout: Layout, x: tf.Tensor, y: tf.Tensor, chunk: int = 1024
) -> Callable[[], tf.Tensor]:
    """Mean loss over the whole dataset; each rank sums its contiguous shard, then SUM-allreduce."""
    n, N, r = layout.n, layout.size, layout.rank
    lo, hi = n * r // N, n * (r + 1) // N

    def full_loss() -> tf.Tensor:
        total = tf.zeros([], tf.float64)
        for s in tf.range(lo, hi, chunk):
            e = tf.minimum(s + chunk, hi)
            part = model.per_example_loss(x[s:e], y[s:e], training=False)
            total += tf.cast(tf.reduce_sum(part), tf.float64)
        if N > 1:
            # Horovod: every rank must see the same loss, so all make the same stopping decision.
            total = hvd.allreduce(total, op=hvd.Sum)
        return total / n

    return cast(Callable[..., tf.Tensor], tf.function(full_loss))


def build_accuracy(
    model: Model, layout: Layout, x: tf.Tensor, y: tf.Tensor, chunk: int = 1024
) -> Callable[[], tf.Tensor]:
    """Share of held-out examples classified correctly, sharded like `build_full_loss`."""
    n, N, r = int(x.shape[0]), layout.size, layout.rank
    lo, hi = n * r // N, n * (r + 1) // N

    def accuracy() -> tf.Tensor:
        total = tf.zeros([], tf.float64)
        for s in tf.range(lo, hi, chunk):
            e = tf.minimum(s + chunk, hi)
            total += tf.cast(model.correct(x[s:e], y[s:e]), tf.float64)
        if N > 1:
            # Horovod: each rank counted its shard of the test set; sum the counts.
            total = hvd.allreduce(total, op=hvd.Sum)
        return total / n

    return cast(Callable[..., tf.Tensor], tf.function(accuracy))
