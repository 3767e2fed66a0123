"""Closed-form facts about a linear least-squares trial, for diagnostics and for the tests.

With A = [x, 1] (n × (d+1)) and θ = (w, b), the loss L(θ) = mean((Aθ − y)²) is quadratic:
θ* = lstsq(A, y), Hessian H = (2/n)·AᵀA, gradient descent is stable for η < 2/λ_max, and along the
slowest direction the loss changes by a factor of at most 2·η·λ_min per update, which the lab's
relative-change stopping rule cannot see when that is below its tolerance. Called by train.py
(start diagnostics, distance to θ*, the loss surface) and by noise tests (exact B_simple).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[Any]  # float64 arrays in practice; inputs may be any numeric array


def design(x: F64) -> F64:
    """A = [x, 1] in float64."""
    return np.hstack([np.asarray(x, np.float64), np.ones((x.shape[0], 1))])


@dataclass(frozen=True)
class Diagnostics:
    """The closed-form optimum and curvature of one dataset, and what they imply for a rate."""

    optimum: F64  # θ* = (w*..., b*)
    optimal_loss: float  # L(θ*), the noise floor
    eigenvalues: F64  # Hessian eigenvalues, ascending
    warnings: list[str] = field(default_factory=list)

    @property
    def max_stable_rate(self) -> float:
        """2/λ_max: full-batch gradient descent diverges above it."""
        return float(2.0 / self.eigenvalues[-1])

    def as_event(self) -> dict[str, Any]:
        d = self.optimum.size - 1
        opt: dict[str, Any] = (
            {"w": float(self.optimum[0]), "b": float(self.optimum[1])}
            if d == 1
            else {"wNorm": float(np.linalg.norm(self.optimum[:d])), "b": float(self.optimum[d])}
        )
        return {
            "optimum": opt | {"loss": self.optimal_loss},
            "hessianEigenvalues": [float(v) for v in self.eigenvalues],
            "maxStableLearningRate": self.max_stable_rate,
            "warnings": self.warnings,
        }


def diagnose(
    x: F64,
    y: F64,
    *,
    rate: float,
    steps_per_epoch: int,
    tolerance: float,
    plain_gradient_descent: bool,
) -> Diagnostics:
    """θ*, H's spectrum and warnings for training at `rate` with `steps_per_epoch` updates."""
    A = design(x)
    theta, *_ = np.linalg.lstsq(A, y, rcond=None)
    eig = np.linalg.eigvalsh(2.0 / len(y) * A.T @ A)
    warnings: list[str] = []
    if plain_gradient_descent:
        if rate >= 2.0 / eig[-1]:
            warnings.append(
                f"learning rate {rate:g} >= 2/λ_max = {2.0 / eig[-1]:.4g}: "
                "gradient descent diverges along the steepest direction"
            )
        # Along the slowest eigenvector v the excess loss E = λ_min/2·(vᵀ(θ−θ*))² shrinks by
        # 1−(1−ηλ_min)^(2S) per epoch of S updates, and L ≥ L* + E, so the slow mode moves the
        # loss by at most c·E0/(L*+E0) per epoch, E0 at the start (θ = 0). Below the tolerance
        # the rule cannot see it at all (2ηλ_min < T is the cruder bound with E/L = 1).
        lam, v = eig[0], np.linalg.eigh(2.0 / len(y) * A.T @ A)[1][:, 0]
        e0 = lam / 2 * float(v @ theta) ** 2
        floor = loss(A, y, theta)
        c = 1.0 - (1.0 - rate * lam) ** (2 * steps_per_epoch)
        visible = c * e0 / (floor + e0)
        if tolerance > 0 and visible < tolerance:
            warnings.append(
                f"stopping rule blind to slow mode: along the slowest direction (λ_min = "
                f"{lam:.4g}, 2·η·λ_min = {2 * rate * lam:.3g} per update) the loss changes by at "
                f"most {visible:.3g} per epoch from the start, below the tolerance {tolerance:g}; "
                "the rule can stop with θ far from θ* (see distanceToOptimum)"
            )
    return Diagnostics(theta, loss(A, y, theta), eig, warnings)


def loss(A: F64, y: F64, theta: F64) -> float:
    """Mean squared error at θ."""
    return float(np.mean((A @ theta - y) ** 2))


def loss_surface(x: F64, y: F64, w: F64, b: F64) -> F64:
    """L on the grid (b_i, w_j) of a 1-D line, from sufficient statistics: O(grid), no data loop."""
    x, y = x.ravel(), y.ravel()
    sxx, sx, sy, sxy, syy = (np.mean(v) for v in (x * x, x, y, x * y, y * y))
    W, B = np.meshgrid(w, b)
    return syy - 2 * W * sxy - 2 * B * sy + W * W * sxx + 2 * W * B * sx + B * B  # type: ignore[no-any-return]


def surface_grid(w_gen: float, b_gen: float, points: int) -> tuple[F64, F64]:
    """The lab's window, w ∈ [w_gen−10, w_gen+10], b ∈ [b_gen−20, b_gen+20] ([0,20]×[−18,22])."""
    return np.linspace(w_gen - 10, w_gen + 10, points), np.linspace(b_gen - 20, b_gen + 20, points)


def exact_noise_scale(x: F64, y: F64, theta: F64) -> float:
    """B_simple = tr(Σ)/|G|² from per-example gradients g_i = 2(a_iᵀθ − y_i)·a_i."""
    A = design(x)
    g = 2.0 * (A @ theta - y)[:, None] * A
    G = g.mean(axis=0)
    tr_sigma = float(np.mean(np.sum(g * g, axis=1)) - G @ G)
    return tr_sigma / float(G @ G)
