"""Keras 3 on TensorFlow: model.compile / model.fit with callbacks, as Keras users write it.

Toggles: jit_compile (XLA), mixed-precision policy (bf16), TF32. The example order, class
weights and learning rate per step come from the shared plan: the order is fed through
tf.data (fit's shuffling off), class weights through fit's own `class_weight`, and the
rate through a LearningRateSchedule that looks it up.
"""
from __future__ import annotations

import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

if keras.backend.backend() != "tensorflow":
    raise ImportError(f"Keras is running on {keras.backend.backend()!r}; the keras engine "
                      "needs KERAS_BACKEND=tensorflow set before keras is first imported")

from engines.training import plan as data_order
from engines.training.config import ADAM_BETAS, TrainConfig
from engines.training.engine import Engine, WeightsError
from engines.training.events import null_callback
from engines.training.loop import TrainClock, TrainPlan, make_plan


class TableSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """The shared per-step learning-rate table as a Keras schedule."""

    def __init__(self, table):
        self.table = np.asarray(table, dtype=np.float32)

    def __call__(self, step):
        t = tf.constant(self.table)
        i = tf.minimum(tf.cast(step, tf.int32), len(self.table) - 1)
        return tf.gather(t, i)

    def get_config(self):
        return {"table": self.table.tolist()}


def tf_precision(config: TrainConfig) -> str:
    p = config.precision
    if p == "default":
        return "default (TensorFlow: TF32 on where the GPU has it)"
    tf.config.experimental.enable_tensor_float_32_execution(p == "tf32")
    return {"fp32": "fp32 (TF32 off)", "tf32": "tf32 (TF32 on)",
            "bf16": "bf16: Keras mixed_bfloat16 policy (fp32 variables), TF32 off"}[p]


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


def normalize(x, *rest):
    return (tf.cast(x, tf.float32) / 255.0, *rest)


def ordered_train_dataset(dataset, plan, *, prenormalized: bool) -> tf.data.Dataset:
    """tf.data yielding every training batch of the run in the shared order, epoch after
    epoch (fit with steps_per_epoch keeps one iterator across epochs)."""
    order = np.concatenate([plan.batches(e) for e in range(plan.config.epochs)])
    x = dataset.train.x
    if prenormalized:
        x = data_order.to_unit_float(x)
    x = tf.constant(x)
    y = tf.constant(dataset.train.y.astype(np.int64))
    ds = tf.data.Dataset.from_tensor_slices(order)
    ds = ds.map(lambda idx: (tf.gather(x, idx), tf.gather(y, idx)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if not prenormalized:
        ds = ds.map(normalize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(x_uint8, y, batch_size) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((x_uint8, y.astype(np.int64))).batch(batch_size)
    return ds.map(normalize, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


class _ClockCallback(keras.callbacks.Callback):
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
        acc = logs.get("accuracy", logs.get("sparse_categorical_accuracy"))
        val_acc = logs.get("val_accuracy", logs.get("val_sparse_categorical_accuracy"))
        self.clock.epoch_end(epoch, logs["loss"], acc, logs["val_loss"], val_acc)


class KerasEngine(Engine):
    name = "keras"
    weights_suffix = ".weights.h5"

    def __init__(self, config: TrainConfig):
        super().__init__(config)
        # The BatchNorm pass (batchnorm_moments): a model with every BatchNorm's input as
        # an output, made on its first use, after training.
        self._bn_inputs = None

    def versions(self) -> dict:
        return {"keras": keras.__version__, "tensorflow": tf.__version__}

    def _build_model(self, weights):
        """Built under the run's dtype policy (mixed_bfloat16 for bf16: Keras reads the
        policy when it creates the layers), with its XLA setting (`predict` reads it; left
        unset, Keras turns XLA on where there is a GPU, whatever the run says), dropout off
        when the run says so."""
        tf_precision(self.config)
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
        """What both TensorFlow engines do first: the plan, the precision, the seed."""
        self._check_dataset(dataset)
        plan = make_plan(dataset, self.config)
        notes = [tf_precision(self.config)]
        keras.utils.set_random_seed(self.config.seed)  # dropout masks
        return plan, notes

    def train(self, dataset, on_event=null_callback) -> dict:
        plan, notes = self._start_training(dataset)
        config = self.config
        self.model.compile(optimizer=make_optimizer(config, TableSchedule(plan.lr)),
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                           metrics=["accuracy"], jit_compile=config.compile)
        train_ds, class_weight, pipeline = self._fit_inputs(dataset, plan)
        clock = TrainClock(plan, on_event)
        self.model.fit(train_ds, epochs=config.epochs, steps_per_epoch=plan.steps_per_epoch,
                       validation_data=eval_dataset(dataset.val.x, dataset.val.y, config.batch_size),
                       class_weight=class_weight, shuffle=False, verbose=0,
                       callbacks=[_ClockCallback(clock)])
        notes.append(f"compile: jit_compile={config.compile} (XLA)" if config.compile
                     else "compile: jit_compile=False (tf.function graph)")
        return clock.result(pipeline, notes)

    def _fit_inputs(self, dataset, plan: TrainPlan):
        """(the training batches for fit, its class_weight, the pipeline's note)."""
        device = self.config.pipeline == "device"
        train_ds = ordered_train_dataset(dataset, plan, prenormalized=device)
        class_weight = None
        if self.config.class_weights:
            w = data_order.class_weights(dataset.train.y, dataset.num_classes)
            class_weight = {i: float(v) for i, v in enumerate(w)}
        if device:
            # model.fit takes its batches from tf.data, so the split cannot stay in device
            # memory as in the other engines; the nearest Keras form: normalized once,
            # batches gathered by index, no per-batch conversion.
            return train_ds, class_weight, ("device (Keras form): tf.data gathering batches from the split "
                                            "normalized once in memory; model.fit cannot train from device memory")
        return train_ds, class_weight, "idiomatic: tf.data (gather, normalize, prefetch AUTOTUNE)"

    def predict_logits(self, x_uint8: np.ndarray, batch_size: int = 256) -> np.ndarray:
        self._require_model()
        out = self.model.predict(data_order.to_unit_float(x_uint8), batch_size=batch_size,
                                 verbose=0)
        return np.asarray(out, dtype=np.float32)

    def batchnorm_moments(self, x_uint8: np.ndarray) -> dict:
        """Keras has no per-layer training mode: the model that returns each BatchNorm's
        input is called with training=True, its dropout rates set to 0 for the call."""
        self._require_model()
        if self._bn_inputs is None:
            names = [layer.name for layer in self.model._flatten_layers(include_self=False, recursive=True)
                     if isinstance(layer, keras.layers.BatchNormalization)]
            outputs = [self.model.get_layer(name).input for name in names]
            self._bn_inputs = (names, keras.Model(self.model.input, outputs))
        names, probe = self._bn_inputs
        rates = _dropout_rates(self.model)
        disable_dropout(self.model)
        try:
            inputs = probe(data_order.to_unit_float(x_uint8), training=True)
        finally:
            for layer, rate in rates.items():
                layer.rate = rate
        out = {}
        for name, x in zip(names, inputs if isinstance(inputs, (list, tuple)) else [inputs]):
            x = keras.ops.cast(x, "float32")
            axes = tuple(range(len(x.shape) - 1))
            count = int(np.prod(x.shape[:-1]))
            out[name] = (np.asarray(keras.ops.mean(x, axis=axes), np.float64),
                         np.asarray(keras.ops.var(x, axis=axes), np.float64), count)
        return out

    # -- inference timing (the TensorFlow engine inherits these) ----------------------------
    def inference_fn(self):
        # The model called in a tf.function, XLA-compiled when the run compiles: what
        # model.predict runs per batch, without its per-call tf.data and callback work.
        self._require_model()
        model = self.model
        return tf.function(lambda x: tf.cast(model(x, training=False), tf.float32),
                           jit_compile=self.config.compile)

    def _device_batch(self, x_float_nhwc: np.ndarray):
        device = "/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0"
        with tf.device(device):
            return tf.identity(tf.constant(x_float_nhwc, dtype=tf.float32))

    def sync(self, outputs) -> None:
        # Materializing the (small) logits waits for the device to finish computing them.
        outputs.numpy()

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
