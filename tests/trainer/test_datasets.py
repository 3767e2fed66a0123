"""The trainer's datasets are the lab's data; --export-data writes what was trained on."""

from __future__ import annotations

import numpy as np
import pytest

from scalelab_trainer import datasets
from scalelab_trainer.config import parse_config
from tests.trainer.lab1_tf1 import lab_data

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("seed", [0, 1, 7, 42, 2024])
def test_lab1_line_equals_the_labs_own_generator_for_the_seed(seed: int) -> None:
    x_lab, y_lab = lab_data(seed)
    x, y = datasets.lab1_line(100, seed, 10, 2, 1)
    assert np.array_equal(x, x_lab)
    assert np.array_equal(y, y_lab)


def test_lab1_line_follows_the_generator_flags() -> None:
    x_lab, y_lab = lab_data(3, n=37, w=-4, b=0.5, std=2.5)
    ds = datasets.build(
        parse_config(
            [
                "--seed",
                "3",
                "--dataset-size",
                "37",
                "--data-w",
                "-4",
                "--data-b",
                "0.5",
                "--data-noise",
                "2.5",
            ]
        )
    )
    assert np.array_equal(ds.x[:, 0], x_lab)
    assert np.array_equal(ds.y, y_lab)


def test_lab1_line_leaves_numpys_global_random_state_alone() -> None:
    np.random.seed(11)
    expected = np.random.uniform()
    np.random.seed(11)
    datasets.lab1_line(100, 0, 10, 2, 1)
    assert np.random.uniform() == expected


def test_digits_split_is_disjoint_and_fixed_by_the_seed() -> None:
    a = datasets.digits(2000, 0.2, seed=5)
    b = datasets.digits(2000, 0.2, seed=5)
    assert a.x.shape == (1438, 64)
    assert a.x_test is not None
    assert a.x_test.shape == (359, 64)
    assert np.array_equal(a.x, b.x)
    train_rows = {r.tobytes() for r in a.x}
    overlap = sum(r.tobytes() in train_rows for r in a.x_test)
    assert overlap < 10  # a few digits images are exact duplicates in the source data


def test_export_data_round_trips_the_exact_arrays(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "data.npz"
    ds = datasets.build(parse_config(["--seed", "4"]))
    datasets.export(ds, str(path))
    saved = np.load(path)
    assert np.array_equal(saved["x"], ds.x)
    assert np.array_equal(saved["y"], ds.y)
