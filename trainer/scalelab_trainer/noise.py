"""Gradient noise scale B_simple = tr(Σ)/|G|² by the two-batch estimator.

McCandlish, Kaplan, Amodei et al. 2018, "An Empirical Model of Large-Batch Training", App. A.1:
with gradient norms measured at two batch sizes B_small < B_big,
    |G|²  ≈ (B_big·|G_big|² − B_small·|G_small|²) / (B_big − B_small)
    tr(Σ) ≈ (|G_small|² − |G_big|²) / (1/B_small − 1/B_big)
are unbiased, their ratio is not, so numerator and denominator are averaged separately (here over
an epoch's steps) before dividing. B_small is each process's local batch (or, on one process, a
micro-batch of it), B_big the allreduced global batch. The critical batch size is predicted as
B_crit ≈ B_simple (McCandlish et al. §2.2: B_noise ≈ B_simple when the Hessian is well conditioned).
Called by train.py (the per-step estimates are computed inside the compiled step).
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf


def two_batch_estimates(
    small_sq: tf.Tensor, big_sq: tf.Tensor, b_small: tf.Tensor, b_big: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Unbiased (|G|², tr Σ) from |G_small|² (mean over small batches) and |G_big|²."""
    g2 = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
    tr = (small_sq - big_sq) / (1.0 / b_small - 1.0 / b_big)
    return g2, tr


@dataclass
class NoiseAccumulator:
    """Sums of the per-step estimates; B_simple = Σ tr(Σ) / Σ |G|² over what was added."""

    g2: float = 0.0
    tr: float = 0.0
    count: int = 0

    def add(self, g2_sum: float, tr_sum: float, count: int) -> None:
        self.g2 += g2_sum
        self.tr += tr_sum
        self.count += count

    def value(self) -> float | None:
        """B_simple, or None when nothing was measured or |G|² is not positive (noise dominates)."""
        if self.count == 0 or self.g2 <= 0:
            return None
        return self.tr / self.g2
