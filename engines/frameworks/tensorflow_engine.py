"""Low-level TensorFlow: a tf.function training step with GradientTape.

The CNN-variance paper compares this style with Keras's fit on the same network, so the
model is the Keras-built one (used as a layer container) and everything else is written
by hand: the step, the loss, the loop, the validation, the checkpoint.
"""
from __future__ import annotations

import os
import time

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
from engines.training.engine import FIRST_LOSSES, WeightsError
from engines.training.events import null_callback


class TensorFlowEngine(KerasEngine):
    name = "tensorflow"
    model_framework = "keras"
    weights_suffix = ".ckpt"

    def versions(self) -> dict:
        import keras

        return {"tensorflow": tf.__version__, "keras": keras.__version__}

    def train(self, dataset, config: TrainConfig, on_event=null_callback) -> dict:
        plan, notes, clock = self._prepare(dataset, config, on_event)
        model = self.model
        opt = make_optimizer(config, TableSchedule(plan.lr))
        opt.build(model.trainable_variables)
        jit = bool(config.compile)

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

        if config.pipeline == "device":
            device = "/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0"
            with tf.device(device):
                xd = tf.constant(dataset.train.x)
                yd = tf.constant(dataset.train.y.astype(np.int64))
                wd = tf.constant(plan.sample_weight)
            pipeline = f"device: whole split as uint8 on {device}, batches gathered in the step"

            @tf.function(jit_compile=jit)
            def train_step(idx):
                x = tf.cast(tf.gather(xd, idx), tf.float32) / 255.0
                return update(x, tf.gather(yd, idx), tf.gather(wd, idx))

            def batches(epoch):
                for b in plan.batches(epoch):
                    yield (tf.constant(b),)
        else:
            pipeline = "idiomatic: tf.data (gather, normalize, prefetch AUTOTUNE)"
            ds = ordered_train_dataset(dataset, plan, prenormalized=False)
            it = iter(ds)
            k = dataset.num_classes
            cw = tf.constant(data_order.class_weights(dataset.train.y, k) if config.class_weights
                             else np.ones(k, np.float32))

            @tf.function(jit_compile=jit)
            def train_step(x, y):
                return update(x, y, tf.gather(cw, y))

            def batches(epoch):
                for _ in range(plan.steps_per_epoch):
                    yield next(it)

        @tf.function(jit_compile=jit)
        def eval_step(x):
            return tf.cast(model(x, training=False), tf.float32)

        self._eval_step = eval_step
        log_every = config.log_every_steps
        for epoch in range(config.epochs):
            clock.epoch_start(epoch)
            loss_sum = tf.zeros((), tf.float32)
            correct = tf.zeros((), tf.int64)
            for step, args in enumerate(batches(epoch)):
                first = epoch == 0 and step == 0
                t0 = time.perf_counter()
                loss, c = train_step(*args)
                loss_sum += loss
                correct += c
                if first:
                    loss.numpy()  # waits for the device
                    clock.first_step_done(time.perf_counter() - t0)
                if first or (epoch == 0 and step < FIRST_LOSSES) or (step + 1) % log_every == 0:
                    clock.step(epoch, step, float(loss))
            n = plan.steps_per_epoch
            train_loss = float(loss_sum) / n
            train_acc = int(correct) / (n * config.batch_size)
            self._validate_and_end_epoch(clock, dataset, config, epoch, train_loss, train_acc)
        notes.append(f"compile: tf.function(jit_compile={jit})")
        return clock.result(pipeline, notes)

    def predict_logits(self, x_uint8: np.ndarray, batch_size: int = 256) -> np.ndarray:
        self._require_model()
        step = getattr(self, "_eval_step", None)
        if step is None:
            model = self.model
            jit = bool(self._config.compile) if self._config else True
            step = self._eval_step = tf.function(
                lambda x: tf.cast(model(x, training=False), tf.float32), jit_compile=jit)
        out = [step(x) for x, _ in eval_dataset(x_uint8, np.zeros(len(x_uint8)), batch_size)]
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
        self._eval_step = None
