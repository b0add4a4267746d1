"""Keras 3 on the PyTorch backend: the same model.fit as Keras on TensorFlow, run by PyTorch.

Keras's PyTorch trainer runs its train step eagerly, or under torch.compile (inductor)
when jit_compile is on: the same compiler the PyTorch engine's compile toggle uses. The
input pipeline is the backend-neutral Keras one (a keras.utils.PyDataset in the shared
order); inference is timed by calling the model under torch.no_grad, compiled as the run
says. Toggles: jit_compile (torch.compile), mixed-precision policy (bf16), TF32 and cuDNN
benchmark (PyTorch's process-wide switches, set as the PyTorch engine sets them).
"""
from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np
import torch

from engines.frameworks.keras_base import Keras3Engine, require_backend
from engines.frameworks.torch_engine import set_process_switches

require_backend("torch", "keras-torch")

PRECISION_NOTES = {
    "default": "default (PyTorch: TF32 convolutions on, TF32 matmul off)",
    "fp32": "fp32 (TF32 off)",
    "tf32": "tf32 (TF32 on for matmul and convolutions)",
    "bf16": "bf16: Keras mixed_bfloat16 policy (fp32 variables), TF32 off",
}


class KerasTorchEngine(Keras3Engine):
    name = "keras-torch"
    backend = "torch"

    def _backend_versions(self) -> dict:
        return {"torch": torch.__version__, "cuda": torch.version.cuda}

    def _precision(self) -> str:
        set_process_switches(self.config)
        return PRECISION_NOTES[self.config.precision]

    def _compile_note(self) -> str:
        return ("compile: jit_compile=True (Keras's train step under torch.compile, inductor)"
                if self.config.compile else "compile: jit_compile=False (Keras on PyTorch, eager)")

    # -- inference timing -------------------------------------------------------------------
    def inference_fn(self):
        self._require_model()
        model = self.model

        def forward(x):
            with torch.no_grad():
                return model(x, training=False).float()

        return torch.compile(forward) if self.config.compile else forward

    def _device_batch(self, x_float_nhwc: np.ndarray):
        # Keras places tensors on its backend's device (the GPU when PyTorch sees one).
        return keras.ops.convert_to_tensor(np.asarray(x_float_nhwc, dtype=np.float32))

    def sync(self, outputs) -> None:
        if outputs.is_cuda:
            torch.cuda.synchronize(outputs.device)
