"""Learning-rate rules: scaling with the global batch, and gradual warmup.

- linear (Goyal et al. 2017, "Accurate, Large Minibatch SGD"): η(B) = η·B/B0;
- sqrt (Krizhevsky 2014, "One weird trick"; Hoffer et al. 2017): η(B) = η·√(B/B0);
- gradual warmup (Goyal et al. 2017, §2.2): over the first T_w steps the rate rises linearly from
  η to η(B), η_t = η + (η(B) − η)·t/T_w, and stays at η(B) from step T_w on.
Called by train.py (`rate_tensor` inside the compiled step loop) and by the tests (`rate_at`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf


def scaled_rate(base: float, batch: int, reference: int, rule: str) -> float:
    """η(B) for the rule at global batch B, the base rate having been tuned at B0."""
    k = batch / reference
    if rule == "linear":
        return base * k
    if rule == "sqrt":
        return base * math.sqrt(k)
    if rule == "none":
        return base
    raise ValueError(f"unknown lr scaling {rule!r}")


@dataclass(frozen=True)
class Schedule:
    """The rate at every optimizer step of a trial."""

    base: float  # η, the rate warmup starts from
    target: float  # η(B), the scaled rate reached at the end of warmup
    warmup_steps: int  # T_w = round(warmupEpochs · steps per epoch)

    def rate_at(self, step: float) -> float:
        """η_t at optimizer step t (0-based): exactly η(B) from t = T_w on."""
        if step >= self.warmup_steps:
            return self.target
        return self.base + (self.target - self.base) * step / self.warmup_steps

    def rate_tensor(self, step: tf.Tensor) -> tf.Tensor:
        """`rate_at` for a float64 step tensor inside the compiled step loop."""
        if self.warmup_steps <= 0:
            return tf.constant(self.target, tf.float64)
        frac = tf.minimum(step / self.warmup_steps, 1.0)
        return tf.where(
            frac >= 1.0,
            tf.constant(self.target, tf.float64),
            self.base + (self.target - self.base) * frac,
        )


def build(
    *,
    base: float,
    batch: int,
    reference: int,
    rule: str,
    warmup_epochs: float,
    steps_per_epoch: int,
) -> Schedule:
    """The trial's schedule from its config values."""
    return Schedule(
        base, scaled_rate(base, batch, reference, rule), round(warmup_epochs * steps_per_epoch)
    )
