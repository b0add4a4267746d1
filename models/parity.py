"""The check that proves an architecture is the same function in every framework.

Canonical weights drawn once are loaded into each framework's build; in inference mode
and fp32 the logits on one random batch must agree.  Running statistics are moved away
from 0/1 and arrays that start at zero (ViT's head, biases) are filled, so that every
array's placement and the inference-mode normalization are exercised, not just the
initial state.
"""
from __future__ import annotations

import numpy as np

from .api import build_model, infer, init_weights

# Each architecture at the smallest input that exercises every layer (odd sizes inside the
# networks, so 'same' padding at stride 2 is tested).
PARITY_INPUTS = {
    "pathmnist_cnn": (28, 3, 9),
    "blood_resnet": (28, 3, 8),
    "fan_arch1": (28, 1, 10),
    "fan_arch2": (28, 1, 10),
    "cifar_cnn": (32, 3, 10),
    "resnet50": (64, 3, 7),  # 64 -> 32 -> 16 -> 8 -> 4 -> 2
    "mobilenet_v3_small": (48, 3, 5),  # 48 -> 24 -> 12 -> 6 -> 3 -> 2
    "efficientnet_b0": (48, 3, 5),
    "vit_b_16": (32, 3, 6),
}


def parity_weights(arch: str, resolution: int, channels: int, num_classes: int,
                   seed: int = 7) -> dict[str, np.ndarray]:
    weights = init_weights(arch, resolution=resolution, channels=channels,
                           num_classes=num_classes, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for k, v in weights.items():
        if k.endswith("/mean"):
            weights[k] = rng.normal(0, 0.1, v.shape).astype(np.float32)
        elif k.endswith("/var"):
            weights[k] = rng.uniform(0.5, 1.5, v.shape).astype(np.float32)
        elif not v.any():
            weights[k] = rng.normal(0, 0.05, v.shape).astype(np.float32)
    return weights


def parity_logits(arch: str, framework: str, *, resolution: int | None = None, channels: int | None = None,
                  num_classes: int | None = None, batch: int = 3, seed: int = 7) -> np.ndarray:
    """The framework's logits for the architecture under the parity weights, on one random
    batch (inference mode, fp32): what every framework must agree on, of shape (batch,
    classes) or an AssertionError. The input defaults to the architecture's PARITY_INPUTS."""
    res, ch, k = PARITY_INPUTS[arch]
    res, ch, k = resolution or res, channels or ch, num_classes or k
    weights = parity_weights(arch, res, ch, k, seed)
    x = np.random.default_rng(seed).random((batch, res, res, ch), dtype=np.float32)
    logits = infer(framework, build_model(arch, framework, resolution=res, channels=ch, num_classes=k,
                                          weights=weights), x)
    if logits.shape != (batch, k):
        raise AssertionError(f"{arch} in {framework}: logits of shape {logits.shape}, not {(batch, k)}")
    return logits


def relative_differences(logits: dict[str, np.ndarray]) -> dict[str, float]:
    """framework -> max |logits - reference| / max |reference|, the reference being the
    first framework's logits (0.0 for itself). Logits of another shape than the
    reference's, or a reference of zeros, are an AssertionError."""
    first, ref = next(iter(logits.items()))
    ref = np.asarray(ref)
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    if ref.ndim != 2 or scale == 0.0:
        raise AssertionError(f"{first}'s reference logits of shape {ref.shape}, max {scale}")
    shapes = {fw: np.shape(y) for fw, y in logits.items() if np.shape(y) != ref.shape}
    if shapes:
        raise AssertionError(f"logits of shape {shapes}, where {first}'s are {ref.shape}")
    return {fw: float(np.abs(np.asarray(y) - ref).max() / scale) for fw, y in logits.items()}


def max_relative_differences(arch: str, frameworks, **inputs) -> dict[str, float]:
    """relative_differences of the frameworks' parity_logits (`inputs`: its keywords)."""
    return relative_differences({fw: parity_logits(arch, fw, **inputs) for fw in frameworks})
