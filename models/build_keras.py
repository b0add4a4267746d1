"""Keras 3 builder: IR -> functional keras.Model (input NHWC float32 in [0, 1], output logits).

Imports keras only (whatever backend KERAS_BACKEND selects).  Layers that own canonical
weights are named with the IR layer name, so ``model.get_layer(name)`` finds them.
Native layers are used wherever they compute the IR's function: Keras' 'same' padding
only where it equals the IR's explicit padding, otherwise an explicit ZeroPadding2D.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers, ops

from . import graph, ir

_PACKAGE = "comparison_lab"

_ACTIVATIONS = {
    "relu": "relu", "relu6": "relu6", "hardswish": "hard_silu", "hardsigmoid": "hard_sigmoid",
    "silu": "silu", "sigmoid": "sigmoid", "gelu": "gelu",  # keras' gelu is exact by default
}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PadMaxPool(layers.Layer):
    """Max pooling after an explicit -inf padding that Keras' 'same' would not produce."""

    def __init__(self, pool_size, strides, padding, **kwargs):
        super().__init__(**kwargs)
        self.pool_size, self.strides = tuple(pool_size), tuple(strides)
        self.padding = tuple(tuple(p) for p in padding)
        self.pool = layers.MaxPooling2D(self.pool_size, self.strides, "valid")

    def call(self, x):
        x = ops.pad(x, ((0, 0),) + self.padding + ((0, 0),), constant_values=-math.inf)
        return self.pool(x)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides,
                "padding": self.padding}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ClassToken(layers.Layer):
    def build(self, input_shape):
        self.token = self.add_weight(shape=(1, 1, input_shape[-1]), initializer="zeros", name="token")

    def call(self, x):
        token = ops.broadcast_to(ops.cast(self.token, x.dtype), (ops.shape(x)[0], 1, ops.shape(x)[2]))
        return ops.concatenate([token, x], axis=1)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PositionEmbedding(layers.Layer):
    def build(self, input_shape):
        self.embedding = self.add_weight(shape=(1,) + tuple(input_shape[1:]),
                                         initializer=keras.initializers.RandomNormal(stddev=0.02),
                                         name="embedding")

    def call(self, x):
        return x + ops.cast(self.embedding, x.dtype)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TakeToken(layers.Layer):
    def __init__(self, index=0, **kwargs):
        super().__init__(**kwargs)
        self.index = index

    def call(self, x):
        return x[:, self.index]

    def get_config(self):
        return {**super().get_config(), "index": self.index}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class EncoderBlock(layers.Layer):
    """torchvision's EncoderBlock with Keras' MultiHeadAttention."""

    def __init__(self, heads, mlp_dim, dropout=0.0, attention_dropout=0.0, eps=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.heads, self.mlp_dim, self.eps = heads, mlp_dim, eps
        self.rate, self.attention_rate = dropout, attention_dropout
        self.ln_1 = layers.LayerNormalization(epsilon=eps, name="ln_1")
        self.ln_2 = layers.LayerNormalization(epsilon=eps, name="ln_2")
        self.dropout = layers.Dropout(dropout)
        self.mlp_dropout_1 = layers.Dropout(dropout)
        self.mlp_dropout_2 = layers.Dropout(dropout)

    def build(self, input_shape):
        dim = input_shape[-1]
        self.attention = layers.MultiHeadAttention(self.heads, dim // self.heads,
                                                   dropout=self.attention_rate, name="attention")
        self.mlp_1 = layers.Dense(self.mlp_dim, name="mlp_1")
        self.mlp_2 = layers.Dense(dim, name="mlp_2")
        self.ln_1.build(input_shape)
        self.ln_2.build(input_shape)
        self.attention.build(input_shape, input_shape)
        self.mlp_1.build(input_shape)
        self.mlp_2.build(tuple(input_shape[:-1]) + (self.mlp_dim,))

    def call(self, x, training=None):
        y = self.ln_1(x)
        y = self.attention(y, y, training=training)
        x = x + self.dropout(y, training=training)
        y = self.mlp_1(self.ln_2(x))
        y = self.mlp_dropout_1(keras.activations.gelu(y, approximate=False), training=training)
        y = self.mlp_dropout_2(self.mlp_2(y), training=training)
        return x + y

    def get_config(self):
        return {**super().get_config(), "heads": self.heads, "mlp_dim": self.mlp_dim,
                "dropout": self.rate, "attention_dropout": self.attention_rate, "eps": self.eps}


def _padding_mode(padding, shape, kernel, stride):
    """'same' / 'valid' where Keras' own mode equals the explicit padding, else None."""
    same = (graph.same_padding(shape[0], kernel[0], stride[0]),
            graph.same_padding(shape[1], kernel[1], stride[1]))
    if tuple(padding) == same:
        return "same"
    if tuple(padding) == ((0, 0), (0, 0)):
        return "valid"
    return None


def _conv(node: ir.Conv, x, shape):
    mode = _padding_mode(node.padding, shape, node.kernel, node.stride)
    if mode is None:
        x = layers.ZeroPadding2D(node.padding)(x)
        mode = "valid"
    if node.groups == 1:
        layer = layers.Conv2D(node.filters, node.kernel, node.stride, mode, use_bias=node.bias,
                              name=node.name)
    else:
        layer = layers.DepthwiseConv2D(node.kernel, node.stride, mode, depth_multiplier=1,
                                       use_bias=node.bias, name=node.name)
    return layer(x)


def _maxpool(node: ir.MaxPool, x, shape):
    mode = _padding_mode(node.padding, shape, node.kernel, node.stride)
    if mode is None:
        return PadMaxPool(node.kernel, node.stride, node.padding)(x)
    return layers.MaxPooling2D(node.kernel, node.stride, mode)(x)


def _apply(nodes, x, shape):
    for node in nodes:
        x = _apply_one(node, x, shape)
        shape = graph.out_shape(node, shape)
    return x


def _apply_one(node, x, shape):
    if isinstance(node, ir.Conv):
        return _conv(node, x, shape)
    if isinstance(node, ir.BatchNorm):
        return layers.BatchNormalization(momentum=1.0 - node.momentum, epsilon=node.eps,
                                         name=node.name)(x)
    if isinstance(node, ir.Activation):
        return layers.Activation(_ACTIVATIONS[node.fn])(x)
    if isinstance(node, ir.MaxPool):
        return _maxpool(node, x, shape)
    if isinstance(node, ir.GlobalPool):
        pool = layers.GlobalAveragePooling2D if node.kind == "avg" else layers.GlobalMaxPooling2D
        return pool()(x)
    if isinstance(node, ir.SqueezeExcite):
        # keras.applications' squeeze-excitation: pooled 1x1 convolutions and a Multiply.
        s = layers.GlobalAveragePooling2D(keepdims=True)(x)
        s = _conv(node.reduce, s, (1, 1, shape[2]))
        s = layers.Activation(_ACTIVATIONS[node.activation])(s)
        s = _conv(node.expand, s, (1, 1, node.reduce.filters))
        s = layers.Activation(_ACTIVATIONS[node.gate])(s)
        return layers.Multiply()([x, s])
    if isinstance(node, ir.Residual):
        body = _apply(node.body, x, shape)
        if node.drop_path > 0:
            # Dropout with one mask value per sample is stochastic depth's "row" mode.
            body = layers.Dropout(node.drop_path, noise_shape=(None, 1, 1, 1))(body)
        shortcut = _apply(node.shortcut, x, shape) if node.shortcut else x
        return layers.Add()([body, shortcut])
    if isinstance(node, ir.Dropout):
        return layers.Dropout(node.rate)(x)
    if isinstance(node, ir.Flatten):
        return layers.Flatten()(x)
    if isinstance(node, ir.Dense):
        return layers.Dense(node.units, use_bias=node.bias, name=node.name)(x)
    if isinstance(node, ir.LayerNorm):
        return layers.LayerNormalization(epsilon=node.eps, name=node.name)(x)
    if isinstance(node, ir.Tokens):
        return layers.Reshape((shape[0] * shape[1], shape[2]))(x)
    if isinstance(node, ir.ClassToken):
        return ClassToken(name=node.name)(x)
    if isinstance(node, ir.PositionEmbedding):
        return PositionEmbedding(name=node.name)(x)
    if isinstance(node, ir.EncoderBlock):
        return EncoderBlock(node.heads, node.mlp_dim, node.dropout, node.attention_dropout,
                            node.eps, name=node.name)(x)
    if isinstance(node, ir.TakeToken):
        return TakeToken(node.index)(x)
    raise TypeError(f"unknown IR node {node!r}")


def build(nodes, input_shape: tuple[int, int, int], seed: int | None = None,
          name: str = "model") -> keras.Model:
    """Functional model for NHWC input of ``input_shape``.

    Parameters get Keras' own layer defaults; with ``seed`` they are drawn after
    ``keras.utils.set_random_seed(seed)`` (which also seeds Python's and numpy's global
    generators).  ``models.build_model`` overwrites them with canonical weights unless
    asked for the framework's own initialization.
    """
    if seed is not None:
        keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=tuple(input_shape), dtype="float32")
    outputs = _apply(nodes, inputs, tuple(input_shape))
    return keras.Model(inputs, outputs, name=name)


# --- canonical weights ----------------------------------------------------------------

def _variables(layer) -> dict[str, tuple]:
    """canonical param -> (keras variable, to_keras, to_canonical)."""
    same = None
    if isinstance(layer, layers.DepthwiseConv2D):
        swap = lambda a: a.transpose(0, 1, 3, 2)  # (kh, kw, 1, C) <-> (kh, kw, C, 1)
        out = {"kernel": (layer.kernel, swap, swap)}
        if layer.use_bias:
            out["bias"] = (layer.bias, same, same)
        return out
    if isinstance(layer, (layers.Conv2D, layers.Dense)):
        out = {"kernel": (layer.kernel, same, same)}
        if layer.use_bias:
            out["bias"] = (layer.bias, same, same)
        return out
    if isinstance(layer, layers.BatchNormalization):
        return {"scale": (layer.gamma, same, same), "bias": (layer.beta, same, same),
                "mean": (layer.moving_mean, same, same), "var": (layer.moving_variance, same, same)}
    if isinstance(layer, layers.LayerNormalization):
        return {"scale": (layer.gamma, same, same), "bias": (layer.beta, same, same)}
    if isinstance(layer, ClassToken):
        return {"token": (layer.token, same, same)}
    if isinstance(layer, PositionEmbedding):
        return {"embedding": (layer.embedding, same, same)}
    if isinstance(layer, EncoderBlock):
        att = layer.attention
        out = {}
        for sub, pre in ((layer.ln_1, "ln_1/"), (layer.ln_2, "ln_2/"), (layer.mlp_1, "mlp_1/"),
                         (layer.mlp_2, "mlp_2/")):
            out.update({pre + k: v for k, v in _variables(sub).items()})
        # Keras keeps heads as separate axes: (D, heads, head_dim) and (heads, head_dim, D).
        for proj, dense in (("query", att._query_dense), ("key", att._key_dense),
                            ("value", att._value_dense), ("out", att._output_dense)):
            k_shape, b_shape = tuple(dense.kernel.shape), tuple(dense.bias.shape)
            d_in = k_shape[0] if proj != "out" else k_shape[0] * k_shape[1]
            out[f"attention/{proj}/kernel"] = (
                dense.kernel, (lambda a, s=k_shape: a.reshape(s)),
                (lambda a, n=d_in: a.reshape(n, -1)))
            out[f"attention/{proj}/bias"] = (
                dense.bias, (lambda a, s=b_shape: a.reshape(s)), (lambda a: a.reshape(-1)))
        return out
    return {}


def _named_layers(model) -> dict:
    return {layer.name: layer for layer in model.layers}


def _resolve(model, keys):
    named = _named_layers(model)
    cache = {}
    for key in keys:
        name, _, param = key.partition("/")
        if name not in named:
            raise KeyError(f"the model has no layer {name!r} (for weights[{key!r}])")
        if name not in cache:
            cache[name] = _variables(named[name])
        yield (key,) + cache[name][param]


def load(model, weights: dict[str, np.ndarray]) -> None:
    for key, variable, to_keras, _ in _resolve(model, weights):
        array = np.asarray(weights[key], dtype=np.float32)
        if to_keras is not None:
            array = to_keras(array)
        if tuple(variable.shape) != array.shape:
            raise ValueError(f"weights[{key!r}]: shape {array.shape} does not fit {tuple(variable.shape)}")
        variable.assign(array)


def canonical_keys(model) -> list[str]:
    keys = []
    for layer in model.layers:
        keys += [f"{layer.name}/{p}" for p in _variables(layer)]
    return keys


def extract(model) -> dict[str, np.ndarray]:
    out = {}
    for key, variable, _, to_canon in _resolve(model, canonical_keys(model)):
        array = np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)
        out[key] = np.ascontiguousarray(to_canon(array) if to_canon is not None else array)
    return out


def count_parameters(model) -> int:
    return int(sum(math.prod(v.shape) for v in model.trainable_weights))
