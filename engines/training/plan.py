"""Everything about a training run that must not depend on the framework.

The order of examples, the class weights, the learning rate at each step and the pixel
scaling are computed here, in NumPy, once, and handed to every engine: the frameworks'
own shufflers, class-weight conventions and schedulers are not used, so two engines given
the same config see the same batches with the same weights and step sizes.
"""
from __future__ import annotations

import math

import numpy as np

from engines.training.config import TrainConfig


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    # The last partial batch is dropped in training, in every engine: a smaller final
    # batch would retrace/recompile the compiled engines inside a timed epoch and give
    # BatchNorm a noisy small-batch update. Each epoch's permutation differs, so every
    # example is still seen over the epochs.
    return n_train // batch_size


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the training examples in `epoch` (0-based), from the run's seed."""
    # One independent stream per (seed, epoch): reproducible without replaying earlier
    # epochs, so a resumed or partial run sees the same order.
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch, 0x0D47A])))
    return rng.permutation(n).astype(np.int64)


def epoch_batches(seed: int, epoch: int, n: int, batch_size: int) -> np.ndarray:
    """Indices of each training batch of the epoch, shape (steps, batch_size)."""
    steps = steps_per_epoch(n, batch_size)
    return epoch_permutation(seed, epoch, n)[: steps * batch_size].reshape(steps, batch_size)


def class_weights(y: np.ndarray, num_classes: int) -> np.ndarray:
    """n_samples / (n_classes * count) per class (scikit-learn's "balanced").

    A class absent from `y` gets weight 1: no example carries it, and an infinite weight
    would only poison a later split that has it.
    """
    y = np.asarray(y, dtype=np.int64)
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    w = np.ones(num_classes, dtype=np.float64)
    present = counts > 0
    w[present] = len(y) / (num_classes * counts[present])
    return w.astype(np.float32)


def sample_weights(y: np.ndarray, num_classes: int, enabled: bool) -> np.ndarray:
    """Per-example loss weights; ones when class weighting is off."""
    if not enabled:
        return np.ones(len(y), dtype=np.float32)
    return class_weights(y, num_classes)[np.asarray(y, dtype=np.int64)]


def lr_table(config: TrainConfig, steps_per_epoch_: int) -> np.ndarray:
    """The learning rate used by update number s (0-based), for every s of the run.

    Each engine looks its rate up in this table (Keras through a LearningRateSchedule,
    PyTorch through LambdaLR, Optax through a schedule function), so the schedule is one
    piece of arithmetic, not four.
    """
    total = config.epochs * steps_per_epoch_
    s = np.arange(max(total, 1), dtype=np.float64)
    base = float(config.learning_rate)
    if config.lr_schedule == "constant":
        lr = np.full_like(s, base)
    elif config.lr_schedule == "cosine":
        lr = base * 0.5 * (1.0 + np.cos(np.pi * s / max(total, 1)))
    elif config.lr_schedule == "step":
        # MedMNIST: x0.1 at epochs 50 and 75 of 100, i.e. at 50% and 75% of the epochs.
        m1 = math.floor(0.5 * config.epochs) * steps_per_epoch_
        m2 = math.floor(0.75 * config.epochs) * steps_per_epoch_
        lr = base * np.where(s >= m2, 0.01, np.where(s >= m1, 0.1, 1.0))
    else:  # validated in TrainConfig
        raise ValueError(config.lr_schedule)
    return lr.astype(np.float32)


def to_unit_float(x_uint8: np.ndarray) -> np.ndarray:
    """Pixels to float32 in [0, 1]: the only normalization, the same in every engine."""
    return np.asarray(x_uint8, dtype=np.float32) / np.float32(255.0)
