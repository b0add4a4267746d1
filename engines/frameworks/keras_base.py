"""Keras 3 as its users write it, on any backend: model.compile / model.fit with callbacks.

What the three Keras frameworks share (Keras on TensorFlow, on JAX and on PyTorch) is
written here with keras and keras.ops only, so that it runs unchanged on every backend:
the model built under the run's dtype policy and XLA/compile setting, the optimizer, the
learning-rate table as a schedule, the clock fed from fit's callbacks, predictions with
model.predict, and the weights in Keras's own .weights.h5 file. Each backend's engine adds
only what its backend does differently: its input pipeline for fit (tf.data on
TensorFlow; a keras.utils.PyDataset elsewhere), its precision switches, the compiled
inference function the timing harness calls, and where the model runs.

The backend is chosen by KERAS_BACKEND before keras is first imported (the framework
table's `environment`, set by the worker); an engine whose backend is not the one this
process runs raises ImportError when imported, which engine_class reports.
"""
from __future__ import annotations

import abc
import os
import time

import keras
import numpy as np

from engines.training import plan as data_order
from engines.training.config import ADAM_BETAS, TrainConfig
from engines.training.engine import Engine, WeightsError
from engines.training.events import null_callback
from engines.training.loop import TrainClock, TrainPlan, make_plan
from models.build_keras import ir_name, set_random_seed


def require_backend(name: str, framework: str) -> None:
    """ImportError unless this process's Keras runs on `name`: the backend is fixed when
    keras is first imported, so a wrong one cannot be switched afterwards."""
    if keras.backend.backend() != name:
        raise ImportError(f"Keras is running on {keras.backend.backend()!r}; the {framework} engine "
                          f"needs KERAS_BACKEND={name} set before keras is first imported")


class TableSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """The shared per-step learning-rate table as a Keras schedule (keras.ops: every backend)."""

    def __init__(self, table):
        self.table = np.asarray(table, dtype=np.float32)

    def __call__(self, step):
        i = keras.ops.minimum(keras.ops.cast(step, "int32"), len(self.table) - 1)
        return keras.ops.take(keras.ops.convert_to_tensor(self.table), i)

    def get_config(self):
        return {"table": self.table.tolist()}


def make_optimizer(config: TrainConfig, schedule):
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=schedule, beta_1=ADAM_BETAS[0],
                                     beta_2=ADAM_BETAS[1], epsilon=config.adam_epsilon)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=schedule, beta_1=ADAM_BETAS[0],
                                      beta_2=ADAM_BETAS[1], epsilon=config.adam_epsilon,
                                      weight_decay=config.weight_decay)
    # Keras applies SGD's weight decay decoupled (p -= lr*wd*p); for momentum 0 that equals
    # the L2 gradient term PyTorch and Optax add.
    return keras.optimizers.SGD(learning_rate=schedule, momentum=config.momentum,
                                weight_decay=config.weight_decay or None)


def _dropout_rates(model) -> dict:
    return {layer: layer.rate for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, (keras.layers.Dropout, keras.layers.SpatialDropout2D))}


def disable_dropout(model) -> int:
    n = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, (keras.layers.Dropout, keras.layers.SpatialDropout2D)):
            layer.rate = 0.0
            n += 1
    return n


class PlannedBatches(keras.utils.PyDataset):
    """Every training batch of the run in the shared order, epoch after epoch, as fit
    takes them on any backend: fit with steps_per_epoch keeps one iterator across epochs,
    so batch i is step i of the run. Gathered by index from the uint8 split and scaled to
    [0, 1] per batch (idiomatic), or from the split scaled once (`prenormalized`)."""

    def __init__(self, dataset, plan: TrainPlan, *, prenormalized: bool):
        super().__init__(workers=1, use_multiprocessing=False)
        self.order = np.concatenate([plan.batches(e) for e in range(plan.config.epochs)])
        self.x = data_order.to_unit_float(dataset.train.x) if prenormalized else dataset.train.x
        self.y = dataset.train.y.astype(np.int64)
        self.prenormalized = prenormalized

    def __len__(self):
        return len(self.order)

    def __getitem__(self, i):
        idx = self.order[i]
        x = self.x[idx] if self.prenormalized else data_order.to_unit_float(self.x[idx])
        return x, self.y[idx]


class ClockCallback(keras.callbacks.Callback):
    """Feeds Keras's callback hooks into the shared TrainClock."""

    def __init__(self, clock: TrainClock):
        super().__init__()
        self.clock = clock
        self.epoch = 0
        self._t0 = None
        self._prev_mean = 0.0
        self._first_test = True

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self._prev_mean = 0.0
        self.clock.epoch_start(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch == 0 and batch == 0:
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        # Keras's logs["loss"] is the epoch's running mean; the step's own loss is
        # recovered from consecutive means (all batches have the same size).
        mean = float(logs["loss"])
        step_loss = mean * (batch + 1) - self._prev_mean * batch
        self._prev_mean = mean
        if self.epoch == 0 and batch == 0:
            self.clock.first_step_done(time.perf_counter() - self._t0)
        if self.clock.wants_loss(self.epoch, batch):
            self.clock.step(self.epoch, batch, step_loss)

    def on_test_begin(self, logs=None):
        self.clock.validation_start()

    def on_test_batch_begin(self, batch, logs=None):
        if self._first_test and batch == 0:
            self._t0 = time.perf_counter()

    def on_test_batch_end(self, batch, logs=None):
        if self._first_test and batch == 0:
            self._first_test = False
            self.clock.first_eval_done(time.perf_counter() - self._t0)

    def on_epoch_end(self, epoch, logs=None):
        # "accuracy": the name the train step's metric is given (Keras3Engine.train)
        self.clock.epoch_end(epoch, logs["loss"], logs["accuracy"], logs["val_loss"], logs["val_accuracy"])


class Keras3Engine(Engine):
    """model.fit on this process's Keras backend. Subclasses name their backend (`backend`,
    checked when their module is imported) and provide `_precision` (the run's precision
    switches, returning the note), `_backend_versions`, the timing pieces
    (`inference_fn`, `_device_batch`, `sync`) and, where their backend has a better one,
    `_fit_inputs`."""

    backend = ""
    weights_suffix = ".weights.h5"

    def __init__(self, config: TrainConfig):
        super().__init__(config)
        # The BatchNorm pass (batchnorm_moments): the BatchNorm layers' names and the call of
        # a model with every BatchNorm's input as an output, made on its first use, after training.
        self._bn_inputs = None

    def versions(self) -> dict:
        return {"keras": keras.__version__, **self._backend_versions()}

    @abc.abstractmethod
    def _backend_versions(self) -> dict:
        """The backend's package versions (Keras's own are added)."""

    @abc.abstractmethod
    def _precision(self) -> str:
        """Apply the run's precision switches of this backend; the result's note."""

    def _compile_note(self) -> str:
        return f"compile: jit_compile={self.config.compile} ({self.backend} backend)"

    def _build_model(self, weights):
        """Built under the run's dtype policy (mixed_bfloat16 for bf16: Keras reads the
        policy when it creates the layers), with its jit_compile setting (`predict` reads
        it; left unset, Keras picks one per backend and device, whatever the run says),
        dropout off when the run says so.

        Seeded from the run's seed first: each Keras dropout layer takes its generator's
        seed from Python's generator when it is made, so a model built before any seeding
        drew other dropout masks in every process (Keras on TensorFlow and on JAX gave
        different first losses from the same seed, run to run; Flax and PyTorch did not)."""
        self._precision()
        set_random_seed(self.config.seed)
        previous = keras.config.dtype_policy()
        if self.config.precision == "bf16":
            keras.config.set_dtype_policy("mixed_bfloat16")
        try:
            model = super()._build_model(weights)
        finally:
            keras.config.set_dtype_policy(previous)
        model.jit_compile = self.config.compile
        if not self.config.dropout:
            disable_dropout(model)
        return model

    def _start_training(self, dataset) -> tuple[TrainPlan, list[str]]:
        """What every Keras engine does first: the plan, the precision, the seed."""
        self._check_dataset(dataset)
        plan = make_plan(dataset, self.config)
        notes = [self._precision()]
        # The global generators (Python's, NumPy's, the backend's) from the run's seed as
        # training starts; each dropout layer's own generator took its seed when the
        # model was built (_build_model).
        set_random_seed(self.config.seed)
        return plan, notes

    def train(self, dataset, on_event=null_callback) -> dict:
        plan, notes = self._start_training(dataset)
        config = self.config
        # Every variable made before fit: the optimizer's slots (built here, as the TensorFlow
        # engine builds its own) and the metric's counters (a metric object, not the string
        # "accuracy", which fit resolves inside its first step). Keras on TensorFlow without a
        # distribution strategy otherwise makes them while tracing the first step, and
        # tf.function then traces the step a second time: Blood-ResNet's five steps at 28 px
        # took 20 s instead of 9 s on a 2-core CPU (25 s instead of 16 s with XLA), all of
        # the difference in the compile time the result reports. The losses are the same.
        self.model.compile(optimizer=make_optimizer(config, TableSchedule(plan.lr)),
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                           metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                           jit_compile=config.compile)
        self.model.optimizer.build(self.model.trainable_variables)
        train_data, validation_data, pipeline = self._fit_inputs(dataset, plan)
        clock = TrainClock(plan, on_event)
        self.model.fit(train_data, epochs=config.epochs, steps_per_epoch=plan.steps_per_epoch,
                       validation_data=validation_data, validation_batch_size=self._validation_batch_size(),
                       class_weight=self._class_weight(dataset), shuffle=False, verbose=0,
                       callbacks=[ClockCallback(clock)])
        notes.append(self._compile_note())
        return clock.result(pipeline, notes)

    def _class_weight(self, dataset) -> dict | None:
        if not self.config.class_weights:
            return None
        w = data_order.class_weights(dataset.train.y, dataset.num_classes)
        return {i: float(v) for i, v in enumerate(w)}

    def _validation_batch_size(self) -> int | None:
        return self.config.batch_size

    def _fit_inputs(self, dataset, plan: TrainPlan):
        """(the training batches for fit, the validation data, the pipeline's note):
        a keras.utils.PyDataset in the shared order, the backend-neutral Keras form."""
        device = self.config.pipeline == "device"
        train = PlannedBatches(dataset, plan, prenormalized=device)
        validation = (data_order.to_unit_float(dataset.val.x), dataset.val.y.astype(np.int64))
        if device:
            return train, validation, ("device (Keras form): a PyDataset gathering batches from the split "
                                       "normalized once in memory; model.fit takes host batches on the "
                                       f"{self.backend} backend")
        return train, validation, "idiomatic: keras.utils.PyDataset (gather, normalize per batch)"

    def predict_logits(self, x_uint8: np.ndarray, batch_size: int = 256) -> np.ndarray:
        self._require_model()
        out = self.model.predict(data_order.to_unit_float(x_uint8), batch_size=batch_size,
                                 verbose=0)
        return np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float32)

    def batchnorm_moments(self, x_uint8: np.ndarray) -> dict:
        """Keras has no per-layer training mode: the model that returns each BatchNorm's
        input is called with training=True, its dropout rates set to 0 for the call.
        keras.ops throughout, so every backend runs it; the layers' Keras names are
        given back as the IR's (dashes to dots)."""
        self._require_model()
        if self._bn_inputs is None:
            names = [layer.name for layer in self.model._flatten_layers(include_self=False, recursive=True)
                     if isinstance(layer, keras.layers.BatchNormalization)]
            outputs = [self.model.get_layer(name).input for name in names]
            self._bn_inputs = (names, self._batchnorm_forward(keras.Model(self.model.input, outputs)))
        names, forward = self._bn_inputs
        rates = _dropout_rates(self.model)
        disable_dropout(self.model)
        try:
            inputs = forward(data_order.to_unit_float(x_uint8))
        finally:
            for layer, rate in rates.items():
                layer.rate = rate
        out = {}
        for name, x in zip(names, inputs if isinstance(inputs, (list, tuple)) else [inputs]):
            x = keras.ops.cast(x, "float32")
            axes = tuple(range(len(x.shape) - 1))
            count = int(np.prod(x.shape[:-1]))
            out[ir_name(name)] = (keras.ops.convert_to_numpy(keras.ops.mean(x, axis=axes)).astype(np.float64),
                                  keras.ops.convert_to_numpy(keras.ops.var(x, axis=axes)).astype(np.float64),
                                  count)
        return out

    def _batchnorm_forward(self, probe):
        """The BatchNorm pass's call of the probe model on a batch of unit floats: the model
        itself in training mode, as the backend runs it eagerly. A backend whose eager ops
        cost more than compiling them (JAX) compiles it where the run compiles."""
        return lambda x: probe(x, training=True)

    def save(self, path: str) -> str:
        self._require_model()
        path = self.weights_path(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.model.save_weights(path)
        return path

    def load(self, path: str) -> None:
        path = self._check_weights_file(path)
        try:
            self.model.load_weights(path)
        except Exception as e:  # noqa: BLE001 - unreadable or mismatched file
            raise WeightsError(f"cached Keras weights at {path} do not load into "
                               f"{self.architecture}: {str(e).splitlines()[0]}") from None
