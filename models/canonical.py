"""Framework-neutral ("canonical") weights: one numpy array per key of the IR.

Layouts, which every builder converts to and from:

* convolution kernel ``(kh, kw, in/groups, out)`` (HWIO; depthwise: ``(kh, kw, 1, C)``)
* dense kernel ``(in, out)``; attention query/key/value/out kernels ``(D_in, D_out)``
  with the output axis ordered head-major (head * head_dim + i), as PyTorch packs it
* BatchNorm ``scale, bias, mean, var``; LayerNorm ``scale, bias``
* class token ``(1, 1, D)``; position embedding ``(1, L, D)``
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

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


# --- where each canonical array lives in a built model ---------------------------------
# The three builders differ only in how they find an array in their model and how its
# layout differs from the canonical one; each describes that as a `Slot` per canonical key
# (`builder.slots(model)`), and loading, extracting and checking are written once, here.

def identity(a: np.ndarray) -> np.ndarray:
    return a


@dataclass(frozen=True)
class Slot:
    """One canonical array's place in a built model.

    ``read`` returns the framework's array (its own layout) as numpy, ``write`` stores a
    float32 numpy array of ``shape`` there; ``to_framework``/``to_canonical`` convert
    between the canonical layout and the framework's (a transpose, a reshape of heads).
    """

    shape: tuple[int, ...]
    read: Callable[[], np.ndarray]
    write: Callable[[np.ndarray], None]
    to_framework: Callable[[np.ndarray], np.ndarray] = identity
    to_canonical: Callable[[np.ndarray], np.ndarray] = identity


def load(slots: Mapping[str, Slot], weights: Mapping[str, np.ndarray]) -> None:
    """Writes every array of ``weights`` into its slot (a subset of the slots is fine)."""
    for key, value in weights.items():
        if key not in slots:
            raise KeyError(f"the model has no array {key!r} (layer {key.partition('/')[0]!r})")
        slot = slots[key]
        array = slot.to_framework(np.asarray(value, dtype=np.float32))
        if tuple(slot.shape) != array.shape:
            raise ValueError(f"weights[{key!r}]: shape {array.shape} does not fit {tuple(slot.shape)}")
        slot.write(np.ascontiguousarray(array))


def extract(slots: Mapping[str, Slot]) -> dict[str, np.ndarray]:
    """Every slot's array, in the canonical layout, as float32 numpy: a copy, never a view
    (a CPU PyTorch tensor's numpy() shares its memory, so weights taken at one epoch would
    otherwise change as training goes on)."""
    return {key: np.array(slot.to_canonical(np.asarray(slot.read(), dtype=np.float32)),
                          dtype=np.float32, order="C", copy=True)
            for key, slot in slots.items()}


def check_keys(slots: Mapping[str, Slot], weights: Mapping[str, np.ndarray]) -> None:
    """ValueError unless ``weights`` names exactly the model's arrays."""
    missing, extra = sorted(set(slots) - set(weights)), sorted(set(weights) - set(slots))
    if missing or extra:
        raise ValueError(f"weights do not match the model: missing {missing[:5]}, "
                         f"unexpected {extra[:5]}")


def prefixed(prefix: str, slots: Mapping[str, Slot]) -> dict[str, Slot]:
    """The slots of a sub-layer under ``prefix/`` (an encoder block's ``ln_1/scale``...)."""
    return {f"{prefix}/{key}": slot for key, slot in slots.items()}


def reshaped(shape: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda a: a.reshape(shape)


def attention_slots(projections: Mapping[str, tuple], slot: Callable) -> dict[str, Slot]:
    """Query, key, value and output projections of a multi-head attention whose framework
    keeps the heads as axes of their own (Keras and Flax: kernels (D, heads, head_dim) and
    (heads, head_dim, D), biases (heads, head_dim) and (D,)); canonical kernels are 2-D
    (D_in, D_out), head-major, biases 1-D.

    ``projections``: "query"|"key"|"value"|"out" -> (kernel variable, bias variable);
    ``slot(variable, to_framework, to_canonical)`` makes the framework's Slot.
    """
    out = {}
    for proj, (kernel, bias) in projections.items():
        k_shape, b_shape = tuple(kernel.shape), tuple(bias.shape)
        d_in = k_shape[0] * k_shape[1] if proj == "out" else k_shape[0]
        out[f"attention/{proj}/kernel"] = slot(kernel, reshaped(k_shape), reshaped((d_in, -1)))
        out[f"attention/{proj}/bias"] = slot(bias, reshaped(b_shape), reshaped((-1,)))
    return out


def handler(table: Mapping[type, Callable], obj, what: str) -> Callable:
    """The entry of ``table`` for ``obj``'s class or its nearest base class: how a builder
    maps IR nodes to its layers, and its layers to their slots."""
    for cls in type(obj).__mro__:
        if cls in table:
            return table[cls]
    raise TypeError(f"no {what} for {type(obj).__name__}: {obj!r}")
