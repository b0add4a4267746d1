"""Flax NNX builder: IR -> nnx.Module (input NHWC float32 in [0, 1], output logits).

Imports jax and flax only.  The result is a plain ``nnx.Module`` tree (``nnx.List`` of
layers), so ``nnx.split``/``nnx.merge``, ``nnx.jit`` and ``model.train()``/``model.eval()``
work as usual: ``eval()`` switches BatchNorm to running statistics and turns dropout and
stochastic depth off.  Modules that own canonical weights carry a ``canonical_name``
attribute (the IR layer name).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import canonical, graph, ir

_ACTIVATIONS = {
    "relu": jax.nn.relu, "relu6": jax.nn.relu6, "hardswish": jax.nn.hard_swish,
    "hardsigmoid": jax.nn.hard_sigmoid, "silu": jax.nn.silu, "sigmoid": jax.nn.sigmoid,
    # jax.nn.gelu defaults to the tanh approximation; the IR's GELU is the exact one.
    "gelu": partial(jax.nn.gelu, approximate=False),
}


# Flax draws each parameter with its own small XLA program, compiled once per shape: for
# EfficientNet that is ~110 compilations and ~20 s on a CPU.  When canonical weights are
# about to overwrite every parameter, zeros stand in for the draw, made by NumPy and copied
# to the device: Flax's zeros_init (jnp.zeros) compiles a broadcast per shape too, and
# jnp.asarray of a NumPy array a `stage` program per shape (JAX 0.10). EfficientNet-B0's
# placeholder build went from 5.0 to 2.3 s of CPU with a cold cache; what is left is
# BatchNorm's running statistics, which Flax makes with jnp.zeros/ones (15 broadcasts).
_PLACEHOLDER_INIT: contextvars.ContextVar[bool] = contextvars.ContextVar("placeholder", default=False)


def _host_zeros(key, shape, dtype=jnp.float32):
    """A parameter initializer that compiles nothing (the key is not used)."""
    return jax.device_put(np.zeros(shape, dtype))


def _inits(kernel: str = "kernel_init", bias: str = "bias_init") -> dict:
    if not _PLACEHOLDER_INIT.get():
        return {}
    return {kernel: _host_zeros, bias: _host_zeros}


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


class BatchNorm(nnx.BatchNorm):
    """nnx.BatchNorm with the IR's running-variance rule (PyTorch's): the batch is
    normalized with its biased variance, as Flax does, but the running variance is
    updated with the unbiased one, n/(n-1) times it (n values per channel in the batch).
    The variance Flax has just written, m*v_old + (1-m)*var, becomes
    m*v_old + (1-m)*var*n/(n-1) (build_keras.BatchNorm says why it matters)."""

    def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
        running = self.use_running_average if use_running_average is None else use_running_average
        if running or mask is not None:
            return super().__call__(x, use_running_average, mask=mask)
        old = self.var[...]
        y = super().__call__(x, use_running_average, mask=mask)
        n = math.prod(x.shape[:-1])  # every axis but the channels (last) is reduced
        c = n / max(n - 1, 1)
        self.var[...] = jax.lax.stop_gradient(c * self.var[...] - (c - 1.0) * self.momentum * old)
        return y


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
    return canonical.handler(LAYERS, node, "Flax module")(node, shape, rngs)


def _batchnorm(node: ir.BatchNorm, shape, rngs) -> nnx.Module:
    # Flax momentum is the Keras convention: 1 - PyTorch's.
    return _tag(BatchNorm(shape[-1], momentum=1.0 - node.momentum, epsilon=node.eps,
                          use_fast_variance=False, rngs=rngs), node.name)


def _dense(node: ir.Dense, shape, rngs) -> nnx.Module:
    return _tag(nnx.Linear(shape[-1], node.units, use_bias=node.bias, rngs=rngs, **_inits()), node.name)


def _layernorm(node: ir.LayerNorm, shape, rngs) -> nnx.Module:
    return _tag(nnx.LayerNorm(shape[-1], epsilon=node.eps, use_fast_variance=False, rngs=rngs), node.name)


# IR node type -> (node, input shape, rngs) -> module.
LAYERS = {
    ir.Conv: lambda node, shape, rngs: _conv(node, shape[2], rngs),
    ir.BatchNorm: _batchnorm,
    ir.Activation: lambda node, shape, rngs: Activation(node.fn),
    ir.MaxPool: lambda node, shape, rngs: MaxPool(node),
    ir.GlobalPool: lambda node, shape, rngs: GlobalPool(node.kind),
    ir.SqueezeExcite: lambda node, shape, rngs: SqueezeExcite(node, shape[2], rngs),
    ir.Residual: lambda node, shape, rngs: Residual(node, shape, rngs),
    ir.Dropout: lambda node, shape, rngs: nnx.Dropout(node.rate, rngs=rngs),
    # NHWC row-major, as Keras' Flatten
    ir.Flatten: lambda node, shape, rngs: Reshape((math.prod(shape),)),
    ir.Dense: _dense,
    ir.LayerNorm: _layernorm,
    ir.Tokens: lambda node, shape, rngs: Reshape((shape[0] * shape[1], shape[2])),
    ir.ClassToken: lambda node, shape, rngs: _tag(ClassToken(shape[1]), node.name),
    ir.PositionEmbedding: lambda node, shape, rngs: _tag(PositionEmbedding(shape[0], shape[1], rngs), node.name),
    ir.EncoderBlock: lambda node, shape, rngs: _tag(EncoderBlock(node, shape[1], rngs), node.name),
    ir.TakeToken: lambda node, shape, rngs: TakeToken(node.index),
}


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


def _slot(variable, to_flax=canonical.identity, to_canonical=canonical.identity) -> canonical.Slot:
    def write(array):
        variable.value = jnp.asarray(array, dtype=variable.value.dtype)

    return canonical.Slot(tuple(variable.shape), lambda: jax.device_get(variable.value), write,
                          to_flax, to_canonical)


def _kernel_bias(module) -> dict:
    out = {"kernel": _slot(module.kernel)}
    if module.bias is not None:
        out["bias"] = _slot(module.bias)
    return out


def _norm_slots(module) -> dict:
    return {"scale": _slot(module.scale), "bias": _slot(module.bias)}


def _encoder_slots(module: EncoderBlock) -> dict:
    att = module.attention
    out = {**canonical.prefixed("ln_1", _norm_slots(module.ln_1)),
           **canonical.prefixed("ln_2", _norm_slots(module.ln_2)),
           **canonical.prefixed("mlp_1", _kernel_bias(module.mlp_1)),
           **canonical.prefixed("mlp_2", _kernel_bias(module.mlp_2))}
    dense = {"query": att.query, "key": att.key, "value": att.value, "out": att.out}
    return {**out, **canonical.attention_slots(
        {proj: (d.kernel, d.bias) for proj, d in dense.items()}, _slot)}


# Flax module type -> its canonical arrays.
_SLOTS = {
    nnx.Conv: _kernel_bias,
    nnx.Linear: _kernel_bias,
    nnx.BatchNorm: lambda m: {**_norm_slots(m), "mean": _slot(m.mean), "var": _slot(m.var)},
    nnx.LayerNorm: _norm_slots,
    ClassToken: lambda m: {"token": _slot(m.token)},
    PositionEmbedding: lambda m: {"embedding": _slot(m.embedding)},
    EncoderBlock: _encoder_slots,
}


def slots(model) -> dict[str, canonical.Slot]:
    """Canonical key -> where that array lives in ``model``."""
    out = {}
    for name, module in _named(model).items():
        out.update(canonical.prefixed(name, canonical.handler(_SLOTS, module, "canonical weights")(module)))
    return out


def count_parameters(model) -> int:
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param))))


def abstract_build(nodes, input_shape):
    """The model built under nnx.eval_shape (shapes only, nothing allocated), for counting
    its parameters.

    Each parameter's draw advances its RngStream's counter, a Variable whose set_value
    reads the traced value's `.sharding` with getattr(..., None). JAX answers with an
    AttributeError whose message it builds first (DynamicJaxprTracer._origin_msg), walking
    the whole program traced so far; Flax discards it. So the build's cost grew with the
    square of the model's size: EfficientNet-B0 at 64 px took 3.0 s, 1.3 s without the
    messages (2-core CPU; all nine architectures 9.4 s -> 4.5 s). While this build traces,
    those messages are left empty (the error is raised and caught all the same); where
    this JAX has no such method, the build runs as it is. The method is JAX's class's, so
    another thread tracing meanwhile gets the short message too: nothing else changes."""
    with _no_tracer_origin_messages():
        return nnx.eval_shape(lambda: build(nodes, input_shape))


@contextlib.contextmanager
def _no_tracer_origin_messages():
    try:  # JAX's private module: a JAX without it builds as it is
        from jax._src.interpreters import partial_eval
    except ImportError:
        partial_eval = None
    tracer = getattr(partial_eval, "DynamicJaxprTracer", None)
    original = vars(tracer).get("_origin_msg") if tracer is not None else None
    if original is None:
        yield
        return
    tracer._origin_msg = lambda self: ""
    try:
        yield
    finally:
        tracer._origin_msg = original
