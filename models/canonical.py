"""Framework-neutral ("canonical") weights: one numpy array per key of the IR.

Layouts, which every builder converts to and from:

* convolution kernel ``(kh, kw, in/groups, out)`` (HWIO; depthwise: ``(kh, kw, 1, C)``)
* dense kernel ``(in, out)``; attention query/key/value/out kernels ``(D_in, D_out)``
  with the output axis ordered head-major (head * head_dim + i), as PyTorch packs it
* BatchNorm ``scale, bias, mean, var``; LayerNorm ``scale, bias``
* class token ``(1, 1, D)``; position embedding ``(1, L, D)``
"""

from __future__ import annotations

import numpy as np

from .graph import ParamSpec


def _truncated_normal(rng: np.random.Generator, shape, std: float) -> np.ndarray:
    # Resampling keeps the exact truncated distribution (cut at ±2 std), as Keras does.
    out = rng.standard_normal(shape, dtype=np.float32)
    bad = np.abs(out) > 2.0
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()), dtype=np.float32)
        bad = np.abs(out) > 2.0
    return out * np.float32(std)


def draw(specs: list[ParamSpec], seed: int) -> dict[str, np.ndarray]:
    """Draws every array in spec order from one numpy generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    weights = {}
    for spec in specs:
        kind, scale = spec.init
        if kind == "zeros":
            arr = np.zeros(spec.shape, np.float32)
        elif kind == "ones":
            arr = np.ones(spec.shape, np.float32)
        elif kind == "normal":
            arr = rng.standard_normal(spec.shape, dtype=np.float32) * np.float32(scale)
        elif kind == "truncated_normal":
            arr = _truncated_normal(rng, spec.shape, scale)
        elif kind == "uniform":
            arr = rng.uniform(-scale, scale, spec.shape).astype(np.float32)
        else:
            raise ValueError(f"unknown initializer {kind!r} for {spec.key}")
        weights[spec.key] = arr
    return weights


def check(specs: list[ParamSpec], weights: dict) -> None:
    """Raises ValueError unless ``weights`` has exactly the keys and shapes of ``specs``."""
    expected = {s.key: s.shape for s in specs}
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        raise ValueError(f"weights do not match the architecture: missing {missing[:5]}, "
                         f"unexpected {extra[:5]}")
    for key, shape in expected.items():
        if tuple(np.shape(weights[key])) != tuple(shape):
            raise ValueError(f"weights[{key!r}] has shape {np.shape(weights[key])}, "
                             f"expected {tuple(shape)}")
