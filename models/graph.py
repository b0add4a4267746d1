"""Shape inference, padding resolution, parameter lists and FLOPs, from the IR alone.

Nothing here imports a framework: the registry, the UI and the CLI count parameters and
FLOPs with these functions, and the builders use the same shape walk so that the three
frameworks are built from exactly the numbers reported.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

from .ir import (
    Activation,
    BatchNorm,
    ClassToken,
    Conv,
    Dense,
    Dropout,
    EncoderBlock,
    Flatten,
    GlobalPool,
    Init,
    LayerNorm,
    MaxPool,
    PositionEmbedding,
    Residual,
    SqueezeExcite,
    TakeToken,
    Tokens,
)

Shape = tuple[int, ...]


class ShapeError(ValueError):
    """The input is too small (or of the wrong form) for a layer of the architecture."""


@dataclass(frozen=True)
class ParamSpec:
    """One array of the canonical weights.

    ``init`` is resolved: ("zeros"|"ones", 0) | ("normal", std) | ("uniform", bound) |
    ("truncated_normal", std of the untruncated normal, cut at ±2 std).
    ``trainable`` is False only for BatchNorm running statistics.
    """

    key: str
    shape: Shape
    init: tuple[str, float]
    trainable: bool = True

    @property
    def size(self) -> int:
        return math.prod(self.shape)


# --- padding ------------------------------------------------------------------------

def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME rule: output ceil(size/stride), the odd pixel padded at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return (total // 2, total - total // 2)


def _explicit(padding, shape: Shape, kernel, stride):
    if padding == "valid":
        return ((0, 0), (0, 0))
    if padding == "same":
        return (same_padding(shape[0], kernel[0], stride[0]),
                same_padding(shape[1], kernel[1], stride[1]))
    (top, bottom), (left, right) = padding
    return ((int(top), int(bottom)), (int(left), int(right)))


def _window_out(shape: Shape, kernel, stride, padding, what: str) -> tuple[int, int]:
    out = []
    for size, k, s, (lo, hi) in zip(shape[:2], kernel, stride, padding):
        n = (size + lo + hi - k) // s + 1
        if size + lo + hi < k or n < 1:
            raise ShapeError(f"{what}: a {shape[0]}x{shape[1]} input is smaller than its "
                             f"{kernel[0]}x{kernel[1]} window")
        out.append(n)
    return out[0], out[1]


def _need_rank(node, shape: Shape, rank: int):
    if len(shape) != rank:
        raise ShapeError(f"{type(node).__name__} needs a rank-{rank} input, got {shape}")


# --- the walk -------------------------------------------------------------------------

def out_shape(node, shape: Shape) -> Shape:
    """Output shape (no batch axis) of a *resolved* node for an input of ``shape``."""
    if isinstance(node, Conv):
        _need_rank(node, shape, 3)
        if node.groups != 1 and not (node.groups == shape[2] == node.filters):
            raise ShapeError(f"{node.name}: only groups=1 or depthwise convolutions are "
                             f"supported (groups={node.groups}, in={shape[2]})")
        h, w = _window_out(shape, node.kernel, node.stride, node.padding, node.name)
        return (h, w, node.filters)
    if isinstance(node, MaxPool):
        _need_rank(node, shape, 3)
        for (lo, hi), k in zip(node.padding, node.kernel):
            if max(lo, hi) >= k:
                raise ShapeError("max pooling padding must be smaller than its window")
        h, w = _window_out(shape, node.kernel, node.stride, node.padding, "max pooling")
        return (h, w, shape[2])
    if isinstance(node, (BatchNorm, Activation, Dropout, LayerNorm, PositionEmbedding)):
        return shape
    if isinstance(node, SqueezeExcite):
        _need_rank(node, shape, 3)
        return shape
    if isinstance(node, GlobalPool):
        _need_rank(node, shape, 3)
        return (shape[2],)
    if isinstance(node, Residual):
        body = shape
        for child in node.body:
            body = out_shape(child, body)
        short = shape
        for child in node.shortcut:
            short = out_shape(child, short)
        if body != short:
            raise ShapeError(f"residual branch shapes differ: {body} vs {short}")
        return body
    if isinstance(node, Flatten):
        return (math.prod(shape),)
    if isinstance(node, Dense):
        return shape[:-1] + (node.units,)
    if isinstance(node, Tokens):
        _need_rank(node, shape, 3)
        return (shape[0] * shape[1], shape[2])
    if isinstance(node, ClassToken):
        _need_rank(node, shape, 2)
        return (shape[0] + 1, shape[1])
    if isinstance(node, EncoderBlock):
        _need_rank(node, shape, 2)
        if shape[1] % node.heads:
            raise ShapeError(f"{node.name}: width {shape[1]} not divisible by {node.heads} heads")
        return shape
    if isinstance(node, TakeToken):
        _need_rank(node, shape, 2)
        return (shape[1],)
    raise TypeError(f"unknown IR node {node!r}")


def resolve(nodes, shape: Shape) -> tuple[tuple, Shape]:
    """Explicit paddings for this input size; returns (resolved nodes, output shape).

    Raises :class:`ShapeError` when the input does not fit.
    """
    resolved = []
    for node in nodes:
        if isinstance(node, (Conv, MaxPool)):
            node = replace(node, padding=_explicit(node.padding, shape, node.kernel, node.stride))
        elif isinstance(node, Residual):
            body, b_shape = resolve(node.body, shape)
            short, _ = resolve(node.shortcut, shape)
            node = replace(node, body=body, shortcut=short)
        elif isinstance(node, SqueezeExcite):
            c = shape[2]
            red, _ = resolve((node.reduce,), (1, 1, c))
            exp, _ = resolve((node.expand,), (1, 1, node.reduce.filters))
            node = replace(node, reduce=red[0], expand=exp[0])
        shape = out_shape(node, shape)
        resolved.append(node)
    return tuple(resolved), shape


def walk(nodes, shape: Shape) -> Iterator[tuple[object, Shape, Shape]]:
    """(node, input shape, output shape) for every node, depth first (residual children
    before the residual itself is closed)."""
    for node in nodes:
        if isinstance(node, Residual):
            yield from walk(node.body, shape)
            yield from walk(node.shortcut, shape)
        elif isinstance(node, SqueezeExcite):
            c = shape[2]
            yield node.reduce, (1, 1, c), (1, 1, node.reduce.filters)
            yield node.expand, (1, 1, node.reduce.filters), (1, 1, c)
        new = out_shape(node, shape)
        yield node, shape, new
        shape = new


# --- initializers ---------------------------------------------------------------------

_TRUNC_STD_CORRECTION = 0.87962566103423978  # std of N(0,1) truncated at ±2


def resolve_init(init: Init, fan_in: int, fan_out: int) -> tuple[str, float]:
    if init.kind in ("zeros", "ones"):
        return (init.kind, 0.0)
    if init.kind in ("normal", "uniform"):
        return (init.kind, float(init.scale))
    if init.kind == "fan_in_uniform":
        return ("uniform", 1.0 / math.sqrt(fan_in))
    if init.kind == "variance_scaling":
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[init.mode]
        var = init.scale / max(1.0, n)
        if init.distribution == "normal":
            return ("normal", math.sqrt(var))
        if init.distribution == "truncated_normal":
            return ("truncated_normal", math.sqrt(var) / _TRUNC_STD_CORRECTION)
        if init.distribution == "uniform":
            return ("uniform", math.sqrt(3.0 * var))
    raise ValueError(f"unknown initializer {init!r}")


# --- parameters -----------------------------------------------------------------------

def node_params(node, shape: Shape) -> list[ParamSpec]:
    """Canonical arrays of one node (keys ``<layer name>/<array>``), in a fixed order."""
    P = ParamSpec
    if isinstance(node, Conv):
        kh, kw = node.kernel
        cin = shape[2] // node.groups
        fan_in, fan_out = kh * kw * cin, kh * kw * node.filters
        out = [P(f"{node.name}/kernel", (kh, kw, cin, node.filters),
                 resolve_init(node.kernel_init, fan_in, fan_out))]
        if node.bias:
            out.append(P(f"{node.name}/bias", (node.filters,),
                         resolve_init(node.bias_init, fan_in, fan_out)))
        return out
    if isinstance(node, Dense):
        fan_in = shape[-1]
        out = [P(f"{node.name}/kernel", (fan_in, node.units),
                 resolve_init(node.kernel_init, fan_in, node.units))]
        if node.bias:
            out.append(P(f"{node.name}/bias", (node.units,),
                         resolve_init(node.bias_init, fan_in, node.units)))
        return out
    if isinstance(node, BatchNorm):
        c = (shape[-1],)
        return [P(f"{node.name}/scale", c, ("ones", 0.0)),
                P(f"{node.name}/bias", c, ("zeros", 0.0)),
                P(f"{node.name}/mean", c, ("zeros", 0.0), trainable=False),
                P(f"{node.name}/var", c, ("ones", 0.0), trainable=False)]
    if isinstance(node, LayerNorm):
        c = (shape[-1],)
        return [P(f"{node.name}/scale", c, ("ones", 0.0)),
                P(f"{node.name}/bias", c, ("zeros", 0.0))]
    if isinstance(node, ClassToken):
        return [P(f"{node.name}/token", (1, 1, shape[1]), resolve_init(node.init, 1, 1))]
    if isinstance(node, PositionEmbedding):
        return [P(f"{node.name}/embedding", (1,) + tuple(shape), resolve_init(node.init, 1, 1))]
    if isinstance(node, EncoderBlock):
        d, m, n = shape[1], node.mlp_dim, node.name
        # q/k/v fans are those of PyTorch's packed (3D, D) in_proj matrix, which is what
        # torchvision's xavier_uniform_ sees.
        qkv = resolve_init(node.qkv_init, d, 3 * d)
        out = [P(f"{n}/ln_1/scale", (d,), ("ones", 0.0)), P(f"{n}/ln_1/bias", (d,), ("zeros", 0.0))]
        for proj in ("query", "key", "value"):
            out += [P(f"{n}/attention/{proj}/kernel", (d, d), qkv),
                    P(f"{n}/attention/{proj}/bias", (d,), resolve_init(node.qkv_bias_init, d, 3 * d))]
        out += [P(f"{n}/attention/out/kernel", (d, d), resolve_init(node.out_init, d, d)),
                P(f"{n}/attention/out/bias", (d,), resolve_init(node.out_bias_init, d, d)),
                P(f"{n}/ln_2/scale", (d,), ("ones", 0.0)), P(f"{n}/ln_2/bias", (d,), ("zeros", 0.0)),
                P(f"{n}/mlp_1/kernel", (d, m), resolve_init(node.mlp_init, d, m)),
                P(f"{n}/mlp_1/bias", (m,), resolve_init(node.mlp_bias_init, d, m)),
                P(f"{n}/mlp_2/kernel", (m, d), resolve_init(node.mlp_init, m, d)),
                P(f"{n}/mlp_2/bias", (d,), resolve_init(node.mlp_bias_init, m, d))]
        return out
    return []


def param_specs(nodes, shape: Shape) -> list[ParamSpec]:
    specs = []
    for node, in_shape, _ in walk(nodes, shape):
        specs.extend(node_params(node, in_shape))
    keys = [s.key for s in specs]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"duplicate layer names in the architecture: {dup[:5]}")
    return specs


# --- FLOPs ----------------------------------------------------------------------------

def node_macs(node, shape: Shape, out: Shape) -> int:
    """Multiply-accumulates of convolutions, dense layers and attention matmuls.

    Element-wise work (normalization, activations, additions, pooling, softmax) is not
    counted, the convention of torchvision's and fvcore's figures.
    """
    if isinstance(node, Conv):
        kh, kw = node.kernel
        return out[0] * out[1] * node.filters * kh * kw * (shape[2] // node.groups)
    if isinstance(node, Dense):
        return math.prod(shape[:-1]) * shape[-1] * node.units
    if isinstance(node, EncoderBlock):
        length, d = shape
        return 4 * length * d * d + 2 * length * length * d + 2 * length * d * node.mlp_dim
    return 0


def count(nodes, shape: Shape) -> dict:
    """Trainable parameters, all arrays, MACs and FLOPs (= 2 x MACs) per image."""
    specs = param_specs(nodes, shape)
    macs = sum(node_macs(n, i, o) for n, i, o in walk(nodes, shape))
    return {
        "parameters": sum(s.size for s in specs if s.trainable),
        "non_trainable": sum(s.size for s in specs if not s.trainable),
        "macs_per_image": macs,
        "flops_per_image": 2 * macs,
    }
