"""Mixed precision (--mixed-precision) and its loss scaling: what a Keras model computes in, and
the dynamic loss scale of float16 steps.

With float16 or bfloat16 a Keras model (mlp, cnn, a team's model) is built under Keras's
`mixed_<dtype>` policy: its layers compute in the low precision and keep float32 variables, and
the loss is taken on float32 outputs (models.py, custom.py cast them). The optimizer, the
allreduce and the noise estimator's sums then see float32 gradients, so the statistics of
B_simple stay in float32 and float64 whatever the compute precision (step.py). The linear model
is float64 by design (1 and N processes agree to 1e-6) and does not change: its result says so.

float16 has five exponent bits: small gradients underflow to zero unless the loss is scaled up
before the backward pass and the gradients scaled back down after it (Micikevicius et al. 2018,
"Mixed Precision Training"). `LossScale` is the dynamic rule of Keras's LossScaleOptimizer,
written into our own step because our optimizers are explicit update rules (optimizers.py): start
at 2^15, halve and skip the update on a non-finite gradient, double after 2,000 finite steps.
Every rank sees the same allreduced gradients, so every rank makes the same decision. bfloat16
keeps float32's exponent range and needs no scaling.

Called by build.py (policy, LossScale), step.py (the scale in the step) and train.py (the
result's `precision`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import tensorflow as tf

#: Keras's LossScaleOptimizer defaults (tf.keras.mixed_precision.LossScaleOptimizer).
INITIAL_SCALE = 2.0**15
GROWTH_STEPS = 2000


@contextlib.contextmanager
def keras_policy(mode: str) -> Iterator[None]:
    """Layers built inside compute in `mode` (off: float32), with float32 variables; the
    previous global policy is restored after (a trial list runs trials of several modes)."""
    if mode == "off":
        yield
        return
    before = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy(f"mixed_{mode}")
    try:
        yield
    finally:
        tf.keras.mixed_precision.set_global_policy(before)


class LossScale:
    """The dynamic loss scale of float16 steps; its variables are made before the first step
    (and broadcast from rank 0 with the model, like the optimizer's)."""

    def __init__(self) -> None:
        self.scale = tf.Variable(INITIAL_SCALE, dtype=tf.float32, trainable=False, name="ls")
        self.good = tf.Variable(0, dtype=tf.int64, trainable=False, name="ls_good_steps")

    @property
    def variables(self) -> list[tf.Variable]:
        return [self.scale, self.good]

    def scaled(self, loss: tf.Tensor) -> tf.Tensor:
        """The loss the backward pass starts from."""
        return loss * tf.cast(self.scale, loss.dtype)

    def unscaled(self, grads: list[tf.Tensor]) -> list[tf.Tensor]:
        """The gradients of the unscaled loss (float32 division, no underflow there)."""
        inv = 1.0 / self.scale
        return [g * tf.cast(inv, g.dtype) for g in grads]

    def update(self, finite: tf.Tensor) -> None:
        """After a step: halve on a non-finite gradient, double after GROWTH_STEPS finite
        ones (in the graph, no branch)."""
        good = tf.where(finite, self.good + 1, tf.zeros([], tf.int64))
        grow = good >= GROWTH_STEPS
        factor = tf.where(finite, tf.where(grow, 2.0, 1.0), 0.5)
        self.scale.assign(tf.maximum(self.scale * factor, 1.0))
        self.good.assign(tf.where(grow, tf.zeros([], tf.int64), good))


def all_finite(grads: list[tf.Tensor]) -> tf.Tensor:
    """Whether every gradient entry is finite (one reduction per variable)."""
    return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(g)) for g in grads]))


def summary(mode: str, model: str, on_gpu: bool, scale: LossScale | None) -> dict[str, Any]:
    """The result's `precision`: the mode asked, what the model computed in, whether it ran in
    emulation (on the CPU, whose speed in low precision says nothing about a GPU's), and the
    final loss scale."""
    applies = mode != "off" and model != "linear"
    compute = mode if applies else ("float64" if model == "linear" else "float32")
    return {
        "mixedPrecision": mode,
        "compute": compute,
        "emulated": applies and not on_gpu,
        "lossScale": float(scale.scale.numpy()) if scale is not None else None,
    }


def warnings(mode: str, model: str, on_gpu: bool) -> list[str]:
    """What a person reading the result must know about its precision."""
    if mode == "off":
        return []
    if model == "linear":
        return [
            f"mixedPrecision {mode} does not apply to the linear model, which computes in "
            "float64: it trained as with mixedPrecision off"
        ]
    if not on_gpu:
        return [
            f"mixed precision {mode} ran in emulation on the CPU: its results are valid, its "
            "throughput says nothing about a GPU's"
        ]
    return []
