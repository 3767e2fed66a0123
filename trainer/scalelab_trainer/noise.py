"""Gradient noise scale B_simple = tr(Σ)/|G|² by the two-batch estimator, smoothed, with its error.

McCandlish, Kaplan, Amodei et al. 2018, "An Empirical Model of Large-Batch Training", App. A.1:
with gradient norms measured at two batch sizes B_small < B_big,
    |G|²  ≈ (B_big·|G_big|² − B_small·|G_small|²) / (B_big − B_small)
    tr(Σ) ≈ (|G_small|² − |G_big|²) / (1/B_small − 1/B_big)
are unbiased, their ratio is not, so numerator and denominator are smoothed separately over many
steps before dividing (App. A: exponential moving averages of each). One step's |G|² estimate is
dominated by noise of order tr(Σ)/B, so below B_simple a single epoch of a small batch can give a
ratio off by 30× or a non-positive |G|² (no value at all); averaging n steps shrinks that by √n.
`NoiseAccumulator` keeps the exponentially weighted sums (time constant `window` steps, carried
across epochs) and the second moments of the per-step estimates, so the ratio comes with a
delta-method standard error, and a missing value with the reason why.

B_small is each process's local batch (or, on one process, a micro-batch of it), B_big the
allreduced global batch. The critical batch size is predicted as B_crit ≈ B_simple (McCandlish
et al. §2.2: B_noise ≈ B_simple when the Hessian is well conditioned). Called by train.py (the
per-step estimates and their squares are summed inside the compiled step, step.py).
"""

from __future__ import annotations

import math
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
    """Weighted sums of the per-step (|G|², tr Σ) estimates; B_simple = Σw·tr / Σw·|G|².

    With `window` > 0 older steps weigh exp(−age/window) (an exponential moving average of each
    sum, McCandlish et al. App. A); with 0 every step weighs the same. Steps added in one `add`
    are taken as equally old (they come from one call of the step loop).
    """

    window: float = 0.0  # time constant in steps; 0 = no decay
    g2: float = 0.0  # Σ w·|G|²
    tr: float = 0.0  # Σ w·tr(Σ)
    g2_sq: float = 0.0  # Σ w·(|G|²)²
    tr_sq: float = 0.0  # Σ w·tr(Σ)²
    g2_tr: float = 0.0  # Σ w·|G|²·tr(Σ)
    weight: float = 0.0  # Σ w
    weight_sq: float = 0.0  # Σ w² (effective sample size = weight² / weight_sq)
    count: int = 0  # steps added, unweighted

    def add(  # noqa: PLR0917 - the sums of one call of the step loop, in its order
        self, g2_sum: float, tr_sum: float, count: int, g2_sq: float, tr_sq: float, g2_tr: float
    ) -> None:
        """Fold in `count` steps' sums of the estimates and of their squares and product."""
        if count <= 0:
            return
        if self.window > 0:
            decay = math.exp(-count / self.window)
            self.g2, self.tr, self.weight = self.g2 * decay, self.tr * decay, self.weight * decay
            self.g2_sq, self.tr_sq, self.g2_tr = (
                self.g2_sq * decay, self.tr_sq * decay, self.g2_tr * decay
            )  # fmt: skip
            self.weight_sq *= decay * decay
        self.g2 += g2_sum
        self.tr += tr_sum
        self.g2_sq += g2_sq
        self.tr_sq += tr_sq
        self.g2_tr += g2_tr
        self.weight += count
        self.weight_sq += count
        self.count += count

    def add_step(self, g2: float, tr: float) -> None:
        """Fold in one step's estimates."""
        self.add(g2, tr, 1, g2 * g2, tr * tr, g2 * tr)

    def value(self) -> float | None:
        """B_simple, or None when nothing was measured or |G|² is not positive (see `reason`)."""
        if self.count == 0 or self.g2 <= 0:
            return None
        return self.tr / self.g2

    def stderr(self) -> float | None:
        """Standard error of `value` by the delta method for a ratio of means, over the
        effective number of steps; None without a value or with fewer than 2 effective steps."""
        ratio = self.value()
        n_eff = self.weight**2 / self.weight_sq if self.weight_sq > 0 else 0.0
        if ratio is None or n_eff < 2:
            return None
        mean_g2 = self.g2 / self.weight
        # Weighted mean square of the linearised residual tr − R·|G|² (its mean is 0 at R).
        spread = (self.tr_sq - 2 * ratio * self.g2_tr + ratio * ratio * self.g2_sq) / self.weight
        variance = max(spread, 0.0) / (n_eff - 1)
        return math.sqrt(variance) / mean_g2

    def reason(self) -> str | None:
        """Why `value` is None (None when there is a value)."""
        if self.count == 0:
            return "no step measured yet"
        if self.g2 <= 0:
            return (
                f"the |G|² estimate is not positive over {self.count} steps: gradient noise "
                "dominates at this batch (B_simple far above it); more steps or a larger batch "
                "resolve it"
            )
        return None

    def summary(self) -> dict[str, float | str | None]:
        """The contract's three fields: value, standard error, and the reason when no value."""
        return {
            "gradientNoiseScale": self.value(),
            "gradientNoiseScaleStderr": self.stderr(),
            "gradientNoiseScaleReason": self.reason(),
        }
