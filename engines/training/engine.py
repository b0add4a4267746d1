"""The one shape every framework engine has, and the framework-free parts they share.

An engine is used as: build -> (train | load) -> evaluate -> save. `train` returns the
"train" object of the result schema and `evaluate` the "evaluation" object (DESIGN.md,
schema 1). `run_engine` wraps a whole run and turns every expected failure (framework not
installed, architecture too big for the resolution, batch larger than the split, NaN
loss, a weight file that does not load) into a status and a message, never a traceback.

What is shared here and not re-implemented per framework: the training plan (example
order, per-example weights, learning rate per step: `data_order`), the timing
bookkeeping (`TrainClock`: compile time kept apart from steady-state epoch time), the
progress events, and the metrics (`metrics.evaluate_probabilities`).
"""
from __future__ import annotations

import abc
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engines.training import plan as data_order
from engines.training.config import ConfigError, TrainConfig
from engines.training.events import EventCallback, make_event, null_callback
from engines.training.metrics import evaluate_probabilities

FRAMEWORKS = ("keras", "tensorflow", "pytorch", "jax")


class EngineError(Exception):
    """An expected failure with a message fit for the result's "message" field."""

    status = "error"


class FrameworkMissing(EngineError):
    pass


class TrainingDiverged(EngineError):
    def __init__(self, epoch: int, step: int, loss: float):
        self.epoch, self.step, self.loss = epoch, step, loss
        super().__init__(f"training stopped: loss became {loss} at epoch {epoch} "
                         f"(step {step} of the run); try a lower learning rate")


class WeightsError(EngineError):
    pass


@dataclass(frozen=True)
class TrainPlan:
    """Framework-free description of every update of a run (see data_order)."""

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


def logits_loss_accuracy(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Unweighted mean cross-entropy and accuracy: the validation figures of every engine."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    y = np.asarray(y, dtype=np.int64)
    loss = float(-logp[np.arange(len(y)), y].mean())
    acc = float((z.argmax(axis=1) == y).mean())
    return loss, acc


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


FIRST_LOSSES = 5  # engines report the loss of each of the run's first 5 steps


class TrainClock:
    """Timing and history of one training run, identical bookkeeping for every engine.

    The engine calls `first_step_done()` once the first update has finished (the loss
    read back, so the device has synchronized); that span, trace + compile + one step,
    is `compile_time_s` and is left out of epoch 0's time and of images/s. The first
    validation pass's extra compile is likewise moved: `first_eval_done(duration)`.
    """

    def __init__(self, plan: TrainPlan, on_event: EventCallback, framework: str):
        self.plan = plan
        self.on_event = on_event or null_callback
        self.framework = framework
        self.epochs: list[dict] = []
        self.first_losses: list[float] = []
        self.compile_time_s = 0.0
        self._train_s = 0.0
        self._images = 0
        self._t0 = time.perf_counter()
        self._epoch_t0 = None
        self._val_t0 = None
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
        # Engines warm their eval step up before validation starts; Keras's first
        # validation batch is inside its validation: keep each in the span it fell in.
        if self._val_t0 is None:
            self._excluded_train += seconds
        else:
            self._excluded_eval += seconds

    def validation_start(self) -> None:
        self._val_t0 = time.perf_counter()

    def step(self, epoch: int, step: int, loss: float) -> None:
        """Called with a synchronized loss every `log_every_steps` steps."""
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


class Engine(abc.ABC):
    """One framework's implementation of build / train / predict / evaluate / save / load.

    Subclasses set `name` (the result's "framework") and `model_framework` (what
    `models.build_model` calls it), and import their framework in `__init__`, so that
    constructing an engine for a missing framework fails in one known place.
    """

    name: str = ""
    model_framework: str = ""
    weights_suffix: str = ""

    def __init__(self):
        self.model = None
        self.architecture: str | None = None
        self.input_shape: tuple[int, int, int] | None = None  # (H, W, C)
        self.num_classes: int | None = None
        self.train_notes: list[str] = []

    # -- identity ---------------------------------------------------------------------
    @abc.abstractmethod
    def versions(self) -> dict:
        """Framework package versions, for the result's environment."""

    def device(self) -> str:
        return "cpu"

    # -- model ------------------------------------------------------------------------
    def build(self, arch: str, resolution: int, channels: int, num_classes: int,
              weights: dict | None = None, *, seed: int = 0, same_init: bool = True):
        """Build `arch` from its single definition in models/ with `weights` (a
        framework-neutral dict from models.init_weights), else drawn from `seed`: the
        canonical draw shared by all frameworks (same_init) or the framework's own."""
        import models

        try:
            models.check_input(arch, resolution=resolution, channels=channels)
        except Exception as e:  # unknown arch, or too small a resolution: say which
            raise EngineError(str(e)) from None
        self._init = "canonical" if same_init else "framework"
        self.model = self._build(arch, resolution, channels, num_classes, weights, seed)
        self.architecture = arch
        self.input_shape = (resolution, resolution, channels)
        self.num_classes = num_classes
        return self.model

    def _build(self, arch, resolution, channels, num_classes, weights, seed):
        import models

        return models.build_model(arch, self.model_framework, resolution=resolution,
                                  channels=channels, num_classes=num_classes, seed=seed,
                                  weights=weights, init=getattr(self, "_init", "canonical"))

    def parameters(self) -> int:
        import models

        return int(models.count_parameters(self.model_framework, self.model))

    def _require_model(self):
        if self.model is None:
            raise EngineError(f"{self.name}: build() or load() a model first")

    def _check_dataset(self, dataset) -> None:
        self._require_model()
        shape = (dataset.resolution, dataset.resolution, dataset.channels)
        if tuple(dataset.train.x.shape[1:]) != self.input_shape or shape != self.input_shape:
            raise EngineError(f"the model was built for {self.input_shape} images, the dataset "
                              f"has {tuple(dataset.train.x.shape[1:])}")
        if dataset.num_classes != self.num_classes:
            raise EngineError(f"the model has {self.num_classes} outputs, the dataset "
                              f"{dataset.num_classes} classes")

    # -- training and inference ------------------------------------------------------
    def _validate_and_end_epoch(self, clock: TrainClock, dataset, config: TrainConfig, epoch: int,
                                train_loss: float, train_accuracy: float) -> None:
        """The end of an epoch in the hand-written loops (Keras has its own callbacks):
        the first time, one batch compiles the eval step outside the validation span;
        then the whole validation split, and the epoch's record."""
        if epoch == 0:
            t0 = time.perf_counter()
            self.predict_logits(dataset.val.x[: config.batch_size], config.batch_size)
            clock.first_eval_done(time.perf_counter() - t0)
        clock.validation_start()
        val_loss, val_acc = logits_loss_accuracy(
            self.predict_logits(dataset.val.x, config.batch_size), dataset.val.y)
        clock.epoch_end(epoch, train_loss, train_accuracy, val_loss, val_acc)

    @abc.abstractmethod
    def train(self, dataset, config: TrainConfig, on_event: EventCallback = null_callback) -> dict:
        """Train on dataset.train, validate on dataset.val each epoch; the "train" object."""

    @abc.abstractmethod
    def predict_logits(self, x_uint8: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Inference-mode logits, float32 (N, classes), for uint8 NHWC images."""

    def predict_proba(self, x_uint8: np.ndarray, batch_size: int = 256) -> np.ndarray:
        return softmax(self.predict_logits(x_uint8, batch_size))

    def evaluate(self, dataset, batch_size: int = 256) -> dict:
        """The "evaluation" object: metrics from test-split probabilities, plus the time to
        predict the whole test split (the papers' figure), measured on a second pass so
        that tracing/compilation of each batch shape is not in it."""
        self._check_dataset(dataset)
        x = dataset.test.x
        self.predict_proba(x, batch_size)  # warm-up: compiles every batch shape
        t0 = time.perf_counter()
        proba = self.predict_proba(x, batch_size)  # returns host NumPy: synchronized
        elapsed = time.perf_counter() - t0
        return evaluate_probabilities(dataset.test.y, proba, dataset.class_names,
                                      test_inference_time_s=elapsed)

    # -- inference timing (the harness) ---------------------------------------------------
    # Every engine provides the same three pieces, and the loop around them is shared
    # (harness.timing.measure), so no framework gets a different stopwatch:
    #   _inference_fn()        a callable: one device-resident float batch -> outputs,
    #                          compiled as the run's `compile` says, in its precision;
    #   _device_batch(x)       float32 NHWC images in [0, 1] -> the model's input on the
    #                          device (layout, memory format);
    #   sync(outputs)          returns once the outputs exist (device synchronized).
    INFERENCE_INPUT_BUDGET_BYTES = 256 * 2**20

    def prepare_inference(self, config: TrainConfig | None = None) -> None:
        """Apply the run's precision and compile settings for inference (training applies
        them itself; a loaded or inference-only model needs this), and drop any compiled
        inference function: call it again after the weights change."""
        if config is not None:
            self._config = config
        self._infer = None
        self._apply_inference_config()

    def _apply_inference_config(self) -> None:
        pass

    @abc.abstractmethod
    def _inference_fn(self) -> Callable:
        """The model's forward pass in inference mode, as one callable."""

    @abc.abstractmethod
    def _device_batch(self, x_float_nhwc: np.ndarray):
        """One input batch, placed on the device the model runs on."""

    @abc.abstractmethod
    def sync(self, outputs) -> None:
        """Block until `outputs` have been computed."""

    def inference_inputs(self, batch_size: int, images: np.ndarray | None = None) -> list:
        """A few different device-resident batches (2 to 4, within a memory budget) to
        rotate through, cut from `images` (uint8 NHWC, repeated as needed) or random."""
        self._require_model()
        h, w, c = self.input_shape
        per_batch = batch_size * h * w * c * 4
        n = int(min(4, max(2, self.INFERENCE_INPUT_BUDGET_BYTES // max(per_batch, 1))))
        if images is None or len(images) == 0:
            images = np.random.default_rng(0).integers(0, 256, (n * batch_size, h, w, c), dtype=np.uint8)
        idx = np.arange(n * batch_size)
        pool = np.take(images, idx, axis=0, mode="wrap")
        return [self._device_batch(data_order.to_unit_float(pool[i * batch_size:(i + 1) * batch_size]))
                for i in range(n)]

    def time_inference(self, batch_size: int, *, warmup: int = 20, iters: int = 100,
                       images: np.ndarray | None = None, clock=time.perf_counter,
                       min_window_s: float = 0.0, windows=()):
        """Synchronized inference timing at one batch size: a harness.timing.Measurement
        (first call apart, warm-up excluded, per-call latencies, throughput)."""
        from engines.trackers.timing import measure

        self._require_model()
        if getattr(self, "_infer", None) is None:
            self._infer = self._inference_fn()
        inputs = self.inference_inputs(batch_size, images)
        try:
            return measure(self._infer, self.sync, inputs, batch_size=batch_size, warmup=warmup,
                           iters=iters, clock=clock, min_window_s=min_window_s, windows=windows)
        finally:
            del inputs  # device memory back before the next batch size

    # -- weights ----------------------------------------------------------------------
    @abc.abstractmethod
    def save(self, path: str) -> str:
        """Save the weights in the framework's own format; returns the file written."""

    @abc.abstractmethod
    def load(self, path: str) -> None:
        """Load weights saved by `save` into the built model; WeightsError if they do not fit."""

    def weights_path(self, path: str) -> str:
        return path if path.endswith(self.weights_suffix) else path + self.weights_suffix

    def _check_weights_file(self, path: str) -> str:
        self._require_model()
        path = self.weights_path(path)
        if not os.path.isfile(path):
            raise WeightsError(f"no weight file at {path}")
        return path


# -- the whole run, with failures turned into a status -------------------------------
def environment_note() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()}


class RunHooks:
    """Where the harness (the worker) measures around run_engine's stages; no-ops here."""

    def before_train(self, engine: Engine) -> None:
        pass

    def after_train(self, engine: Engine, train: dict) -> None:
        pass

    def after_run(self, engine: Engine, out: dict) -> None:
        """After evaluate and save; may add to `out` (the worker times inference here,
        so that its failures become a status like every other stage's)."""


def run_engine(framework: str, dataset, config: TrainConfig | dict, *,
               on_event: EventCallback = null_callback, weights_path: str | None = None,
               save_path: str | None = None, evaluate: bool = True,
               eval_batch_size: int = 256, train: bool = True,
               hooks: RunHooks | None = None) -> dict:
    """Build, then train (or load `weights_path`), evaluate, optionally save.

    `train=False` with no `weights_path` keeps the initial weights (an inference-only
    run: no training, no evaluation). Emits "stage" events (building, training,
    evaluating) as it goes.

    Returns {"framework", "status", "message", "model", "train", "evaluation", "versions"}:
    the engine's part of a RunResult. Expected failures give status "error" and a
    message, running out of memory "oom"; anything unexpected gives status "crashed"
    with the exception's last line.
    """
    hooks = hooks or RunHooks()
    from engines.frameworks import get_engine

    out = {"framework": framework, "status": "ok", "message": None, "model": None,
           "train": None, "evaluation": None, "versions": {}}

    def fail(status, message):
        out["status"], out["message"] = status, message
        try:
            on_event(make_event("error", framework=framework, status=status, message=message))
        except Exception:
            pass
        return out

    def stage(name):
        on_event(make_event("stage", framework=framework, stage=name))

    try:
        if isinstance(config, dict):
            config = TrainConfig.from_dict(config)
        engine = get_engine(framework)
        out["versions"] = engine.versions()
        import models

        try:  # before any weights are drawn: an architecture that does not fit, by name
            models.check_input(config.architecture, resolution=dataset.resolution,
                               channels=dataset.channels)
        except ValueError as e:
            raise EngineError(str(e)) from None
        weights = None
        if config.same_init and weights_path is None:
            # One framework-neutral draw from the seed, loaded into every framework.
            weights = models.init_weights(config.architecture, resolution=dataset.resolution,
                                          channels=dataset.channels,
                                          num_classes=dataset.num_classes, seed=config.seed)
        stage("building")
        engine.build(config.architecture, dataset.resolution, dataset.channels,
                     dataset.num_classes, weights, seed=config.seed, same_init=config.same_init)
        out["model"] = {"architecture": config.architecture, "parameters": engine.parameters(),
                        "flops_per_image": None}
        if weights_path is not None:
            engine.load(weights_path)
            # Training applies the run's precision and compile settings; loaded weights
            # are evaluated under the same ones.
            engine.prepare_inference(config)
        elif train:
            stage("training")
            hooks.before_train(engine)
            out["train"] = engine.train(dataset, config, on_event)
            hooks.after_train(engine, out["train"])
        if evaluate and (train or weights_path is not None):
            stage("evaluating")
            out["evaluation"] = engine.evaluate(dataset, eval_batch_size)
        if save_path is not None and weights_path is None:
            out["weights_file"] = engine.save(save_path)
        hooks.after_run(engine, out)
    except (EngineError, ConfigError) as e:
        return fail(getattr(e, "status", "error"), str(e))
    except Exception as e:  # noqa: BLE001 - the worker must report, not die
        from engines.trackers.memory import is_oom

        if is_oom(e):
            text = (str(e).strip().splitlines() or [type(e).__name__])[0]
            return fail("oom", f"{framework}: out of memory: {text}")
        msg = _known_failure(e)
        if msg:
            return fail("error", msg)
        text = (str(e).strip().splitlines() or [""])[0]
        return fail("crashed", f"{framework}: unexpected {type(e).__name__}: {text}")
    return out


def _known_failure(e: Exception) -> str | None:
    """Messages for failures raised by libraries we call (models/, datasets)."""
    name = type(e).__name__
    if name in ("DatasetError", "ModelError", "ArchitectureError", "InputTooSmall"):
        return str(e)
    if isinstance(e, (ValueError, KeyError)) and e.__class__.__module__.startswith("models"):
        return str(e)
    return None
