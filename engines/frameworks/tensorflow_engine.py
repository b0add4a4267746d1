"""Low-level TensorFlow: a tf.function training step with GradientTape.

The CNN-variance paper compares this style with Keras's fit on the same network, so the
model is the Keras-built one (used as a layer container) and everything else is written
by hand: the step, the loss, the batches, the checkpoint. The epochs, the clock and
validation come from the shared loop (engines.training.loop).
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from engines.frameworks.keras_engine import (
    KerasEngine,
    TableSchedule,
    eval_dataset,
    make_optimizer,
    ordered_train_dataset,
)
from engines.training import plan as data_order
from engines.training.config import TrainConfig
from engines.training.engine import WeightsError
from engines.training.events import null_callback
from engines.training.loop import StepFunctions, TrainPlan, train_loop


class TensorFlowEngine(KerasEngine):
    name = "tensorflow"
    weights_suffix = ".ckpt"

    def __init__(self, config: TrainConfig):
        super().__init__(config)
        # The model in inference mode in a tf.function (XLA when the run compiles), as
        # validation and evaluation call it; made with the model (build).
        self._eval_step = None

    def versions(self) -> dict:
        import keras

        return {"tensorflow": tf.__version__, "keras": keras.__version__}

    def _build_model(self, weights):
        model = super()._build_model(weights)
        self._eval_step = tf.function(lambda x: tf.cast(model(x, training=False), tf.float32),
                                      jit_compile=self.config.compile)
        return model

    def train(self, dataset, on_event=null_callback) -> dict:
        plan, notes = self._start_training(dataset)
        step, batches, pipeline = self._step_and_batches(self._update_fn(plan), dataset, plan)
        clock = train_loop(plan, dataset, StepFunctions(batches, step, self.predict_logits), on_event)
        notes.append(f"compile: tf.function(jit_compile={self.config.compile})")
        return clock.result(pipeline, notes)

    def _update_fn(self, plan: TrainPlan):
        """One optimizer update, (x, y, w) -> (loss, correct); traced inside the step."""
        model = self.model
        opt = make_optimizer(self.config, TableSchedule(plan.lr))
        opt.build(model.trainable_variables)

        def update(x, y, w):
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=y, logits=tf.cast(logits, tf.float32))
                loss = tf.reduce_mean(per_example * w)  # mean of weighted losses
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1), y), tf.int64))
            return loss, correct
        return update

    def _step_and_batches(self, update, dataset, plan: TrainPlan):
        """(the compiled step, epoch -> its batches' step arguments, the pipeline's note)."""
        compiled = tf.function(jit_compile=self.config.compile)
        if self.config.pipeline == "device":
            device = "/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0"
            with tf.device(device):
                xd = tf.constant(dataset.train.x)
                yd = tf.constant(dataset.train.y.astype(np.int64))
                wd = tf.constant(plan.sample_weight)

            def gather_and_update(idx):
                x = tf.cast(tf.gather(xd, idx), tf.float32) / 255.0
                return update(x, tf.gather(yd, idx), tf.gather(wd, idx))

            def batches(epoch):
                for b in plan.batches(epoch):
                    yield (tf.constant(b),)
            return (compiled(gather_and_update), batches,
                    f"device: whole split as uint8 on {device}, batches gathered in the step")
        it = iter(ordered_train_dataset(dataset, plan, prenormalized=False))
        k = dataset.num_classes
        cw = tf.constant(data_order.class_weights(dataset.train.y, k) if self.config.class_weights
                         else np.ones(k, np.float32))

        def weighted_update(x, y):
            return update(x, y, tf.gather(cw, y))

        def batches(epoch):
            for _ in range(plan.steps_per_epoch):
                yield next(it)
        return compiled(weighted_update), batches, "idiomatic: tf.data (gather, normalize, prefetch AUTOTUNE)"

    def predict_logits(self, x_uint8: np.ndarray, batch_size: int = 256) -> np.ndarray:
        self._require_model()
        out = [self._eval_step(x) for x, _ in eval_dataset(x_uint8, np.zeros(len(x_uint8)), batch_size)]
        return np.concatenate([o.numpy() for o in out]) if out else \
            np.zeros((0, self.num_classes), np.float32)

    def save(self, path: str) -> str:
        self._require_model()
        path = self.weights_path(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        # TensorFlow's own format: an object-based checkpoint of the model's variables.
        tf.train.Checkpoint(model=self.model).write(path)
        return path

    def load(self, path: str) -> None:
        self._require_model()
        path = self.weights_path(path)
        if not tf.io.gfile.exists(path + ".index"):
            raise WeightsError(f"no TensorFlow checkpoint at {path}")
        try:
            status = tf.train.Checkpoint(model=self.model).read(path)
            status.assert_existing_objects_matched()
        except Exception as e:  # noqa: BLE001 - unreadable or mismatched checkpoint
            raise WeightsError(f"cached TensorFlow checkpoint at {path} does not load into "
                               f"{self.architecture}: {str(e).splitlines()[0]}") from None
