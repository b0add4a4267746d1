"""Keras 3 on the JAX backend: the same model.fit as Keras on TensorFlow, traced by JAX.

Keras's JAX trainer compiles its train step with jax.jit when jit_compile is on (XLA, as
the JAX/Flax engine's step is); without it every op is dispatched eagerly, as JAX is
without jit. The input pipeline is the backend-neutral Keras one (a keras.utils.PyDataset
in the shared order); inference is timed through model.stateless_call under jax.jit, the
pure function Keras's own predict step compiles. Toggles: jit_compile, mixed-precision
policy (bf16), matmul precision (JAX's process-wide default, as the worker sets it).
"""
from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import jax.numpy as jnp
import numpy as np

from engines.frameworks.keras_base import Keras3Engine, require_backend

require_backend("jax", "keras-jax")

PRECISION_NOTES = {
    "default": "default (JAX: TF32 matmuls where the GPU has them)",
    "fp32": "fp32 (JAX matmul precision float32)",
    "tf32": "tf32 (JAX matmul precision tensorfloat32)",
    "bf16": "bf16: Keras mixed_bfloat16 policy (fp32 variables), matmul precision float32",
}


class KerasJaxEngine(Keras3Engine):
    name = "keras-jax"
    backend = "jax"

    def _backend_versions(self) -> dict:
        from importlib.metadata import version

        return {"jax": jax.__version__, "jaxlib": version("jaxlib")}

    def _precision(self) -> str:
        # Keras traces its steps with JAX's default matmul precision: a process-wide
        # setting here, as TF32 is for TensorFlow (the worker also sets it in the
        # environment, JAX_DEFAULT_MATMUL_PRECISION, before JAX starts).
        p = self.config.precision
        if p != "default":
            jax.config.update("jax_default_matmul_precision", "tensorfloat32" if p == "tf32" else "float32")
        return PRECISION_NOTES[p]

    def _compile_note(self) -> str:
        return ("compile: jit_compile=True (Keras's train step under jax.jit, XLA)" if self.config.compile
                else "compile: jit_compile=False (Keras on JAX op by op, eager)")

    # -- inference timing -------------------------------------------------------------------
    def inference_fn(self):
        # Keras's stateless call, the pure function its JAX predict step jits, over the
        # model's current variables.
        self._require_model()
        model = self.model
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        def forward(trainable, non_trainable, x):
            logits, _ = model.stateless_call(trainable, non_trainable, x, training=False)
            return logits.astype(jnp.float32)

        f = jax.jit(forward) if self.config.compile else forward
        return lambda x: f(trainable, non_trainable, x)

    def _batchnorm_forward(self, probe):
        # Eager Keras on JAX compiles each op for its shapes on first use: EfficientNet-B0's
        # first pass took 27.6 s on a 2-core CPU (0.45 s after). Under jax.jit, as the run
        # compiles, it is one compile. The stateless call leaves the model's moving
        # statistics as they are (the pass replaces them); the variables are read on each
        # call, so the pass sees the weights of the moment. Dropout is off while it traces.
        if not self.config.compile:
            return super()._batchnorm_forward(probe)

        @jax.jit
        def forward(trainable, non_trainable, x):
            return probe.stateless_call(trainable, non_trainable, x, training=True)[0]

        return lambda x: forward([v.value for v in probe.trainable_variables],
                                 [v.value for v in probe.non_trainable_variables], x)

    def _device_batch(self, x_float_nhwc: np.ndarray):
        return jax.device_put(jnp.asarray(x_float_nhwc, dtype=jnp.float32))

    def sync(self, outputs) -> None:
        # JAX dispatches asynchronously, on the CPU too.
        jax.block_until_ready(outputs)
