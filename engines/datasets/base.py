"""The in-memory form every dataset loader returns.

Images are uint8 (N, H, W, C) and labels int64 (N,), whatever the source format, so the
engines never see where data came from and every framework gets the same bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class DatasetError(Exception):
    """A dataset cannot be loaded; the message names the problem and what to do."""


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # uint8 (N, H, W, C)
    y: np.ndarray  # int64 (N,)

    def __post_init__(self):
        if self.x.dtype != np.uint8 or self.x.ndim != 4:
            raise DatasetError(f"images must be uint8 (N, H, W, C), got {self.x.dtype} {self.x.shape}")
        if self.y.ndim != 1 or len(self.y) != len(self.x):
            raise DatasetError(f"labels must be (N,) matching {len(self.x)} images, got {self.y.shape}")

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    name: str
    resolution: int
    channels: int
    class_names: tuple[str, ...]
    train: Split
    val: Split
    test: Split
    source: str = ""  # where the arrays came from (file, folder, generator): shown in results
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "val": self.val, "test": self.test}
