"""BatchNorm statistics recomputed over the training split after training, the same way
in every framework.

Why: a BatchNorm layer normalizes a training batch with that batch's statistics, but in
inference with running averages it updated during training. With a slow momentum (the
papers' Keras models use 0.99: each update moves the averages by 1%) and a few hundred
steps, those averages still remember the first, untrained network: training accuracy is
fine and inference-mode predictions are near chance (BreastMNIST AUC 0.54-0.61 after
2-3 epochs of blood_resnet). The cause is shared by every framework, so a short demo
would show a framework "losing" for nothing. Replacing the running averages by the
statistics of the trained network over the training split ("precise BatchNorm", Wu and
Johnson, "Rethinking 'Batch' in BatchNorm", 2021) removes it; the momentum of the
architecture's definition is left as the paper has it.

The rule, written once here (`RULE`), is the same in every framework; an engine only
runs its forward pass (`Engine.batchnorm_moments`):

- one pass over the training split, in the order the next epoch would take
  (engines.training.plan.epoch_batches with epoch = the number of trained epochs), in
  full batches of the training batch size (the last partial batch left out, as in
  training);
- the model as in training, each BatchNorm normalizing with its batch's statistics,
  but dropout and stochastic depth off (they would add noise that inference never sees);
- each BatchNorm layer's input moments per channel, per batch (mean and biased variance
  over the batch and spatial positions), combined in float64 over the whole pass (Chan's
  parallel formula): the mean of the layer's inputs over the split, and their variance
  with Bessel's correction over all N values per channel, N/(N-1) times the population
  variance, PyTorch's unbiased rule, the one the IR's running variance follows
  (models/ir.py; with N in the tens of thousands the correction is below 1e-4);
- written into the model's running mean and variance through its canonical weights
  (models.extract_weights / load_weights), the same code for every framework.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import numpy as np

import models
from engines.training import plan as data_order
from engines.training.engine import EngineError
from engines.training.metrics import logits_loss_accuracy

RULE = ("one pass over the training split in full batches of the training batch size, "
        "BatchNorm on batch statistics, dropout off; per channel the mean and the unbiased "
        "(N-1) variance of each BatchNorm input over the whole split")


@dataclass
class Moments:
    """Running count, mean and sum of squared deviations per channel (float64)."""

    count: int = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None

    def add(self, mean, var, count: int) -> None:
        """One batch's per-channel mean and biased variance over `count` values per channel
        (Chan, Golub and LeVeque's pairwise update: exact, whatever the batch sizes)."""
        mean = np.asarray(mean, dtype=np.float64)
        m2 = np.asarray(var, dtype=np.float64) * count
        if self.count == 0:
            self.count, self.mean, self.m2 = count, mean.copy(), m2.copy()
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + delta ** 2 * (self.count * count / total)
        self.count = total

    def variance(self) -> np.ndarray:
        """The unbiased variance (RULE): m2 / (N - 1)."""
        return self.m2 / max(self.count - 1, 1)


@dataclass
class PassResult:
    """What the pass did, for the result's train.batchnorm."""

    layers: int
    images: int
    batches: int
    time_s: float
    val_loss_before: float | None
    val_accuracy_before: float | None
    val_loss_after: float | None
    val_accuracy_after: float | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"recomputed": True, "rule": RULE, "layers": self.layers, "images": self.images,
                "batches": self.batches, "time_s": self.time_s,
                "val_loss_before": self.val_loss_before, "val_accuracy_before": self.val_accuracy_before,
                "val_loss_after": self.val_loss_after, "val_accuracy_after": self.val_accuracy_after}


@functools.cache
def layer_names(architecture: str, resolution: int, channels: int, num_classes: int) -> tuple[str, ...]:
    """The BatchNorm layers of an architecture (their IR names), from its definition: the
    canonical arrays that are not trained are exactly the BatchNorm running statistics.
    Cached: every RunSpec asks (its recompute_batchnorm default)."""
    specs = models.parameter_specs(architecture, resolution=resolution, channels=channels,
                                   num_classes=num_classes)
    return tuple(s.key.rpartition("/")[0] for s in specs if not s.trainable and s.key.endswith("/mean"))


def has_batchnorm(architecture: str, resolution: int, channels: int, num_classes: int = 2) -> bool:
    return bool(layer_names(architecture, resolution, channels, num_classes))


def pass_batches(config, n_train: int) -> np.ndarray:
    """Index batches of the pass: the order of the epoch after the last trained one."""
    return data_order.epoch_batches(config.seed, config.epochs, n_train, config.batch_size)


def accumulate(moments_of_batch, x_uint8: np.ndarray, batches: np.ndarray,
               names) -> dict[str, Moments]:
    """Feeds every batch through `moments_of_batch` (x -> {name: (mean, var, count)}) and
    combines the batches' moments per layer."""
    totals = {name: Moments() for name in names}
    for idx in batches:
        got = moments_of_batch(x_uint8[idx])
        missing = set(names) - set(got)
        if missing:
            raise EngineError(f"the BatchNorm pass saw no input for {', '.join(sorted(missing))}")
        for name in names:
            mean, var, count = got[name]
            totals[name].add(mean, var, int(count))
    return totals


def statistics(totals: dict[str, Moments]) -> dict[str, np.ndarray]:
    """Canonical arrays "<layer>/mean" and "<layer>/var" (float32) of the combined moments."""
    out = {}
    for name, m in totals.items():
        out[f"{name}/mean"] = m.mean.astype(np.float32)
        out[f"{name}/var"] = m.variance().astype(np.float32)
    return out


def write(engine, arrays: dict[str, np.ndarray]) -> None:
    """The new running statistics into the engine's model, through its canonical weights."""
    weights = models.extract_weights(engine.builder, engine.model)
    unknown = sorted(set(arrays) - set(weights))
    if unknown:
        raise EngineError(f"the model has no BatchNorm statistics {', '.join(unknown[:3])}")
    weights.update(arrays)
    models.load_weights(engine.builder, engine.model, weights)


def recompute(engine, dataset, config, val_before: tuple[float, float] | None = None) -> PassResult:
    """The whole pass (see the module doc) on a trained engine; validation loss and
    accuracy are measured again afterwards, to show what the running averages cost."""
    t0 = time.perf_counter()
    h, _, c = engine.input_shape
    names = layer_names(config.architecture, h, c, engine.num_classes)
    if not names:
        raise EngineError(f"{config.architecture} has no BatchNorm layer: nothing to recompute")
    batches = pass_batches(config, len(dataset.train))
    if len(batches) == 0:
        raise EngineError(f"the training split ({len(dataset.train)} images) is smaller than one batch "
                          f"of {config.batch_size}: no BatchNorm statistics can be recomputed")
    totals = accumulate(engine.batchnorm_moments, dataset.train.x, batches, names)
    write(engine, statistics(totals))
    elapsed = time.perf_counter() - t0
    after = logits_loss_accuracy(engine.predict_logits(dataset.val.x, config.batch_size), dataset.val.y)
    before = val_before or (None, None)
    return PassResult(layers=len(names), images=int(batches.size), batches=len(batches), time_s=elapsed,
                      val_loss_before=before[0], val_accuracy_before=before[1],
                      val_loss_after=after[0], val_accuracy_after=after[1])
