"""Optimizers as explicit update rules on a list of variables, slots created up front.

Written out (rather than Keras optimizers) so that each rule is the paper's formula, works for the
float64 linear model, takes the step's learning rate as a tensor from schedule.py, and has all its
state before the first step, so rank 0 can broadcast it with the model. Per-layer = per variable.

- sgd: w ← w − η·g
- momentum (heavy ball, as Goyal et al. 2017 §2.1 and tf.keras): v ← μ·v + g; w ← w − η·v
- adam (Kingma & Ba 2015, Alg. 1): m ← β1·m + (1−β1)·g; s ← β2·s + (1−β2)·g²;
  w ← w − η·m̂/(√ŝ + ε), m̂ = m/(1−β1^t), ŝ = s/(1−β2^t)
- lars (You, Gitman & Ginsburg 2017, arXiv:1708.03888, Alg. 1): local rate
  λ = τ·‖w‖/(‖g‖ + β·‖w‖) (τ the trust coefficient, β the weight decay);
  v ← μ·v + η·λ·(g + β·w); w ← w − v
- lamb (You et al. 2019, arXiv:1904.00962, Alg. 2): m, s, m̂, ŝ as adam; r = m̂/(√ŝ + ε);
  u = r + λ·w; w ← w − η·(‖w‖/‖u‖)·u
In lars and lamb the trust ratio is 1 when ‖w‖ or the denominator is 0 (w starts at 0 for the
linear model), as in the reference implementations (TF models' LARS, NVIDIA's LAMB).
Called by train.py inside the compiled step.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from scalelab_trainer.config import TrialConfig


def _trust(num: tf.Tensor, den: tf.Tensor) -> tf.Tensor:
    ok = tf.logical_and(num > 0, den > 0)
    return tf.where(ok, num / tf.where(ok, den, tf.ones_like(den)), tf.ones_like(num))


class Optimizer:
    """One update rule; `apply` runs inside tf.function."""

    def __init__(self, cfg: TrialConfig, variables: Sequence[tf.Variable]) -> None:
        self.kind = cfg.optimizer
        self.mu, self.beta2, self.eps = cfg.momentum, cfg.beta2, cfg.epsilon
        self.decay, self.tau = cfg.weight_decay, cfg.trust_coefficient
        dtype = variables[0].dtype if variables else tf.float32
        self.t = tf.Variable(tf.zeros([], dtype), trainable=False, name="opt_t")
        n_slots = {"sgd": 0, "momentum": 1, "lars": 1, "adam": 2, "lamb": 2}[self.kind]
        self.slots = [
            [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
            for _ in range(n_slots)
        ]

    @property
    def variables(self) -> list[tf.Variable]:
        """All optimizer state (broadcast from rank 0 with the model)."""
        return [self.t, *(v for slot in self.slots for v in slot)]

    def apply(
        self, grads: Sequence[tf.Tensor], variables: Sequence[tf.Variable], lr: tf.Tensor
    ) -> None:
        """One update of every variable with its (already allreduced) gradient."""
        self.t.assign_add(1)
        for i, (g, w) in enumerate(zip(grads, variables, strict=True)):
            lr_w = tf.cast(lr, w.dtype)
            if self.kind == "sgd":
                w.assign_sub(lr_w * g)
            elif self.kind == "momentum":
                v = self.slots[0][i]
                v.assign(self.mu * v + g)
                w.assign_sub(lr_w * v)
            elif self.kind == "lars":
                v = self.slots[0][i]
                wn, gn = tf.norm(w), tf.norm(g)
                local = _trust(self.tau * wn * tf.cast(gn > 0, w.dtype), gn + self.decay * wn)
                v.assign(self.mu * v + lr_w * local * (g + self.decay * w))
                w.assign_sub(v)
            else:
                m, s = self.slots[0][i], self.slots[1][i]
                m.assign(self.mu * m + (1 - self.mu) * g)
                s.assign(self.beta2 * s + (1 - self.beta2) * tf.square(g))
                m_hat = m / (1 - tf.pow(tf.constant(self.mu, w.dtype), self.t))
                s_hat = s / (1 - tf.pow(tf.constant(self.beta2, w.dtype), self.t))
                r = m_hat / (tf.sqrt(s_hat) + self.eps)
                if self.kind == "adam":
                    w.assign_sub(lr_w * r)
                else:
                    u = r + self.decay * w
                    w.assign_sub(lr_w * _trust(tf.norm(w), tf.norm(u)) * u)
