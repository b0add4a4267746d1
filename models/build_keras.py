"""Keras 3 builder: IR -> functional keras.Model (input NHWC float32 in [0, 1], output logits).

Imports keras only (whatever backend KERAS_BACKEND selects).  Layers that own canonical
weights are named with the IR layer name, its dots written as dashes (``keras_name``):
Keras on PyTorch registers each variable as a torch parameter under its path, and a
torch parameter name cannot contain a dot.  ``model.get_layer(keras_name(name))`` finds
a layer; the same names on every backend.
Native layers are used wherever they compute the IR's function: Keras' 'same' padding
only where it equals the IR's explicit padding, otherwise an explicit ZeroPadding2D.
"""

from __future__ import annotations

import contextvars
import math
import sys

import keras
import numpy as np
from keras import layers, ops

from . import canonical, graph, ir

_PACKAGE = "comparison_lab"

# Keras on JAX draws each variable with its own small XLA program, compiled once per shape:
# about 50 s for MobileNetV3-Small on a CPU.  When canonical weights are about to overwrite
# every variable, NumPy zeros (nothing to compile, on any backend) stand in for the draw.
_PLACEHOLDER_INIT: contextvars.ContextVar[bool] = contextvars.ContextVar("keras_placeholder", default=False)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Placeholder(keras.initializers.Initializer):
    """Zeros from NumPy for a variable that canonical weights overwrite after the build."""

    def __call__(self, shape, dtype=None):
        return np.zeros(shape, dtype=keras.backend.standardize_dtype(dtype))


def _inits(*arguments: str) -> dict:
    """The layer's initializer arguments as placeholders while the build is followed by a
    load of canonical weights; nothing (Keras' own defaults) otherwise."""
    if not _PLACEHOLDER_INIT.get():
        return {}
    return {argument: Placeholder() for argument in arguments}


def _init(default):
    """One add_weight initializer: the placeholder, or ``default``."""
    return Placeholder() if _PLACEHOLDER_INIT.get() else default


def keras_name(name: str) -> str:
    """The Keras layer name of an IR layer: the torchvision-style dots as dashes."""
    if "-" in name:
        raise ValueError(f"IR layer name {name!r} contains '-', which the Keras builder uses for its dots")
    return name.replace(".", "-")


def ir_name(layer_name: str) -> str:
    return layer_name.replace("-", ".")


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
class BatchNorm(layers.BatchNormalization):
    """Keras' BatchNormalization with the IR's running-variance rule (PyTorch's).

    Both normalize a training batch with its biased variance, but PyTorch updates the
    running variance with the unbiased one, n/(n-1) times it (n values per channel in
    the batch), and Keras with the biased one. With the same weights and batches the
    moving variances would drift apart by 1/(n-1) per update: 1/7 at a 1x1 feature map
    and batch 8, which the lab's small resolutions produce. The moving variance Keras
    has just written, m*v_old + (1-m)*var, becomes m*v_old + (1-m)*var*n/(n-1).
    """

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or mask is not None or self.renorm:
            return super().call(inputs, training=training, mask=mask)
        old = ops.copy(self.moving_variance)  # a snapshot: the variable itself is read later
        outputs = super().call(inputs, training=training)
        shape = ops.shape(inputs)
        n = ops.cast(math.prod(shape[a] for a in self._reduction_axes), old.dtype)
        c = n / ops.maximum(n - 1.0, 1.0)
        new = ops.copy(self.moving_variance)
        self.moving_variance.assign(c * new - (c - 1.0) * self.momentum * old)
        return outputs


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ClassToken(layers.Layer):
    def build(self, input_shape):
        self.token = self.add_weight(shape=(1, 1, input_shape[-1]), initializer=_init("zeros"), name="token")

    def call(self, x):
        token = ops.broadcast_to(ops.cast(self.token, x.dtype), (ops.shape(x)[0], 1, ops.shape(x)[2]))
        return ops.concatenate([token, x], axis=1)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PositionEmbedding(layers.Layer):
    def build(self, input_shape):
        self.embedding = self.add_weight(shape=(1,) + tuple(input_shape[1:]),
                                         initializer=_init(keras.initializers.RandomNormal(stddev=0.02)),
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
        self.ln_1 = layers.LayerNormalization(epsilon=eps, name="ln_1", **_inits(*_NORM_INITS))
        self.ln_2 = layers.LayerNormalization(epsilon=eps, name="ln_2", **_inits(*_NORM_INITS))
        self.dropout = layers.Dropout(dropout)
        self.mlp_dropout_1 = layers.Dropout(dropout)
        self.mlp_dropout_2 = layers.Dropout(dropout)

    def build(self, input_shape):
        dim = input_shape[-1]
        self.attention = layers.MultiHeadAttention(self.heads, dim // self.heads,
                                                   dropout=self.attention_rate, name="attention",
                                                   **_inits(*_DENSE_INITS))
        self.mlp_1 = layers.Dense(self.mlp_dim, name="mlp_1", **_inits(*_DENSE_INITS))
        self.mlp_2 = layers.Dense(dim, name="mlp_2", **_inits(*_DENSE_INITS))
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


_DENSE_INITS = ("kernel_initializer", "bias_initializer")  # Conv2D, Dense, MultiHeadAttention
_NORM_INITS = ("gamma_initializer", "beta_initializer")  # BatchNormalization, LayerNormalization


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
                              name=keras_name(node.name), **_inits(*_DENSE_INITS))
    else:
        layer = layers.DepthwiseConv2D(node.kernel, node.stride, mode, depth_multiplier=1,
                                       use_bias=node.bias, name=keras_name(node.name),
                                       **_inits("depthwise_initializer", "bias_initializer"))
    return layer(x)


def _maxpool(node: ir.MaxPool, x, shape):
    mode = _padding_mode(node.padding, shape, node.kernel, node.stride)
    if mode is None:
        return PadMaxPool(node.kernel, node.stride, node.padding)(x)
    return layers.MaxPooling2D(node.kernel, node.stride, mode)(x)


def _apply(nodes, x, shape):
    for node in nodes:
        x = canonical.handler(LAYERS, node, "Keras layer")(node, x, shape)
        shape = graph.out_shape(node, shape)
    return x


def _batchnorm(node: ir.BatchNorm, x, shape):
    return BatchNorm(momentum=1.0 - node.momentum, epsilon=node.eps, name=keras_name(node.name),
                     **_inits(*_NORM_INITS, "moving_mean_initializer", "moving_variance_initializer"))(x)


def _global_pool(node: ir.GlobalPool, x, shape):
    pool = layers.GlobalAveragePooling2D if node.kind == "avg" else layers.GlobalMaxPooling2D
    return pool()(x)


def _squeeze_excite(node: ir.SqueezeExcite, x, shape):
    # keras.applications' squeeze-excitation: pooled 1x1 convolutions and a Multiply.
    s = layers.GlobalAveragePooling2D(keepdims=True)(x)
    s = _conv(node.reduce, s, (1, 1, shape[2]))
    s = layers.Activation(_ACTIVATIONS[node.activation])(s)
    s = _conv(node.expand, s, (1, 1, node.reduce.filters))
    s = layers.Activation(_ACTIVATIONS[node.gate])(s)
    return layers.Multiply()([x, s])


def _residual(node: ir.Residual, x, shape):
    body = _apply(node.body, x, shape)
    if node.drop_path > 0:
        # Dropout with one mask value per sample is stochastic depth's "row" mode.
        body = layers.Dropout(node.drop_path, noise_shape=(None, 1, 1, 1))(body)
    shortcut = _apply(node.shortcut, x, shape) if node.shortcut else x
    return layers.Add()([body, shortcut])


def _encoder_block(node: ir.EncoderBlock, x, shape):
    return EncoderBlock(node.heads, node.mlp_dim, node.dropout, node.attention_dropout,
                        node.eps, name=keras_name(node.name))(x)


# IR node type -> (node, input tensor, input shape) -> output tensor.
LAYERS = {
    ir.Conv: _conv,
    ir.BatchNorm: _batchnorm,
    ir.Activation: lambda node, x, shape: layers.Activation(_ACTIVATIONS[node.fn])(x),
    ir.MaxPool: _maxpool,
    ir.GlobalPool: _global_pool,
    ir.SqueezeExcite: _squeeze_excite,
    ir.Residual: _residual,
    ir.Dropout: lambda node, x, shape: layers.Dropout(node.rate)(x),
    ir.Flatten: lambda node, x, shape: layers.Flatten()(x),
    ir.Dense: lambda node, x, shape: layers.Dense(node.units, use_bias=node.bias, name=keras_name(node.name),
                                                  **_inits(*_DENSE_INITS))(x),
    ir.LayerNorm: lambda node, x, shape: layers.LayerNormalization(epsilon=node.eps, name=keras_name(node.name),
                                                                   **_inits(*_NORM_INITS))(x),
    ir.Tokens: lambda node, x, shape: layers.Reshape((shape[0] * shape[1], shape[2]))(x),
    ir.ClassToken: lambda node, x, shape: ClassToken(name=keras_name(node.name))(x),
    ir.PositionEmbedding: lambda node, x, shape: PositionEmbedding(name=keras_name(node.name))(x),
    ir.EncoderBlock: _encoder_block,
    ir.TakeToken: lambda node, x, shape: TakeToken(node.index)(x),
}


def set_random_seed(seed: int) -> None:
    """keras.utils.set_random_seed (Python's, NumPy's and the backend's generators, and
    Keras's global one), without loading TensorFlow into a JAX or PyTorch process: Keras
    also seeds TensorFlow whenever it is installed (for tf.data), which would import it,
    and its CUDA libraries beside the backend's, just to seed a generator nothing uses."""
    if keras.backend.backend() == "tensorflow" or "tensorflow" in sys.modules:
        keras.utils.set_random_seed(seed)
        return
    sys.modules["tensorflow"] = None  # an import of it now fails, and Keras skips it
    try:
        keras.utils.set_random_seed(seed)
    finally:
        del sys.modules["tensorflow"]


def build(nodes, input_shape: tuple[int, int, int], seed: int | None = None,
          name: str = "model", *, placeholder_init: bool = False) -> keras.Model:
    """Functional model for NHWC input of ``input_shape``.

    Parameters get Keras' own layer defaults; with ``seed`` they are drawn after
    ``set_random_seed(seed)`` (which also seeds Python's and numpy's global
    generators).  ``models.build_model`` overwrites them with canonical weights unless
    asked for the framework's own initialization, and then asks for ``placeholder_init``
    (zeros) so that nothing is drawn only to be replaced.
    """
    if seed is not None:
        set_random_seed(seed)
    token = _PLACEHOLDER_INIT.set(placeholder_init)
    try:
        inputs = keras.Input(shape=tuple(input_shape), dtype="float32")
        outputs = _apply(nodes, inputs, tuple(input_shape))
        return keras.Model(inputs, outputs, name=name)
    finally:
        _PLACEHOLDER_INIT.reset(token)


# --- canonical weights ----------------------------------------------------------------

def _slot(variable, to_keras=canonical.identity, to_canonical=canonical.identity) -> canonical.Slot:
    return canonical.Slot(tuple(variable.shape), lambda: keras.ops.convert_to_numpy(variable),
                          variable.assign, to_keras, to_canonical)


def _kernel_bias(layer, to_keras=canonical.identity, to_canonical=canonical.identity) -> dict:
    out = {"kernel": _slot(layer.kernel, to_keras, to_canonical)}
    if layer.use_bias:
        out["bias"] = _slot(layer.bias)
    return out


def _depthwise(layer) -> dict:
    swap = lambda a: a.transpose(0, 1, 3, 2)  # (kh, kw, 1, C) <-> (kh, kw, C, 1)
    return _kernel_bias(layer, swap, swap)


def _batchnorm_slots(layer) -> dict:
    return {"scale": _slot(layer.gamma), "bias": _slot(layer.beta),
            "mean": _slot(layer.moving_mean), "var": _slot(layer.moving_variance)}


def _layernorm_slots(layer) -> dict:
    return {"scale": _slot(layer.gamma), "bias": _slot(layer.beta)}


def _encoder_slots(layer: EncoderBlock) -> dict:
    att = layer.attention
    out = {**canonical.prefixed("ln_1", _layernorm_slots(layer.ln_1)),
           **canonical.prefixed("ln_2", _layernorm_slots(layer.ln_2)),
           **canonical.prefixed("mlp_1", _kernel_bias(layer.mlp_1)),
           **canonical.prefixed("mlp_2", _kernel_bias(layer.mlp_2))}
    dense = {"query": att._query_dense, "key": att._key_dense, "value": att._value_dense,
             "out": att._output_dense}
    return {**out, **canonical.attention_slots(
        {proj: (d.kernel, d.bias) for proj, d in dense.items()}, _slot)}


# Keras layer type -> its canonical arrays (nearest base class first: DepthwiseConv2D is
# looked up before Layer).  Layers without weights map to nothing.
_SLOTS = {
    layers.DepthwiseConv2D: _depthwise,
    layers.Conv2D: _kernel_bias,
    layers.Dense: _kernel_bias,
    layers.BatchNormalization: _batchnorm_slots,
    layers.LayerNormalization: _layernorm_slots,
    ClassToken: lambda layer: {"token": _slot(layer.token)},
    PositionEmbedding: lambda layer: {"embedding": _slot(layer.embedding)},
    EncoderBlock: _encoder_slots,
    layers.Layer: lambda layer: {},
}


def slots(model) -> dict[str, canonical.Slot]:
    """Canonical key -> where that array lives in ``model``."""
    out = {}
    for layer in model.layers:
        per_layer = canonical.handler(_SLOTS, layer, "canonical weights")(layer)
        out.update(canonical.prefixed(ir_name(layer.name), per_layer))
    return out


def count_parameters(model) -> int:
    return int(sum(math.prod(v.shape) for v in model.trainable_weights))
