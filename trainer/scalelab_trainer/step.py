"""The compiled step loop: K optimizer steps per tf.function call, with Horovod in the graph.

Data sharding (the contract's central promise): the epoch's order is a permutation of the dataset
(identity unless shuffling), global batch s is positions [s·B, min((s+1)·B, n)), and rank r of N
takes the contiguous slice [g·r/N, g·(r+1)/N) of it (g = that batch's size). Each rank's loss is
its per-example losses summed and divided by g, and ranks SUM their gradients, so the update is the
gradient of the mean loss over exactly the same g examples whatever N is (an uneven last batch
included). Called by train.py; the loop returns one float64 vector per call (one host sync).
For linear models the call runs whole epochs and applies the stopping rules at each epoch end.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from scalelab_trainer import world
from scalelab_trainer.models import Model
from scalelab_trainer.noise import two_batch_estimates
from scalelab_trainer.optimizers import Optimizer
from scalelab_trainer.precision import LossScale, all_finite
from scalelab_trainer.schedule import Schedule

# Positions in the vector a call returns (one host sync per call); read it through `CallOutput`.
(
    DONE,
    LOSS_SUM,
    DIVERGED,
    G2_SUM,
    TR_SUM,
    NOISE_COUNT,
    G2_SQ,
    TR_SQ,
    G2_TR,
    TARGET_HIT,
    FULL_LOSS,
) = range(11)


@dataclass(frozen=True)
class CallOutput:
    """One call of the step loop, decoded by name from the vector it returns."""

    done: int  # steps applied (a diverging step is not)
    loss_sum: float  # sum of the applied steps' losses (before each update)
    diverged: bool  # the call stopped on a non-finite or too-large loss
    g2_sum: float  # noise estimator: sum of the |G|² estimates
    tr_sum: float  # noise estimator: sum of the tr(Σ) estimates
    noise_count: int  # steps that contributed to the noise sums
    g2_sq: float  # ... and the sums of their squares and product (the estimate's standard error)
    tr_sq: float
    g2_tr: float
    target_hit: int | None  # global step after which the exact loss first reached the target
    full_loss: float  # linear models: exact full-dataset loss after the call; others NaN
    update_losses: npt.NDArray[np.float64]  # record_updates: each applied step's loss
    update_params: npt.NDArray[np.float64]  # record_params: (done, P) parameters after each step

    @classmethod
    def decode(cls, vector: npt.NDArray[np.float64], params: int = 0) -> CallOutput:
        """Name the fields of one call's vector (the host keeps only the `done` steps'
        records); `params`: P when the loop records the parameters after every step."""
        rest = vector[FULL_LOSS + 1 :]
        count = len(rest) // (1 + params)  # the call's step budget, when recording
        return cls.of(vector, rest[:count], rest[count:].reshape(-1, params) if params else None)

    @classmethod
    def of(
        cls,
        row: npt.NDArray[np.float64],
        losses: npt.NDArray[np.float64],
        params: npt.NDArray[np.float64] | None,
    ) -> CallOutput:
        """The fields DONE .. FULL_LOSS of `row`, with the steps' records (cut to `done`)."""
        done = int(row[DONE])
        hit = int(row[TARGET_HIT])
        return cls(
            done=done,
            loss_sum=float(row[LOSS_SUM]),
            diverged=bool(row[DIVERGED]),
            g2_sum=float(row[G2_SUM]),
            tr_sum=float(row[TR_SUM]),
            noise_count=int(row[NOISE_COUNT]),
            g2_sq=float(row[G2_SQ]),
            tr_sq=float(row[TR_SQ]),
            g2_tr=float(row[G2_TR]),
            target_hit=hit if hit >= 0 else None,
            full_loss=float(row[FULL_LOSS]),
            update_losses=losses[:done],
            update_params=params[:done] if params is not None else losses[:0],
        )


def decode_epochs(
    vector: npt.NDArray[np.float64], count: int, steps_per_epoch: int, params: int, recorded: int
) -> list[tuple[CallOutput, npt.NDArray[np.float64]]]:
    """One call of the epoch loop (`count` epochs asked, P = `params` parameters; `recorded`:
    0, or 1 when every step's loss is recorded, or 1 + P when its parameters are too): per
    epoch run, its fields (records cut to its steps) and θ at its end."""
    S, width = steps_per_epoch, FULL_LOSS + 1 + params
    ran = int(vector[0])
    rows = vector[1 : 1 + count * width].reshape(count, width)
    rest = vector[1 + count * width :]
    losses = rest[: count * S] if recorded else rest[:0]
    ps = rest[count * S :].reshape(-1, params) if recorded > 1 else None
    out = []
    for j in range(ran):
        lo, hi = j * S, (j + 1) * S
        cut = ps[lo:hi] if ps is not None else None
        out.append((CallOutput.of(rows[j], losses[lo:hi], cut), rows[j, FULL_LOSS + 1 :]))
    return out


class Compiled(Protocol):
    """A tf.function: callable, and traceable ahead of the first call."""

    def __call__(self, *args: tf.Tensor) -> tf.Tensor: ...

    def get_concrete_function(self, *specs: Any) -> Any: ...


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

    def shares(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Positions [lo, hi) of the epoch's order that this rank takes in each step of an
        epoch: the rule `StepProgram.one_step` applies in the graph, on the host."""
        start = np.arange(self.steps_per_epoch, dtype=np.int64) * self.batch
        g = np.minimum(self.batch, self.n - start)
        return start + g * self.rank // self.size, start + g * (self.rank + 1) // self.size


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> npt.NDArray[np.int64]:
    """The epoch's order of the n examples: the identity, or with shuffling a permutation drawn
    from (trial seed, epoch), the same on every rank."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng([seed, epoch]).permutation(n)


def sq_norm(tensors: list[tf.Tensor]) -> tf.Tensor:
    return tf.add_n([tf.reduce_sum(tf.square(t)) for t in tensors])


@dataclass(frozen=True)
class Options:
    """What a step program computes besides the steps. Each is a Python constant at tracing, so
    an option not taken emits no op (every op left out is saved at each step)."""

    measure_noise: bool = False  # the two-batch estimates of |G|² and tr(Σ) at every step
    quadratic_loss: Callable[[], tf.Tensor] | None = None  # linear models: exact full loss
    track_target: bool = False  # with quadratic_loss: check the target after every update
    one_per_call: bool = False  # calls of exactly one step: no graph loop around it
    record_updates: bool = False  # every step's loss appended to the returned vector
    record_params: bool = False  # ... and the trainable parameters after every step
    reduce: bool = True  # False: the compute-only twin (no allreduce, no update)
    epoch_rule: tuple[str, float] | None = None  # the epoch loop: stopping loss and tolerance
    loss_scale: LossScale | None = None  # float16: the dynamic loss scale (precision.py)
    jit_compile: bool = False  # each micro-batch's forward and backward pass compiled by XLA


def build_step_loop(
    model: Model,
    opt: Optimizer,
    schedule: Schedule,
    layout: Layout,
    *,
    x: tf.Tensor,
    y: tf.Tensor,
    perm: tf.Variable,
    options: Options,
) -> Compiled:
    """A tf.function running `count` steps from global step `first`; stops early on divergence.

    `options.quadratic_loss` (linear models) gives the exact full-dataset loss cheaply: it is
    returned with every call (no second call per epoch) and, with `track_target`, checked after
    every update, so steps-to-target is counted per update. `reduce=False` builds the
    compute-only twin used to split step time into compute and allreduce. `one_per_call` builds
    the loop-free variant for calls of exactly one step (`count` must then be 1).
    `record_updates` appends every step's loss to the returned vector, and `record_params` then
    the trainable parameters after every step (flattened, in variable order); read the vector
    with `CallOutput.decode`.
    `epoch_rule` (linear models: quadratic_loss given; the stopping loss, full or update, and the
    relative tolerance) builds the epoch loop instead: `count` whole epochs per call with the
    stopping rules applied at each epoch end inside the graph, one row per epoch (the fields,
    the exact loss and θ); read it with `decode_epochs`.
    """
    program = StepProgram(model, opt, schedule, layout, data=(x, y, perm), options=options)
    # Written without AutoGraph: converting this code costs seconds on first use.
    fn = program.loop if options.epoch_rule is None else program.epochs
    return cast(Compiled, tf.function(fn, autograph=False))


class StepProgram:
    """The ops of the step loop, built at tracing from parts: one step (the batch's slice, its
    gradients over micro-batches, the allreduce), the loop body (divergence, noise estimates, the
    update, target and records), the step loop and the epoch loop.

    Everything a part branches on (layout, data, options) is a Python attribute, so tracing sees
    constants and emits no op for a branch not taken.
    """

    def __init__(
        self,
        model: Model,
        opt: Optimizer,
        schedule: Schedule,
        layout: Layout,
        *,
        data: tuple[tf.Tensor | None, tf.Tensor | None, tf.Variable | None],
        options: Options,
    ) -> None:
        self.model, self.opt, self.schedule, self.layout = model, opt, schedule, layout
        self.x, self.y, self.perm = data  # the dataset and the epoch's order (None: fed)
        self.o = options
        self.variables = model.trainable
        self.params = sum(int(np.prod(v.shape)) for v in self.variables)  # P
        # XLA compiles the forward and backward pass only: the examples' slice has a size known
        # at run time and Horovod's allreduce is not an XLA op, so both stay outside.
        self.micro = (
            tf.function(self._micro, jit_compile=True, autograph=False)
            if options.jit_compile
            else self._micro
        )

    # --- one step -------------------------------------------------------------------------

    def one_step(self, step: tf.Tensor) -> tuple[list[tf.Tensor], tf.Tensor, tf.Tensor, tf.Tensor]:
        """Global step `step`: its (reduced) gradients and loss, the noise estimator's mean
        squared small-batch gradient norm, and the global batch size g."""
        L = self.layout
        start = (step % L.steps_per_epoch) * L.batch
        g = tf.minimum(tf.constant(L.batch, tf.int64), L.n - start)  # this global batch's size
        # This rank's contiguous slice (one process: the whole batch, without the arithmetic;
        # every op left out of the step is saved at tracing, first call and each step).
        N, r = L.size, L.rank
        lo, hi = (start, start + g) if N == 1 else (start + g * r // N, start + g * (r + 1) // N)
        gf = tf.cast(g, self.model.dtype)
        penalty = self._penalty()
        grads, loss, small_sq, small_n = self._gradients(lo, hi, gf, penalty)
        if self.o.reduce and N > 1:
            grads, loss, small_sq, small_n = _allreduce(grads, loss, small_sq, small_n)
        # (one process: nothing to reduce, and skipping avoids a trip through Horovod's
        # background thread on every step)
        if penalty is not None:
            # The model's own losses, once, after the sum over ranks: every rank has the same
            # weights, hence the same penalty. Adding 1/N of it on each rank before the sum is
            # the same in exact arithmetic but not in float32: the rounding of (a + p/2) +
            # (b + p/2) against (a + b) + p grew through the steps of a CNN with an L2 penalty
            # to a 10% different loss after 5 epochs on 2 processes.
            loss = loss + penalty[0]
            grads = [a + p for a, p in zip(grads, penalty[1], strict=True)]
        small = small_sq / tf.maximum(small_n, 1) if self.o.measure_noise else small_sq
        return grads, loss, small, gf

    def examples(self, lo: tf.Tensor, hi: tf.Tensor, share: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """Positions [lo, hi) of the epoch's order (within this rank's share, which starts at
        `share`): their x and y."""
        assert self.perm is not None
        idx = self.perm[lo:hi]
        return tf.gather(self.x, idx), tf.gather(self.y, idx)

    def _gradients(
        self,
        lo: tf.Tensor,
        hi: tf.Tensor,
        gf: tf.Tensor,
        penalty: tuple[tf.Tensor, list[tf.Tensor]] | None,
    ) -> tuple[list[tf.Tensor], tf.Tensor, tf.Tensor, tf.Tensor]:
        """This rank's share [lo, hi) of the global batch of gf examples: the gradient of its
        summed losses / gf, that loss (the model's `penalty` is added after the sum over ranks),
        and the noise estimator's micro-batch sums."""
        dt, M = self.model.dtype, self.layout.micro
        grads: list[tf.Tensor] | None = None
        loss: tf.Tensor | None = None
        small_sq: tf.Tensor | None = None
        small_n: tf.Tensor | None = None
        for m in range(M):  # micro-batches: the small batches of the noise estimator on 1 process
            mlo = lo if m == 0 else lo + (hi - lo) * m // M
            mhi = hi if m == M - 1 else lo + (hi - lo) * (m + 1) // M
            xb, yb = self.examples(mlo, mhi, lo)
            part, gm = self.micro(xb, yb, gf)
            # (sums start from the first term, not from 0.0: the same value, one op less)
            loss = part if loss is None else loss + part
            grads = gm if grads is None else [a + b for a, b in zip(grads, gm, strict=True)]
            if self.o.measure_noise:
                k = tf.cast(mhi - mlo, dt)
                # Gradient of the micro-batch's own mean loss is gm·g/k; its squared norm.
                has = tf.cast(k > 0, dt)
                if penalty is None:
                    sq = has * sq_norm(gm) * tf.square(gf / tf.maximum(k, 1))
                else:  # ... plus the penalty's, which every batch size shares
                    scale = gf / tf.maximum(k, 1)
                    sq = has * sq_norm([a * scale + p for a, p in zip(gm, penalty[1], strict=True)])
                small_sq = sq if small_sq is None else small_sq + sq
                small_n = has if small_n is None else small_n + has
        assert grads is not None
        assert loss is not None
        if small_sq is None or small_n is None:  # not measuring noise: nothing to carry
            small_sq, small_n = tf.zeros([], dt), tf.ones([], dt)
        return grads, loss, small_sq, small_n

    def _micro(self, xb: tf.Tensor, yb: tf.Tensor, gf: tf.Tensor) -> tuple[tf.Tensor, Any]:
        """One micro-batch: its summed losses / gf and their gradient (float16: through the
        scaled loss, unscaled in float32 before anything reads it)."""
        scale = self.o.loss_scale
        with tf.GradientTape() as tape:
            part = tf.reduce_sum(self.model.per_example_loss(xb, yb, training=True)) / gf
            scaled = part if scale is None else scale.scaled(part)
        gm = tape.gradient(scaled, self.variables)
        return part, gm if scale is None else scale.unscaled(gm)

    def _penalty(self) -> tuple[tf.Tensor, list[tf.Tensor]] | None:
        """The model's own losses (weight regularisers) and their gradient; None without any
        (no op is emitted then)."""
        if not self.model.has_penalty():
            return None
        with tf.GradientTape() as tape:
            value = self.model.penalty()
        grads = tape.gradient(value, self.variables)
        zero = tf.zeros_like
        return value, [
            zero(v) if g is None else g for g, v in zip(grads, self.variables, strict=True)
        ]

    # --- the loop body ----------------------------------------------------------------------

    def body(
        self,
        first: tf.Tensor,
        bounds: tuple[tf.Tensor, tf.Tensor],
        offset: tf.Tensor | None,
        i: tf.Tensor,
        *state: Any,
    ) -> tuple[Any, ...]:
        """Step `first + i` applied to the loop state: step index, then the fields DONE ..
        TARGET_HIT, then the optional per-step records (one scalar each: slicing and
        re-stacking one vector per step costs ops)."""
        limit, target = bounds
        done, loss_sum, _, g2_sum, tr_sum, noise_n, g2_sq, tr_sq, g2_tr, hit, *rec = state
        step = first + i
        grads, loss, small_sq, gf = self.one_step(step)
        loss64, gf64 = tf.cast(loss, tf.float64), tf.cast(gf, tf.float64)
        bad = tf.logical_or(tf.logical_not(tf.math.is_finite(loss64)), loss64 > limit)
        # A diverging step is not applied (zero rate and gradient, no branch: a tf.cond per
        # step costs a function call), and the loop ends; the parameters stay finite.
        keep = 1.0 - tf.cast(bad, tf.float64)
        grads, applied = self._finite(grads, bad, keep)
        noise = (g2_sum, tr_sum, noise_n, g2_sq, tr_sq, g2_tr)
        if self.o.measure_noise:
            noise = self._noise(noise, small_sq, grads, (gf, gf64), applied)
        if self.o.reduce:
            rate = self.schedule.rate_tensor(tf.cast(step, tf.float64))
            self.opt.apply(grads, self.variables, rate * applied)
        if self.o.track_target and self.o.quadratic_loss is not None:
            # the exact full loss after the update
            reached = tf.logical_and(hit < 0, self.o.quadratic_loss() <= target)
            hit = tf.where(tf.logical_and(reached, ~bad), tf.cast(step + 1, tf.float64), hit)
        at = tf.cast(i if offset is None else offset + i, tf.int32)
        rec = self._record(rec, at, loss64)
        return (i + 1, done + keep, loss_sum + loss64 * keep, 1.0 - keep, *noise, hit, *rec)

    def _finite(
        self, grads: list[tf.Tensor], bad: tf.Tensor, keep: tf.Tensor
    ) -> tuple[list[tf.Tensor], tf.Tensor]:
        """The gradients to apply (zero on a diverging step) and the weight of the update
        (`keep`). With a loss scale, a step whose allreduced gradient overflowed is counted but
        not applied, nor read by the noise estimator, and the scale is halved (precision.py)."""
        scale = self.o.loss_scale
        if scale is None:
            return [tf.where(bad, tf.zeros_like(g), g) for g in grads], keep
        finite = all_finite(grads)
        if self.o.reduce:  # (the compute-only twin leaves the scale alone)
            scale.update(finite)
        skip = tf.logical_or(bad, tf.logical_not(finite))
        return [tf.where(skip, tf.zeros_like(g), g) for g in grads], keep * tf.cast(
            finite, tf.float64
        )

    def _noise(
        self,
        sums: tuple[tf.Tensor, ...],
        small_sq: tf.Tensor,
        grads: list[tf.Tensor],
        g: tuple[tf.Tensor, tf.Tensor],
        keep: tf.Tensor,
    ) -> tuple[tf.Tensor, ...]:
        """The noise sums (|G|², tr(Σ), count, squares, product) with this step's estimates,
        where its batch splits evenly into N·M small batches (`g`: its size, and in float64)."""
        gf, gf64 = g
        NM = self.layout.size * self.layout.micro
        g2_sum, tr_sum, noise_n, g2_sq, tr_sq, g2_tr = sums
        b_small = gf64 / NM
        ok = tf.logical_and(
            tf.equal(tf.math.floormod(tf.cast(gf, tf.int64), NM), 0), b_small < gf64
        )
        g2, tr = two_batch_estimates(
            tf.cast(small_sq, tf.float64), tf.cast(sq_norm(grads), tf.float64), b_small, gf64
        )
        use = tf.cast(ok, tf.float64) * keep
        g2, tr = tf.where(use > 0, g2, 0.0), tf.where(use > 0, tr, 0.0)
        return (g2_sum + g2, tr_sum + tr, noise_n + use,
                g2_sq + g2 * g2, tr_sq + tr * tr, g2_tr + g2 * tr)  # fmt: skip

    def _record(self, rec: list[Any], at: tf.Tensor, loss64: tf.Tensor) -> list[Any]:
        """The step's loss and parameters written at position `at` of the records."""
        if self.o.record_updates:
            rec[0] = rec[0].write(at, loss64)
        if self.o.record_params:
            flat = tf.concat([tf.reshape(tf.cast(v, tf.float64), [-1]) for v in self.variables], 0)
            rec[1] = rec[1].write(at, flat)
        return rec

    # --- the step loop ----------------------------------------------------------------------

    def steps(
        self,
        first: tf.Tensor,
        count: tf.Tensor,
        bounds: tuple[tf.Tensor, tf.Tensor],
        offset: tf.Tensor | None,
        *rec: Any,
    ) -> tuple[list[tf.Tensor], list[Any]]:
        """`count` steps from global step `first` (fewer if one diverges): the fields DONE ..
        TARGET_HIT, and the record TensorArrays with step i written at offset + i."""

        def more(i: tf.Tensor, *state: Any) -> tf.Tensor:
            return tf.logical_and(i < count, state[DIVERGED] == 0)

        body = functools.partial(self.body, first, bounds, offset)
        zero = tf.zeros([], tf.float64)
        init = (tf.zeros([], tf.int64), *([zero] * TARGET_HIT), -tf.ones([], tf.float64), *rec)
        # One step per call: no graph loop around it (a loop costs as much as an MLP step).
        out = body(*init) if self.o.one_per_call else tf.while_loop(more, body, init)
        return list(out[1 : TARGET_HIT + 2]), list(out[TARGET_HIT + 2 :])

    def records(self, size: tf.Tensor) -> list[Any]:
        """Empty TensorArrays for `size` steps' losses and parameters, as recorded."""
        size = tf.cast(size, tf.int32)
        rec: list[Any] = []
        if self.o.record_updates:
            rec.append(tf.TensorArray(tf.float64, size=size, element_shape=[]))
        if self.o.record_params:
            rec.append(tf.TensorArray(tf.float64, size=size, element_shape=[self.params]))
        return rec

    @staticmethod
    def stacked(rec: list[Any]) -> list[tf.Tensor]:
        """Every step's loss, then every step's parameters row by row (the host keeps `done`)."""
        return [tf.reshape(r.stack(), [-1]) for r in rec]

    def loop(
        self, first: tf.Tensor, count: tf.Tensor, limit: tf.Tensor, target: tf.Tensor
    ) -> tf.Tensor:
        """The step loop's call: `count` steps, one vector (read with `CallOutput.decode`)."""
        fields, rec = self.steps(first, count, (limit, target), None, *self.records(count))
        quad = self.o.quadratic_loss
        full = quad() if quad is not None else tf.constant(np.nan, tf.float64)
        # ... and with linear models the epoch-end loss in the same call (O(d²)).
        return tf.concat([tf.stack([*fields, full]), *self.stacked(rec)], 0)

    # --- the epoch loop ---------------------------------------------------------------------

    def epochs(
        self,
        first: tf.Tensor,
        count: tf.Tensor,
        limit: tf.Tensor,
        target: tf.Tensor,
        prev: tf.Tensor,
    ) -> tf.Tensor:
        """The epoch loop's call: up to `count` epochs of S steps, ending after the first epoch
        at which a stopping rule applies; one vector (read with `decode_epochs`)."""

        def more(e: tf.Tensor, prev: tf.Tensor, halt: tf.Tensor, *state: Any) -> tf.Tensor:
            return tf.logical_and(e < count, tf.logical_not(halt))

        body = functools.partial(self.epoch_body, first, (limit, target))
        rows = tf.TensorArray(
            tf.float64, size=tf.cast(count, tf.int32), element_shape=[FULL_LOSS + 1 + self.params]
        )
        S = self.layout.steps_per_epoch
        init = (tf.zeros([], tf.int64), prev, tf.constant(False), rows, *self.records(count * S))
        ran, _, _, rows, *rec = tf.while_loop(more, body, init)
        head = [tf.reshape(tf.cast(ran, tf.float64), [1]), tf.reshape(rows.stack(), [-1])]
        return tf.concat([*head, *self.stacked(rec)], 0)

    def epoch_body(
        self,
        first: tf.Tensor,
        bounds: tuple[tf.Tensor, tf.Tensor],
        e: tf.Tensor,
        prev: tf.Tensor,
        halt: tf.Tensor,
        *state: Any,
    ) -> tuple[Any, ...]:
        """Epoch `e`: its steps, its row (the fields, the exact loss, θ) and whether a stopping
        rule applies, computed as the host's stopping.decide does (the same float64 operations;
        the relative rule's `change < T` is false when the previous loss is NaN = none yet, or
        0, as decide skips it then). The host decides again on every returned epoch."""
        quadratic_loss, epoch_rule = self.o.quadratic_loss, self.o.epoch_rule
        assert epoch_rule is not None
        assert quadratic_loss is not None
        rule, tolerance = epoch_rule
        limit, target = bounds
        S = self.layout.steps_per_epoch
        rows, *rec = state
        fields, rec = self.steps(first + e * S, S, bounds, e * S, *rec)
        full = quadratic_loss()
        theta = tf.concat([tf.reshape(v, [-1]) for v in self.variables], 0)
        rows = rows.write(tf.cast(e, tf.int32), tf.concat([tf.stack([*fields, full]), theta], 0))
        current = full if rule == "full" else fields[LOSS_SUM] / fields[DONE]
        stop = [fields[DIVERGED] > 0, tf.logical_not(tf.math.is_finite(full)), full > limit]
        if self.o.track_target:
            stop.append(full <= target)
        if tolerance > 0:
            stop.append(tf.abs(current - prev) / tf.abs(prev) < tolerance)
        return (e + 1, current, tf.reduce_any(tf.stack(stop)), rows, *rec)


def _allreduce(
    grads: list[tf.Tensor], loss: tf.Tensor, small_sq: tf.Tensor, small_n: tf.Tensor
) -> tuple[list[tf.Tensor], tf.Tensor, tf.Tensor, tf.Tensor]:
    """Horovod: one fused allreduce (SUM) of every gradient plus the step's statistics, what
    DistributedGradientTape does, written out because the noise estimator needs each rank's
    local gradient norm before the reduction."""
    hvd = world.hvd()
    out = hvd.grouped_allreduce([*grads, tf.stack([loss, small_sq, small_n])], op=hvd.Sum)
    grads, stats = out[:-1], out[-1]
    return grads, stats[0], stats[1], stats[2]


def _chunked_sum(
    part: Callable[[tf.Tensor, tf.Tensor], tf.Tensor], lo: int, hi: int, chunk: int
) -> tf.Tensor:
    """Σ part(s, e) over [lo, hi) in chunks, as a graph loop."""

    def body(s: tf.Tensor, total: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        e = tf.minimum(s + chunk, hi)
        return s + chunk, total + tf.cast(part(s, e), tf.float64)

    _, total = tf.while_loop(
        lambda s, _: s < hi, body, (tf.constant(lo, tf.int64), tf.zeros([], tf.float64))
    )
    return total


def _sharded_mean(
    part: Callable[[tf.Tensor, tf.Tensor], tf.Tensor], n: int, layout: Layout, chunk: int
) -> Compiled:
    """Σ part over [0, n) / n: each rank sums its contiguous shard in chunks, then SUM-allreduce."""
    N, r = layout.size, layout.rank
    lo, hi = n * r // N, n * (r + 1) // N

    def mean() -> tf.Tensor:
        total = _chunked_sum(part, lo, hi, chunk)
        if N > 1:
            # Horovod: each rank summed its shard; every rank must see the same value, so all
            # make the same stopping decision.
            total = world.hvd().allreduce(total, op=world.hvd().Sum)
        return total / n

    return cast(Compiled, tf.function(mean, autograph=False))


def build_full_loss(
    model: Model, layout: Layout, x: tf.Tensor, y: tf.Tensor, chunk: int = 1024
) -> Compiled:
    """Mean loss over the whole dataset, sharded over the ranks (plus the model's penalty)."""
    mean = _sharded_mean(
        lambda s, e: tf.reduce_sum(model.per_example_loss(x[s:e], y[s:e], training=False)),
        layout.n,
        layout,
        chunk,
    )
    return with_penalty(model, mean)


def with_penalty(model: Model, mean: Compiled) -> Compiled:
    """`mean` plus the model's own losses, when it has any (the objective it trains on)."""
    if not model.has_penalty():
        return mean

    def total() -> tf.Tensor:
        return mean() + tf.cast(model.penalty(), tf.float64)

    return cast(Compiled, tf.function(total, autograph=False))


def build_accuracy(
    model: Model, layout: Layout, x: tf.Tensor, y: tf.Tensor, chunk: int = 1024
) -> Compiled:
    """Share of held-out examples classified correctly, sharded like `build_full_loss`."""
    return _sharded_mean(lambda s, e: model.correct(x[s:e], y[s:e]), int(x.shape[0]), layout, chunk)


class FedProgram(StepProgram):
    """The step program of streamed data (plugin API 2): one step per call, on this rank's
    share of the global batch handed to the call (`fed`), instead of gathered from the dataset
    on the device."""

    fed: tuple[tf.Tensor, tf.Tensor]

    def call(self, first: tf.Tensor, count: tf.Tensor, *rest: tf.Tensor) -> tf.Tensor:
        """`rest`: limit, target, then this rank's share of the step's x and y."""
        limit, target, x, y = rest
        self.fed = (x, y)  # read at tracing by `examples`
        return self.loop(first, count, limit, target)

    def examples(self, lo: tf.Tensor, hi: tf.Tensor, share: tf.Tensor) -> tuple[tf.Tensor, ...]:
        x, y = self.fed
        return x[lo - share : hi - share], y[lo - share : hi - share]


def build_fed_step(
    model: Model, opt: Optimizer, schedule: Schedule, layout: Layout, options: Options
) -> Compiled:
    """A tf.function of one step on a fed batch: (first, 1, limit, target, x, y), this rank's
    share of global step `first` as x and y; returns the step loop's vector."""
    one = dataclasses.replace(options, one_per_call=True, epoch_rule=None)
    program = FedProgram(model, opt, schedule, layout, data=(None, None, None), options=one)
    return cast(Compiled, tf.function(program.call, autograph=False))
