"""Keras 3 on TensorFlow: model.compile / model.fit with callbacks, as Keras users write it.

The fit loop, the model's settings and the weights file are the backend-neutral Keras
engine's (keras_base); TensorFlow adds its own input pipeline (tf.data: the planned
order gathered, normalized and prefetched, fit's shuffling off), its TF32 switch, and an
inference function compiled by tf.function (XLA when the run compiles). Toggles:
jit_compile (XLA), mixed-precision policy (bf16), TF32.
"""
from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from engines.frameworks.keras_base import (  # noqa: F401 - the TensorFlow engine imports these from here
    Keras3Engine,
    TableSchedule,
    make_optimizer,
    require_backend,
)
from engines.training import plan as data_order
from engines.training.config import TrainConfig
from engines.training.loop import TrainPlan

require_backend("tensorflow", "keras")


def tf_precision(config: TrainConfig) -> str:
    p = config.precision
    if p == "default":
        return "default (TensorFlow: TF32 on where the GPU has it)"
    tf.config.experimental.enable_tensor_float_32_execution(p == "tf32")
    return {"fp32": "fp32 (TF32 off)", "tf32": "tf32 (TF32 on)",
            "bf16": "bf16: Keras mixed_bfloat16 policy (fp32 variables), TF32 off"}[p]


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


class KerasEngine(Keras3Engine):
    name = "keras"
    backend = "tensorflow"

    def _backend_versions(self) -> dict:
        return {"tensorflow": tf.__version__}

    def _precision(self) -> str:
        return tf_precision(self.config)

    def _compile_note(self) -> str:
        return ("compile: jit_compile=True (XLA)" if self.config.compile
                else "compile: jit_compile=False (tf.function graph)")

    def _validation_batch_size(self) -> None:
        return None  # the validation tf.data is batched already

    def _fit_inputs(self, dataset, plan: TrainPlan):
        """(the training batches for fit, the validation data, the pipeline's note)."""
        device = self.config.pipeline == "device"
        train_ds = ordered_train_dataset(dataset, plan, prenormalized=device)
        validation = eval_dataset(dataset.val.x, dataset.val.y, self.config.batch_size)
        if device:
            # model.fit takes its batches from tf.data, so the split cannot stay in device
            # memory as in the other engines; the nearest Keras form: normalized once,
            # batches gathered by index, no per-batch conversion.
            return train_ds, validation, ("device (Keras form): tf.data gathering batches from the split "
                                          "normalized once in memory; model.fit cannot train from device memory")
        return train_ds, validation, "idiomatic: tf.data (gather, normalize, prefetch AUTOTUNE)"

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
