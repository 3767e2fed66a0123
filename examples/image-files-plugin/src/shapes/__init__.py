"""Shapes in PNG files, classified by a small Keras CNN: an example scalelab user workload that
streams its data from files (plugin API 2).

`workload(ctx)` is the entry point (`workload.entryPoint: shapes:workload`). The images are one
PNG file per example under `dataDir` (written by `python -m shapes.generate DIR`); the label is
the last part of the file name. The trainer holds only the sorted list of paths and reads each
rank's share of every global batch through tf.data. Parameters (`workload.parameters`):
  dataDir (str, required)  the folder holding train/ and test/
  filters (int, 16)        filters of the first convolution (the second has twice as many)
  l2 (float, 0.0001)       L2 penalty on the kernels (a Keras regulariser: part of the loss)
  requireEnvSha256 (list of str, [])  "NAME=HEX" items, HEX the sha256 of NAME's value: fail
                           fast, on every rank, when a credential the workload needs (a Secret
                           given to the trainer with spec.resources.env or envFrom) is missing
                           or not the one meant; the error names the variable, never its value
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tensorflow as tf

from scalelab_trainer.plugin import Context, Records, Workload

SIZE = 16
CLASSES = 3
DEFAULTS: dict[str, Any] = {"dataDir": None, "filters": 16, "l2": 1e-4, "requireEnvSha256": []}


def load(path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """One example from its file: the image scaled to [0, 1], the label from the file name."""
    pixels = tf.io.decode_png(tf.io.read_file(path), channels=1)
    x = tf.ensure_shape(tf.cast(pixels, tf.float32) / 255.0, [SIZE, SIZE, 1])
    stem = tf.strings.regex_replace(path, r"^.*-([0-9]+)\.png$", r"\1")
    return x, tf.strings.to_number(stem, tf.int64)


def files(folder: Path) -> list[str]:
    """Every PNG under `folder`, sorted: the same base order on every rank and every machine."""
    found = sorted(str(p) for p in folder.glob("shard-*/*.png"))
    if not found:
        raise ValueError(f"no PNG files under {folder} (write them with python -m shapes.generate)")
    return found


def _parameters(given: Any) -> dict[str, Any]:
    unknown = set(given) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown parameters {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    p = {**DEFAULTS, **given}
    if not isinstance(p["dataDir"], str) or not p["dataDir"]:
        raise ValueError("parameter dataDir (the folder of the PNG files) is required")
    if not isinstance(p["filters"], int) or p["filters"] < 1:
        raise ValueError(f"parameter filters must be a positive integer, got {p['filters']!r}")
    if float(p["l2"]) < 0:
        raise ValueError("parameter l2 must be >= 0")
    required = p["requireEnvSha256"]
    if not isinstance(required, list) or not all(
        isinstance(item, str) and "=" in item for item in required
    ):
        raise ValueError('parameter requireEnvSha256 is a list of "NAME=HEX" (HEX: a sha256)')
    return p


def check_environment(required: list[str], environ: Mapping[str, str]) -> None:
    """Every "NAME=HEX" of `required` names a variable set to a value whose sha256 is HEX: a
    missing or wrong credential fails the trial before the first step instead of at its first
    use. The error names the variable, never its value (a trial's reason is stored and shown)."""
    for item in required:
        name, digest = item.split("=", 1)
        value = environ.get(name)
        if value is None:
            raise ValueError(
                f"environment variable {name} is not set (requireEnvSha256); give it to the "
                "trainer with spec.resources.env or envFrom"
            )
        actual = hashlib.sha256(value.encode()).hexdigest()
        if not hmac.compare_digest(actual, digest.strip().lower()):
            raise ValueError(
                f"environment variable {name} does not have the value requireEnvSha256 names "
                "(its sha256 differs)"
            )


def workload(ctx: Context) -> Workload:
    """The scalelab entry point: the files under dataDir, the same list on every rank."""
    p = _parameters(ctx.parameters)
    check_environment(p["requireEnvSha256"], os.environ)
    root = Path(os.path.expandvars(p["dataDir"]))
    l2 = float(p["l2"])

    def model() -> tf.keras.Model:
        L = tf.keras.layers
        reg = tf.keras.regularizers.L2(l2) if l2 else None
        return tf.keras.Sequential(
            [
                tf.keras.Input((SIZE, SIZE, 1)),
                L.Conv2D(p["filters"], 3, activation="relu", kernel_regularizer=reg),
                L.MaxPooling2D(),
                L.Conv2D(2 * p["filters"], 3, activation="relu", kernel_regularizer=reg),
                L.GlobalAveragePooling2D(),
                L.Dense(CLASSES, kernel_regularizer=reg),  # logits of the three shapes
            ]
        )

    return Workload(
        model=model,
        loss="sparse_categorical_crossentropy",
        accuracy="sparse_categorical",
        records=Records(keys=files(root / "train"), load=load),
        test_records=Records(keys=files(root / "test"), load=load),
    )
