"""A synthetic image set of any size, deterministic by seed.

Each class has its own random low-frequency pattern, and images are that pattern plus
noise, so models can learn it (accuracy well above chance) and timings run on a realistic
input without any file.
"""
from __future__ import annotations

import numpy as np

from engines.datasets.base import Dataset, DatasetError, Split

DEFAULT_SIZES = {"train": 512, "val": 128, "test": 128}
# Every option's default: a spec leaves out options equal to these, so that the same data
# has one cache key whether it was asked for with or without them.
DEFAULT_OPTIONS = {"classes": 10, "channels": 3, **DEFAULT_SIZES}


def make_synthetic(resolution: int = 32, *, channels: int = DEFAULT_OPTIONS["channels"],
                   classes: int = DEFAULT_OPTIONS["classes"],
                   seed: int = 0, train: int = DEFAULT_SIZES["train"],
                   val: int = DEFAULT_SIZES["val"], test: int = DEFAULT_SIZES["test"]) -> Dataset:
    if not 1 <= resolution <= 4096:
        raise DatasetError(f"synthetic resolution must be 1..4096 px, got {resolution}")
    if channels not in (1, 3):
        raise DatasetError(f"synthetic channels must be 1 or 3, got {channels}")
    if not 2 <= classes <= 10000:
        raise DatasetError(f"synthetic classes must be 2..10000, got {classes}")
    for split, n in (("train", train), ("val", val), ("test", test)):
        if n < 1:
            raise DatasetError(f"synthetic {split} size must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    # Patterns drawn on a coarse grid and upsampled: smooth class structure at any size.
    coarse = max(2, min(8, resolution))
    patterns = rng.uniform(0, 255, size=(classes, coarse, coarse, channels)).astype(np.float32)
    idx = (np.arange(resolution) * coarse // resolution)
    patterns = patterns[:, idx][:, :, idx]

    def draw(n: int) -> Split:
        y = rng.integers(0, classes, size=n)
        noise = rng.normal(0, 40, size=(n, resolution, resolution, channels)).astype(np.float32)
        x = np.clip(patterns[y] + noise, 0, 255).astype(np.uint8)
        return Split(x=x, y=y.astype(np.int64))

    return Dataset(
        name="synthetic", resolution=resolution, channels=channels,
        class_names=tuple(f"class {i}" for i in range(classes)),
        train=draw(train), val=draw(val), test=draw(test),
        source=f"generated (seed {seed})",
    )
