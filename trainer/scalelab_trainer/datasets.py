"""Datasets of a trial, built identically on every rank from the seed (no rank ever downloads).

`lab1-line` reproduces Lab 1's draw bit for bit: after `np.random.seed(S)` the lab draws
`x = np.random.uniform(0, 10, n)`, then for each x in order
`y = w*(x + np.random.normal(0, std)) + b` from numpy's legacy global RandomState. A private
`RandomState(S)` yields the same stream without touching the global one.
Called by train.py; `--export-data` writes what was built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from scalelab_trainer.config import DEFAULT_DATASET_SIZE, TrialConfig

F64 = npt.NDArray[np.float64]
Array = npt.NDArray[np.floating[Any]] | npt.NDArray[np.integer[Any]]
SKLEARN_DIGITS = 1797


@dataclass(frozen=True)
class Dataset:
    """Training examples (and a held-out split for classification)."""

    x: npt.NDArray[np.floating[Any]]
    y: Array
    x_test: npt.NDArray[np.floating[Any]] | None = None
    y_test: Array | None = None
    classes: int = 0  # 0: regression (mean squared error); > 0: classification

    @property
    def size(self) -> int:
        return int(self.x.shape[0])


def lab1_line(n: int, seed: int, w: float, b: float, std: float) -> tuple[F64, F64]:
    """The lab's (x, y), float64, in the lab's order: one normal draw per point, after all x."""
    rng = np.random.RandomState(seed)
    x = rng.uniform(0, 10, n)
    # The lab draws one scalar per point in a Python loop; `normal(size=n)` consumes the same
    # stream in the same order (checked against the loop in tests/trainer).
    noise = rng.normal(0, std, n)
    return x, w * (x + noise) + b


def regression(n: int, d: int, noise: float, seed: int) -> tuple[F64, F64]:
    """Least squares in d dimensions with features of unequal scale, so batch regimes show."""
    rng = np.random.default_rng(seed)
    scales = 1.0 / np.sqrt(np.arange(1, d + 1))  # a spread Hessian spectrum, like real data
    x = rng.normal(size=(n, d)) * scales
    w = rng.normal(size=d)
    return x, x @ w + 0.5 + noise * rng.normal(size=n)


def digits(n: int, test_fraction: float, seed: int) -> Dataset:
    """scikit-learn's bundled 8×8 digits (1797, no download), scaled to [0, 1], split by seed."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float32) / 16.0
    y = np.asarray(bunch.target, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = round(len(y) * test_fraction)
    test, train = order[:n_test], order[n_test:][:n]
    return Dataset(x=x[train], y=y[train], x_test=x[test], y_test=y[test], classes=10)


def synthetic_images(n: int, size: int, classes: int, seed: int) -> Dataset:
    """Random images and labels, as Horovod's synthetic benchmark: throughput, not learning."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, size, size, 3), dtype=np.float32)
    y = rng.integers(0, classes, n).astype(np.int64)
    return Dataset(x=x, y=y, classes=classes)


def build(cfg: TrialConfig) -> Dataset:
    """The dataset the config names, identical on every rank."""
    n = DEFAULT_DATASET_SIZE if cfg.dataset_size is None else cfg.dataset_size
    if cfg.dataset == "lab1-line":
        x, y = lab1_line(n, cfg.seed, cfg.data_w, cfg.data_b, cfg.data_noise)
        return Dataset(x=x[:, None], y=y)
    if cfg.dataset == "regression":
        x, y = regression(n, cfg.features, cfg.data_noise, cfg.seed)
        if cfg.model != "linear":
            return Dataset(x=x.astype(np.float32), y=y.astype(np.float32))
        return Dataset(x=x, y=y)
    if cfg.dataset == "digits":
        return digits(n, cfg.test_fraction, cfg.seed)
    return synthetic_images(n, cfg.image_size, cfg.num_classes, cfg.seed)


def export(ds: Dataset, path: str) -> None:
    """Write the exact examples a trial used, so anyone can check a result."""
    arrays: dict[str, Any] = {"x": ds.x, "y": ds.y}
    if ds.x_test is not None and ds.y_test is not None:
        arrays |= {"x_test": ds.x_test, "y_test": ds.y_test}
    np.savez(path, **arrays)
