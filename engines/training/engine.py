"""The one shape every framework engine has, and the failures it may raise.

An engine is made for one run: `get_engine(name, config)` gives it its TrainConfig, which
it keeps (`engine.config`) and never changes. Then `build` (canonical weights, or the
framework's own draw from config.seed) -> `train` or `load` -> `evaluate` -> `save`, and
for the timing harness `inference_fn` + `inference_inputs` + `sync`. `train` returns the
"train" object of the result schema and `evaluate` the "evaluation" object (DESIGN.md,
schema 1). Expected failures raise EngineError subclasses, which the scenario turns into
a status and a message.

Shared by every engine and not re-implemented per framework: the training plan (example
order, per-example weights, learning rate per step: engines.training.plan), the loop and
its clock (engines.training.loop), the progress events and the metrics.
"""
from __future__ import annotations

import abc
import os
import time
from collections.abc import Callable

import numpy as np

import models
from engines.frameworks import info as framework_info
from engines.training import plan as data_order
from engines.training.config import ConfigError, TrainConfig
from engines.training.events import EventCallback, null_callback
from engines.training.metrics import evaluate_probabilities, softmax


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


class Engine(abc.ABC):
    """One framework's build / train / predict / evaluate / save / load, for one run.

    Subclasses set `name` (the result's "framework": its row of the framework table names
    the models builder, `builder`) and `weights_suffix`, import their framework at module
    level (so that a missing framework fails in one known place: engine_class), and apply
    the run's settings when they build the model (device, memory format, precision
    policy, dropout); everything they compile is built with the model or where it is used.
    """

    name: str = ""
    weights_suffix: str = ""
    # inference_inputs: at most this much device memory of input batches to rotate through
    INFERENCE_INPUT_BUDGET_BYTES = 256 * 2**20

    def __init__(self, config: TrainConfig):
        if not isinstance(config, TrainConfig):
            raise ConfigError(f"{self.name or 'engine'}: config must be a TrainConfig, "
                              f"got {type(config).__name__}")
        self.config = config
        self.import_ahead(config.compile)
        self.builder = framework_info(self.name).builder  # models' builder: keras|pytorch|jax
        self.model = None
        self.architecture: str | None = None
        self.input_shape: tuple[int, int, int] | None = None  # (H, W, C)
        self.num_classes: int | None = None

    @classmethod
    def import_ahead(cls, compile: bool) -> None:
        """Import now what the run's first compiled call would otherwise import: a worker
        started ahead (runs.spares) calls it while it waits, a fresh worker when it makes the
        engine, so that in both the framework's import stage holds it, not build or compile
        time. Nothing by default: JAX and TensorFlow bring their compilers with their
        import."""
        return

    # -- identity ---------------------------------------------------------------------
    @abc.abstractmethod
    def versions(self) -> dict:
        """Framework package versions, for the result's environment."""

    def device(self) -> str:
        """Where this engine computes, as engines.devices labels it ("cuda:0 NVIDIA H200",
        "cpu"): its runtime's answer (engines.frameworks.runtimes.device), the same one
        `./lab doctor`'s probe gives."""
        from engines.frameworks import runtimes

        return runtimes.device(framework_info(self.name).runtime)

    # -- model ------------------------------------------------------------------------
    def build(self, architecture: str, resolution: int, channels: int, num_classes: int,
              weights: dict | None = None):
        """Build `architecture` (the config's) from its single definition in models/, with
        `weights` (a canonical dict, e.g. models.init_weights: the same draw in every
        framework) or, without, the framework's own initialization drawn from config.seed."""
        if architecture != self.config.architecture:
            raise EngineError(f"{self.name}: asked to build {architecture!r}, but the run's "
                              f"configuration is for {self.config.architecture!r}")
        try:
            models.check_input(architecture, resolution=resolution, channels=channels)
        except ValueError as e:  # unknown architecture, or too small an input: say which
            raise EngineError(str(e)) from None
        self.architecture = architecture
        self.input_shape = (resolution, resolution, channels)
        self.num_classes = num_classes
        self.model = self._build_model(weights)
        return self.model

    def _build_model(self, weights: dict | None):
        """The model as models/ builds it; engines extend this to place and configure it."""
        h, _, c = self.input_shape
        return models.build_model(self.architecture, self.builder, resolution=h,
                                  channels=c, num_classes=self.num_classes, seed=self.config.seed,
                                  weights=weights, init="framework" if weights is None else "canonical")

    def parameters(self) -> int:
        self._require_model()
        return int(models.count_parameters(self.builder, self.model))

    def _require_model(self):
        if self.model is None:
            raise EngineError(f"{self.name}: build() a model first")

    def _check_dataset(self, dataset) -> None:
        self._require_model()
        shape = (dataset.resolution, dataset.resolution, dataset.channels)
        if tuple(dataset.train.x.shape[1:]) != self.input_shape or shape != self.input_shape:
            raise EngineError(f"the model was built for {self.input_shape} images, the dataset "
                              f"has {tuple(dataset.train.x.shape[1:])}")
        if dataset.num_classes != self.num_classes:
            raise EngineError(f"the model has {self.num_classes} outputs, the dataset "
                              f"{dataset.num_classes} classes")

    # -- training and evaluation -----------------------------------------------------
    @abc.abstractmethod
    def train(self, dataset, on_event: EventCallback = null_callback) -> dict:
        """Train on dataset.train, validate on dataset.val each epoch; the "train" object."""

    @abc.abstractmethod
    def predict_logits(self, x_uint8: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Inference-mode logits, float32 (N, classes), for uint8 NHWC images."""

    def batchnorm_moments(self, x_uint8: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
        """One forward pass of a uint8 NHWC batch as in training (each BatchNorm on its
        batch's statistics) with dropout and stochastic depth off; per BatchNorm layer (its
        IR name) the per-channel mean and biased variance of its input and the number of
        values per channel. What engines.training.batchnorm combines over the split."""
        raise EngineError(f"{self.name}: this engine cannot recompute BatchNorm statistics")

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

    # -- inference timing ---------------------------------------------------------------
    # Every engine provides the same three pieces; the loop around them is shared
    # (engines.trackers.timing.measure), so no framework gets a different stopwatch.
    @abc.abstractmethod
    def inference_fn(self) -> Callable:
        """The model's forward pass in inference mode as one callable (one device-resident
        float batch -> outputs), compiled as config.compile says, in config.precision. A
        new callable per call: the caller keeps it for as long as it times."""

    @abc.abstractmethod
    def _device_batch(self, x_float_nhwc: np.ndarray):
        """float32 NHWC images in [0, 1] -> the model's input on its device (layout,
        memory format)."""

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
        pool = np.take(images, np.arange(n * batch_size), axis=0, mode="wrap")
        return [self._device_batch(data_order.to_unit_float(pool[i * batch_size:(i + 1) * batch_size]))
                for i in range(n)]

    # -- weights ----------------------------------------------------------------------
    @abc.abstractmethod
    def save(self, path: str) -> str:
        """Save the weights in the framework's own format; returns the file written."""

    @abc.abstractmethod
    def load(self, path: str) -> None:
        """Load weights saved by `save` into the built model, which is then ready for
        inference under the run's settings; WeightsError if they do not fit."""

    def weights_path(self, path: str) -> str:
        return path if path.endswith(self.weights_suffix) else path + self.weights_suffix

    def _check_weights_file(self, path: str) -> str:
        self._require_model()
        path = self.weights_path(path)
        if not os.path.isfile(path):
            raise WeightsError(f"no weight file at {path}")
        return path
