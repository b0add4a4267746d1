"""Flax NNX builder: IR -> nnx.Module (input NHWC float32 in [0, 1], output logits).

Imports jax and flax only.  The result is a plain ``nnx.Module`` tree (``nnx.List`` of
layers), so ``nnx.split``/``nnx.merge``, ``nnx.jit`` and ``model.train()``/``model.eval()``
work as usual: ``eval()`` switches BatchNorm to running statistics and turns dropout and
stochastic depth off.  Modules that own canonical weights carry a ``canonical_name``
attribute (the IR layer name).
"""

from __future__ import annotations

import contextvars
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import graph, ir

_ACTIVATIONS = {
    "relu": jax.nn.relu, "relu6": jax.nn.relu6, "hardswish": jax.nn.hard_swish,
    "hardsigmoid": jax.nn.hard_sigmoid, "silu": jax.nn.silu, "sigmoid": jax.nn.sigmoid,
    # jax.nn.gelu defaults to the tanh approximation; the IR's GELU is the exact one.
    "gelu": partial(jax.nn.gelu, approximate=False),
}


# Flax draws each parameter with its own small XLA program, compiled once per shape: for
# EfficientNet that is ~110 compilations and ~20 s on a CPU.  When canonical weights are
# about to overwrite every parameter, zeros (no compilation) stand in for the draw.
_PLACEHOLDER_INIT: contextvars.ContextVar[bool] = contextvars.ContextVar("placeholder", default=False)


def _inits(kernel: str = "kernel_init", bias: str = "bias_init") -> dict:
    if not _PLACEHOLDER_INIT.get():
        return {}
    return {kernel: nnx.initializers.zeros_init(), bias: nnx.initializers.zeros_init()}


def _tag(module: nnx.Module, name: str) -> nnx.Module:
    module.canonical_name = name
    return module


class Activation(nnx.Module):
    def __init__(self, fn: str):
        self.fn = fn

    def __call__(self, x):
        return _ACTIVATIONS[self.fn](x)


class MaxPool(nnx.Module):
    def __init__(self, node: ir.MaxPool):
        self.window, self.strides = tuple(node.kernel), tuple(node.stride)
        self.padding = tuple(tuple(p) for p in node.padding)

    def __call__(self, x):
        return nnx.max_pool(x, self.window, self.strides, self.padding)  # pads with -inf


class GlobalPool(nnx.Module):
    def __init__(self, kind: str):
        self.kind = kind

    def __call__(self, x):
        return jnp.mean(x, axis=(1, 2)) if self.kind == "avg" else jnp.max(x, axis=(1, 2))


class SqueezeExcite(nnx.Module):
    def __init__(self, node: ir.SqueezeExcite, channels: int, rngs: nnx.Rngs):
        self.fc1 = _conv(node.reduce, channels, rngs)
        self.fc2 = _conv(node.expand, node.reduce.filters, rngs)
        self.activation, self.gate = node.activation, node.gate

    def __call__(self, x):
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = _ACTIVATIONS[self.gate](self.fc2(_ACTIVATIONS[self.activation](self.fc1(s))))
        return x * s


class Sequential(nnx.Module):
    def __init__(self, nodes, shape, rngs: nnx.Rngs):
        modules = []
        for node in nodes:
            modules.append(_module(node, shape, rngs))
            shape = graph.out_shape(node, shape)
        self.layers = nnx.List(modules)
        self.output_shape = tuple(shape)

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class Residual(nnx.Module):
    def __init__(self, node: ir.Residual, shape, rngs: nnx.Rngs):
        self.block = Sequential(node.body, shape, rngs)
        self.shortcut = Sequential(node.shortcut, shape, rngs)  # empty = identity
        # Dropout with one mask value per sample is stochastic depth's "row" mode.
        self.stochastic_depth = nnx.Dropout(node.drop_path, broadcast_dims=(1, 2, 3), rngs=rngs)

    def __call__(self, x):
        return self.stochastic_depth(self.block(x)) + self.shortcut(x)


class Reshape(nnx.Module):
    def __init__(self, shape: tuple):
        self.shape = tuple(shape)

    def __call__(self, x):
        return x.reshape((x.shape[0],) + self.shape)


class ClassToken(nnx.Module):
    def __init__(self, dim: int):
        self.token = nnx.Param(jnp.zeros((1, 1, dim), jnp.float32))

    def __call__(self, x):
        token = jnp.broadcast_to(self.token[...].astype(x.dtype), (x.shape[0], 1, x.shape[2]))
        return jnp.concatenate([token, x], axis=1)


class PositionEmbedding(nnx.Module):
    def __init__(self, length: int, dim: int, rngs: nnx.Rngs):
        if _PLACEHOLDER_INIT.get():
            self.embedding = nnx.Param(jnp.zeros((1, length, dim), jnp.float32))
        else:
            self.embedding = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, length, dim)))

    def __call__(self, x):
        return x + self.embedding[...].astype(x.dtype)


class EncoderBlock(nnx.Module):
    """torchvision's EncoderBlock with nnx.MultiHeadAttention."""

    def __init__(self, node: ir.EncoderBlock, dim: int, rngs: nnx.Rngs):
        ln = dict(epsilon=node.eps, use_fast_variance=False, rngs=rngs)
        self.ln_1 = nnx.LayerNorm(dim, **ln)
        self.attention = nnx.MultiHeadAttention(
            node.heads, dim, dropout_rate=node.attention_dropout, broadcast_dropout=False,
            decode=False, rngs=rngs, **_inits())
        self.dropout = nnx.Dropout(node.dropout, rngs=rngs)
        self.ln_2 = nnx.LayerNorm(dim, **ln)
        self.mlp_1 = nnx.Linear(dim, node.mlp_dim, rngs=rngs, **_inits())
        self.mlp_2 = nnx.Linear(node.mlp_dim, dim, rngs=rngs, **_inits())
        self.mlp_dropout_1 = nnx.Dropout(node.dropout, rngs=rngs)
        self.mlp_dropout_2 = nnx.Dropout(node.dropout, rngs=rngs)

    def __call__(self, x):
        x = x + self.dropout(self.attention(self.ln_1(x)))
        y = self.mlp_dropout_1(_ACTIVATIONS["gelu"](self.mlp_1(self.ln_2(x))))
        return x + self.mlp_dropout_2(self.mlp_2(y))


class TakeToken(nnx.Module):
    def __init__(self, index: int):
        self.index = index

    def __call__(self, x):
        return x[:, self.index]


def _conv(node: ir.Conv, cin: int, rngs: nnx.Rngs) -> nnx.Conv:
    padding = tuple(tuple(p) for p in node.padding)
    return _tag(nnx.Conv(cin, node.filters, tuple(node.kernel), tuple(node.stride), padding=padding,
                         feature_group_count=node.groups, use_bias=node.bias, rngs=rngs,
                         **_inits()), node.name)


def _module(node, shape, rngs: nnx.Rngs) -> nnx.Module:
    if isinstance(node, ir.Conv):
        return _conv(node, shape[2], rngs)
    if isinstance(node, ir.BatchNorm):
        # Flax momentum is the Keras convention: 1 - PyTorch's.
        return _tag(nnx.BatchNorm(shape[-1], momentum=1.0 - node.momentum, epsilon=node.eps,
                                  use_fast_variance=False, rngs=rngs), node.name)
    if isinstance(node, ir.Activation):
        return Activation(node.fn)
    if isinstance(node, ir.MaxPool):
        return MaxPool(node)
    if isinstance(node, ir.GlobalPool):
        return GlobalPool(node.kind)
    if isinstance(node, ir.SqueezeExcite):
        return SqueezeExcite(node, shape[2], rngs)
    if isinstance(node, ir.Residual):
        return Residual(node, shape, rngs)
    if isinstance(node, ir.Dropout):
        return nnx.Dropout(node.rate, rngs=rngs)
    if isinstance(node, ir.Flatten):
        return Reshape((math.prod(shape),))  # NHWC row-major, as Keras' Flatten
    if isinstance(node, ir.Dense):
        return _tag(nnx.Linear(shape[-1], node.units, use_bias=node.bias, rngs=rngs, **_inits()),
                    node.name)
    if isinstance(node, ir.LayerNorm):
        return _tag(nnx.LayerNorm(shape[-1], epsilon=node.eps, use_fast_variance=False, rngs=rngs),
                    node.name)
    if isinstance(node, ir.Tokens):
        return Reshape((shape[0] * shape[1], shape[2]))
    if isinstance(node, ir.ClassToken):
        return _tag(ClassToken(shape[1]), node.name)
    if isinstance(node, ir.PositionEmbedding):
        return _tag(PositionEmbedding(shape[0], shape[1], rngs), node.name)
    if isinstance(node, ir.EncoderBlock):
        return _tag(EncoderBlock(node, shape[1], rngs), node.name)
    if isinstance(node, ir.TakeToken):
        return TakeToken(node.index)
    raise TypeError(f"unknown IR node {node!r}")


class IRModel(Sequential):
    """The built model: ``model(x)`` with x of shape (N, H, W, C)."""

    def __init__(self, nodes, input_shape, rngs: nnx.Rngs):
        super().__init__(nodes, tuple(input_shape), rngs)
        self.input_shape = tuple(input_shape)


def build(nodes, input_shape: tuple[int, int, int], seed: int = 0, *,
          placeholder_init: bool = False) -> IRModel:
    """Parameters get Flax's own layer defaults drawn from ``nnx.Rngs(seed)`` (dropout
    streams from the same seed); ``models.build_model`` overwrites them with canonical
    weights unless asked for the framework's own initialization, and then asks for
    ``placeholder_init`` (zeros) so that nothing is drawn only to be replaced."""
    token = _PLACEHOLDER_INIT.set(placeholder_init)
    try:
        return IRModel(nodes, input_shape, nnx.Rngs(params=seed, dropout=seed + 1))
    finally:
        _PLACEHOLDER_INIT.reset(token)


# --- canonical weights ----------------------------------------------------------------

def _named(model) -> dict[str, nnx.Module]:
    return {node.canonical_name: node for _, node in nnx.iter_graph(model)
            if isinstance(node, nnx.Module) and hasattr(node, "canonical_name")}


def _variables(module) -> dict[str, tuple]:
    """canonical param -> (nnx.Variable, to_flax, to_canonical)."""
    same = None
    if isinstance(module, (nnx.Conv, nnx.Linear)):
        out = {"kernel": (module.kernel, same, same)}
        if module.bias is not None:
            out["bias"] = (module.bias, same, same)
        return out
    if isinstance(module, nnx.BatchNorm):
        return {"scale": (module.scale, same, same), "bias": (module.bias, same, same),
                "mean": (module.mean, same, same), "var": (module.var, same, same)}
    if isinstance(module, nnx.LayerNorm):
        return {"scale": (module.scale, same, same), "bias": (module.bias, same, same)}
    if isinstance(module, ClassToken):
        return {"token": (module.token, same, same)}
    if isinstance(module, PositionEmbedding):
        return {"embedding": (module.embedding, same, same)}
    if isinstance(module, EncoderBlock):
        out = {}
        for sub, pre in ((module.ln_1, "ln_1/"), (module.ln_2, "ln_2/"), (module.mlp_1, "mlp_1/"),
                         (module.mlp_2, "mlp_2/")):
            out.update({pre + k: v for k, v in _variables(sub).items()})
        att = module.attention
        # Flax keeps heads as separate axes: (D, heads, head_dim) and (heads, head_dim, D).
        for proj, dense in (("query", att.query), ("key", att.key), ("value", att.value),
                            ("out", att.out)):
            k_shape, b_shape = tuple(dense.kernel.shape), tuple(dense.bias.shape)
            d_in = k_shape[0] if proj != "out" else k_shape[0] * k_shape[1]
            out[f"attention/{proj}/kernel"] = (
                dense.kernel, (lambda a, s=k_shape: a.reshape(s)), (lambda a, n=d_in: a.reshape(n, -1)))
            out[f"attention/{proj}/bias"] = (
                dense.bias, (lambda a, s=b_shape: a.reshape(s)), (lambda a: a.reshape(-1)))
        return out
    return {}


def _resolve(model, keys):
    named = _named(model)
    cache = {}
    for key in keys:
        name, _, param = key.partition("/")
        if name not in named:
            raise KeyError(f"the model has no layer {name!r} (for weights[{key!r}])")
        if name not in cache:
            cache[name] = _variables(named[name])
        yield (key,) + cache[name][param]


def canonical_keys(model) -> list[str]:
    return [f"{name}/{p}" for name, module in _named(model).items() for p in _variables(module)]


def load(model, weights: dict[str, np.ndarray]) -> None:
    for key, variable, to_flax, _ in _resolve(model, weights):
        array = np.asarray(weights[key], dtype=np.float32)
        if to_flax is not None:
            array = to_flax(array)
        if tuple(variable.shape) != array.shape:
            raise ValueError(f"weights[{key!r}]: shape {array.shape} does not fit {tuple(variable.shape)}")
        variable.value = jnp.asarray(array, dtype=variable.value.dtype)


def extract(model) -> dict[str, np.ndarray]:
    out = {}
    for key, variable, _, to_canon in _resolve(model, canonical_keys(model)):
        array = np.asarray(jax.device_get(variable.value), dtype=np.float32)
        out[key] = np.ascontiguousarray(to_canon(array) if to_canon is not None else array)
    return out


def count_parameters(model) -> int:
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
