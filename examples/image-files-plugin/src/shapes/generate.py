"""Write the example's data set: 16×16 grey PNG images of three shapes, one file per image.

    python -m shapes.generate DIR [--train 3000] [--test 600] [--shards 4] [--seed 0]

writes DIR/train/shard-K/NNNNNN-L.png (L: the label, 0 square, 1 disc, 2 cross) in `--shards`
folders, and DIR/test/... alike. The images are drawn from `--seed` alone (size, position and
noise), so the same command writes the same bytes on any machine: a data set to mount in a pod,
or to keep beside a local run. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tensorflow as tf

SIZE = 16
CLASSES = ("square", "disc", "cross")


def image(label: int, rng: np.random.Generator) -> np.ndarray:
    """One 16×16 uint8 image of shape `label`, placed and sized at random, with noise."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    r = rng.uniform(3.0, 6.0)
    cy, cx = rng.uniform(r, SIZE - r, 2)
    if label == 0:
        mask = (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r)
    elif label == 1:
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    else:
        arm = r / 3
        inside = (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r)
        mask = inside & ((np.abs(yy - cy) <= arm) | (np.abs(xx - cx) <= arm))
    pixels = 200.0 * mask + rng.normal(0, 25, (SIZE, SIZE))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write(root: Path, count: int, shards: int, rng: np.random.Generator) -> None:
    """`count` images in `shards` folders under `root`, labels in turn, drawn from `rng`."""
    for i in range(count):
        label = int(rng.integers(0, len(CLASSES)))
        folder = root / f"shard-{i % shards}"
        folder.mkdir(parents=True, exist_ok=True)
        png = tf.io.encode_png(image(label, rng)[:, :, None]).numpy()
        (folder / f"{i:06d}-{label}.png").write_bytes(png)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--test", type=int, default=600)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    write(args.dir / "train", args.train, args.shards, rng)
    write(args.dir / "test", args.test, args.shards, rng)
    print(f"wrote {args.train} training and {args.test} test images under {args.dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
