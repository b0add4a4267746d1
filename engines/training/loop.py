"""One training loop for the hand-written engines, and the clock every engine feeds.

The bookkeeping of a training run is written once, here: the epochs and their steps, the
first step timed apart (trace + compile + one update, synchronized), the loss of each of
the run's first FIRST_LOSSES steps read back, a progress event every `log_every_steps`,
validation at each epoch's end (its first compile kept apart too), the epoch records and
the run's figures. The PyTorch, low-level TensorFlow and JAX engines supply only what
differs (`StepFunctions`: their batches, their update, their inference-mode logits, and
a hook before validation). Keras trains with `model.fit`, which is what it compares; its
callback feeds the same `TrainClock`.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from engines.training import plan as data_order
from engines.training.config import TrainConfig
from engines.training.engine import EngineError, TrainingDiverged
from engines.training.events import EventCallback, make_event, null_callback
from engines.training.metrics import logits_loss_accuracy

FIRST_LOSSES = 5  # engines report the loss of each of the run's first 5 steps


@dataclass(frozen=True)
class TrainPlan:
    """Framework-free description of every update of a run (see engines.training.plan)."""

    config: TrainConfig
    n_train: int
    steps_per_epoch: int
    sample_weight: np.ndarray  # (n_train,) float32, ones without class weighting
    lr: np.ndarray  # (epochs * steps_per_epoch,) float32

    def batches(self, epoch: int) -> np.ndarray:
        return data_order.epoch_batches(self.config.seed, epoch, self.n_train,
                                        self.config.batch_size)

    @property
    def total_steps(self) -> int:
        return self.config.epochs * self.steps_per_epoch


def make_plan(dataset, config: TrainConfig) -> TrainPlan:
    n = len(dataset.train)
    if config.batch_size > n:
        raise EngineError(f"batch size {config.batch_size} is larger than the training split "
                          f"({n} images); use a batch size of at most {n}")
    spe = data_order.steps_per_epoch(n, config.batch_size)
    return TrainPlan(
        config=config, n_train=n, steps_per_epoch=spe,
        sample_weight=data_order.sample_weights(dataset.train.y, dataset.num_classes,
                                                config.class_weights),
        lr=data_order.lr_table(config, spe),
    )


class TrainClock:
    """Timing and history of one training run, identical bookkeeping for every engine.

    `first_step_done(seconds)` is called once the first update has finished (its loss
    read back, so the device has synchronized); that span, trace + compile + one step,
    is `compile_time_s` and is left out of epoch 0's time and of images/s. The first
    validation pass's extra compile is likewise moved: `first_eval_done(seconds)`.
    """

    def __init__(self, plan: TrainPlan, on_event: EventCallback = null_callback):
        self.plan = plan
        self.on_event = on_event or null_callback
        self.epochs: list[dict] = []
        self.first_losses: list[float] = []
        self.compile_time_s = 0.0
        self._train_s = 0.0
        self._images = 0
        self._t0 = time.perf_counter()
        self._epoch_t0 = self._t0
        self._val_t0: float | None = None
        self._excluded_train = 0.0
        self._excluded_eval = 0.0
        self._excluded_images = 0

    # -- epoch and step boundaries --------------------------------------------------
    def epoch_start(self, epoch: int) -> None:
        self._epoch_t0 = time.perf_counter()
        self._excluded_train = 0.0
        self._excluded_eval = 0.0
        self._val_t0 = None
        self._excluded_images = 0

    def first_step_done(self, seconds: float) -> None:
        self.compile_time_s += seconds
        self._excluded_train += seconds
        self._excluded_images += self.plan.config.batch_size

    def first_eval_done(self, seconds: float) -> None:
        self.compile_time_s += seconds
        # The hand-written loops warm their eval step up before validation starts; Keras's
        # first validation batch is inside its validation: keep each in the span it fell in.
        if self._val_t0 is None:
            self._excluded_train += seconds
        else:
            self._excluded_eval += seconds

    def validation_start(self) -> None:
        self._val_t0 = time.perf_counter()

    def wants_loss(self, epoch: int, step: int) -> bool:
        """Whether this step's loss is read back (a synchronization, so not every step's):
        each of the run's first FIRST_LOSSES steps, and every `log_every_steps`-th."""
        global_step = epoch * self.plan.steps_per_epoch + step
        return global_step < FIRST_LOSSES or (step + 1) % self.plan.config.log_every_steps == 0

    def step(self, epoch: int, step: int, loss: float) -> None:
        """A step's loss, read back: recorded among the first losses, checked, reported."""
        global_step = epoch * self.plan.steps_per_epoch + step
        if global_step < FIRST_LOSSES and global_step == len(self.first_losses):
            self.first_losses.append(float(loss))
        if not math.isfinite(loss):
            raise TrainingDiverged(epoch + 1, global_step + 1, loss)
        self.on_event(make_event("step", epoch=epoch + 1, step=step + 1,
                                 steps=self.plan.steps_per_epoch, loss=float(loss),
                                 lr=float(self.plan.lr[min(global_step, len(self.plan.lr) - 1)])))

    def epoch_end(self, epoch: int, loss: float, accuracy: float, val_loss: float,
                  val_accuracy: float) -> None:
        now = time.perf_counter()
        val_start = self._val_t0 if self._val_t0 is not None else now
        excluded = self._excluded_train + self._excluded_eval
        train_s = max(val_start - self._epoch_t0 - self._excluded_train, 0.0)
        images = self.plan.steps_per_epoch * self.plan.config.batch_size - self._excluded_images
        self._train_s += train_s if images > 0 else 0.0
        self._images += max(images, 0)
        rec = {"epoch": epoch + 1, "loss": float(loss), "accuracy": float(accuracy),
               "val_loss": float(val_loss), "val_accuracy": float(val_accuracy),
               "time_s": max(now - self._epoch_t0 - excluded, 0.0)}
        self.epochs.append(rec)
        self.on_event(make_event("epoch", epochs=self.plan.config.epochs, **rec))
        if not math.isfinite(loss):
            raise TrainingDiverged(epoch + 1, (epoch + 1) * self.plan.steps_per_epoch, loss)

    def result(self, input_pipeline: str, notes: list[str] | None = None) -> dict:
        """The result schema's "train" object (energy and memory are the trackers')."""
        return {
            "epochs": self.epochs,
            "compile_time_s": float(self.compile_time_s),
            "total_time_s": float(time.perf_counter() - self._t0),
            # Steady state: training steps only, compile and validation left out. With
            # one step per epoch and one epoch there is no steady state: null.
            "images_per_s": (self._images / self._train_s) if self._images and self._train_s > 0 else None,
            "energy_j": None,
            "peak_memory_bytes": None,
            "input_pipeline": input_pipeline,
            "steps_per_epoch": self.plan.steps_per_epoch,
            # The first updates' losses, each read back after its step: the cross-
            # framework agreement check compares these.
            "first_step_losses": self.first_losses,
            "notes": list(notes or []),
        }


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class StepFunctions:
    """What a hand-written engine gives the loop.

    `batches(epoch)` yields each step's arguments in the plan's order; `step(*arguments)`
    runs one update and returns (loss, number correct) as the framework's device values,
    not read back (the loop adds them up where they are and reads what it needs);
    `predict_logits(x_uint8, batch_size)` is the inference-mode forward pass validation
    uses; `before_validation()` runs before it (JAX writes its parameters back into the
    model there).
    """

    batches: Callable[[int], Iterable[tuple]]
    step: Callable[..., tuple]
    predict_logits: Callable[[np.ndarray, int], np.ndarray]
    before_validation: Callable[[], None] = _nothing


def train_loop(plan: TrainPlan, dataset, steps: StepFunctions,
               on_event: EventCallback = null_callback) -> TrainClock:
    """Every epoch: its steps, then validation on dataset.val; returns the clock, whose
    `result(...)` is the run's "train" object."""
    clock = TrainClock(plan, on_event)
    for epoch in range(plan.config.epochs):
        clock.epoch_start(epoch)
        loss, accuracy = _train_epoch(clock, steps, epoch)
        steps.before_validation()
        val_loss, val_accuracy = _validate(clock, steps.predict_logits, dataset, epoch)
        clock.epoch_end(epoch, loss, accuracy, val_loss, val_accuracy)
    return clock


def _train_epoch(clock: TrainClock, steps: StepFunctions, epoch: int) -> tuple[float, float]:
    """The epoch's updates; its mean training loss and accuracy."""
    loss_sum = correct = 0  # become device values with the first step: no read-back per step
    for step, batch in enumerate(steps.batches(epoch)):
        t0 = time.perf_counter()
        loss, step_correct = steps.step(*batch)
        loss_sum = loss_sum + loss
        correct = correct + step_correct
        if epoch == 0 and step == 0:
            float(loss)  # reading the loss back waits for the device
            clock.first_step_done(time.perf_counter() - t0)
        if clock.wants_loss(epoch, step):
            clock.step(epoch, step, float(loss))
    n = clock.plan.steps_per_epoch
    return float(loss_sum) / n, int(correct) / (n * clock.plan.config.batch_size)


def _validate(clock: TrainClock, predict_logits, dataset, epoch: int) -> tuple[float, float]:
    """The whole validation split; the first time, one batch first compiles the eval step
    outside the validation span."""
    batch_size = clock.plan.config.batch_size
    if epoch == 0:
        t0 = time.perf_counter()
        predict_logits(dataset.val.x[:batch_size], batch_size)
        clock.first_eval_done(time.perf_counter() - t0)
    clock.validation_start()
    return logits_loss_accuracy(predict_logits(dataset.val.x, batch_size), dataset.val.y)
