"""The loss surface of the linear model on lab1-line, from the dataset the trainer exported.

L(w, b) = mean((w·x + b − y)²) expands into five sufficient statistics of (x, y), so a 200×200
grid costs a few array operations rather than 40 000 passes over the data. Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
W_RANGE = (0.0, 20.0)
B_RANGE = (-18.0, 22.0)
GRID_POINTS = 200


@dataclass(frozen=True)
class LineStats:
    """Means of x², x, x·y, y, y² over the dataset."""

    xx: float
    x: float
    xy: float
    y: float
    yy: float

    @classmethod
    def of(cls, x: FloatArray, y: FloatArray) -> LineStats:
        """Statistics of one dataset."""
        return cls(
            float(np.mean(x * x)),
            float(np.mean(x)),
            float(np.mean(x * y)),
            float(np.mean(y)),
            float(np.mean(y * y)),
        )

    def loss(self, w: FloatArray | float, b: FloatArray | float) -> FloatArray:
        """Mean squared error at (w, b), vectorized over arrays of any shape."""
        w_ = np.asarray(w, dtype=np.float64)
        b_ = np.asarray(b, dtype=np.float64)
        out: FloatArray = (
            w_ * w_ * self.xx
            + 2 * w_ * b_ * self.x
            + b_ * b_
            - 2 * w_ * self.xy
            - 2 * b_ * self.y
            + self.yy
        )
        return out


def load_line_data(path: Path) -> tuple[FloatArray, FloatArray] | None:
    """(x, y) from the trainer's --export-data .npz, or None when it is missing or not 1-D."""
    try:
        with np.load(path, allow_pickle=False) as data:
            x = np.asarray(data["x"], dtype=np.float64).reshape(-1)
            y = np.asarray(data["y"], dtype=np.float64).reshape(-1)
    except (OSError, KeyError, ValueError):
        return None
    return (x, y) if x.shape == y.shape and x.size > 0 else None


def surface(
    stats: LineStats, points: int = GRID_POINTS
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(W, B, L) on the lab's grid w ∈ [0, 20], b ∈ [−18, 22]."""
    W, B = np.meshgrid(np.linspace(*W_RANGE, points), np.linspace(*B_RANGE, points))
    return W, B, stats.loss(W, B)
