"""The layer-graph IR: every architecture is written once as a tuple of these nodes.

The three builders (``build_keras``, ``build_torch``, ``build_flax``) read nothing else,
so anything that changes the function a model computes must be a field here, never a
builder default.  Conventions that the builders rely on:

* Tensors are described channels-last (H, W, C), tokens as (L, D), vectors as (F,).
  The PyTorch builder works NCHW internally but flattens in NHWC order, so a Dense layer
  after ``Flatten`` has the same weights in all three frameworks.
* Padding is explicit ``((top, bottom), (left, right))``.  Architectures may write
  ``"same"`` (TensorFlow's rule, which pads the extra pixel at the end when the total is
  odd) or ``"valid"``; :func:`models.graph.resolve` turns these into explicit pairs
  for the actual input size before a builder sees them.
* ``BatchNorm.momentum`` uses the PyTorch convention (weight of the *new* batch
  statistic): PyTorch's default 0.1 is Keras/Flax ``momentum=0.9``. The running
  variance follows PyTorch's rule too: it is updated with the batch's unbiased variance
  (n/(n-1) x the biased one, n values per channel), while the batch itself is normalized
  with the biased one. Keras and Flax natively update with the biased variance; their
  builders' BatchNorm layers apply PyTorch's rule.
* Initializers are data too (:class:`Init`), so the canonical numpy initialization and
  each framework's draw follow the same distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

Padding = str | tuple[tuple[int, int], tuple[int, int]]

ACTIVATIONS = ("relu", "relu6", "hardswish", "hardsigmoid", "silu", "sigmoid", "gelu")


@dataclass(frozen=True)
class Init:
    """How a parameter is drawn.

    kind:
      * ``zeros`` / ``ones``
      * ``normal``: N(0, scale²) (``scale`` = std)
      * ``uniform``: U(-scale, scale)
      * ``variance_scaling``: Keras/PyTorch-style fan-based draw, resolved per parameter
        from its fans: ``scale`` as in Keras, ``mode`` fan_in|fan_out|fan_avg,
        ``distribution`` normal (untruncated, = kaiming_normal) | truncated_normal (Keras:
        truncated at 2 std, std corrected by 0.8796) | uniform.
      * ``fan_in_uniform``: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) of the layer's kernel,
        PyTorch's default bias of Linear/Conv.
    """

    kind: str
    scale: float = 0.0
    mode: str = "fan_in"
    distribution: str = "normal"


ZEROS = Init("zeros")
ONES = Init("ones")
# Keras' defaults for Dense/Conv kernels.
GLOROT_UNIFORM = Init("variance_scaling", 1.0, "fan_avg", "uniform")
# keras.initializers.VarianceScaling() with its defaults.
KERAS_VARIANCE_SCALING = Init("variance_scaling", 1.0, "fan_in", "truncated_normal")
# torch.nn.init.kaiming_normal_(mode="fan_out", nonlinearity="relu"), torchvision's conv init.
KAIMING_NORMAL_FAN_OUT = Init("variance_scaling", 2.0, "fan_out", "normal")
# PyTorch's default Linear/Conv weight init: kaiming_uniform_(a=sqrt(5)) = U(±1/sqrt(fan_in)).
TORCH_DEFAULT_KERNEL = Init("variance_scaling", 1.0 / 3.0, "fan_in", "uniform")
TORCH_DEFAULT_BIAS = Init("fan_in_uniform")


@dataclass(frozen=True)
class Conv:
    name: str
    filters: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: Padding = "valid"
    # 1, or equal to the input channels and ``filters`` (depthwise); nothing in between is
    # needed by the reference models and Keras has no idiomatic layer for it.
    groups: int = 1
    bias: bool = True
    kernel_init: Init = GLOROT_UNIFORM
    bias_init: Init = ZEROS


@dataclass(frozen=True)
class BatchNorm:
    name: str
    momentum: float = 0.1  # PyTorch convention; Keras/Flax momentum = 1 - this
    eps: float = 1e-5


@dataclass(frozen=True)
class Activation:
    fn: str  # one of ACTIVATIONS; "gelu" is the exact (erf) GELU


@dataclass(frozen=True)
class MaxPool:
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: Padding = "valid"  # padded elements never win (-inf), as in all three frameworks


@dataclass(frozen=True)
class GlobalPool:
    kind: str  # "avg" | "max"; (H, W, C) -> (C,)


@dataclass(frozen=True)
class SqueezeExcite:
    """x * gate(expand(act(reduce(mean_hw(x))))) with 1x1 convolutions, as torchvision.ops."""

    name: str
    reduce: Conv
    expand: Conv
    activation: str
    gate: str


@dataclass(frozen=True)
class Residual:
    """out = drop_path(body(x)) + shortcut(x); empty shortcut = identity.

    ``drop_path`` is stochastic depth in torchvision's "row" mode: in training each
    sample's branch is dropped with this probability and survivors scaled by 1/(1-p).
    """

    body: tuple
    shortcut: tuple = ()
    drop_path: float = 0.0


@dataclass(frozen=True)
class Dropout:
    rate: float


@dataclass(frozen=True)
class Flatten:
    """(H, W, C) -> (H*W*C,) in row-major NHWC order."""


@dataclass(frozen=True)
class Dense:
    name: str
    units: int
    bias: bool = True
    kernel_init: Init = GLOROT_UNIFORM
    bias_init: Init = ZEROS


@dataclass(frozen=True)
class LayerNorm:
    name: str
    eps: float = 1e-6


@dataclass(frozen=True)
class Tokens:
    """(H, W, D) -> (H*W, D), row-major (as torchvision's flatten(2).transpose(1, 2))."""


@dataclass(frozen=True)
class ClassToken:
    """Prepends a learned token: (L, D) -> (L+1, D)."""

    name: str
    init: Init = ZEROS


@dataclass(frozen=True)
class PositionEmbedding:
    """Adds a learned (1, L, D) embedding sized to the actual token count."""

    name: str
    init: Init = Init("normal", 0.02)


@dataclass(frozen=True)
class EncoderBlock:
    """Pre-norm transformer block, torchvision's ``EncoderBlock``:

    x = x + dropout(attention(ln_1(x)));  x = x + mlp(ln_2(x)),
    mlp = Dense(mlp_dim) -> GELU(exact) -> Dropout -> Dense(D) -> Dropout.
    """

    name: str
    heads: int
    mlp_dim: int
    dropout: float = 0.0
    attention_dropout: float = 0.0
    eps: float = 1e-6
    qkv_init: Init = GLOROT_UNIFORM
    qkv_bias_init: Init = ZEROS
    out_init: Init = TORCH_DEFAULT_KERNEL
    out_bias_init: Init = ZEROS
    mlp_init: Init = GLOROT_UNIFORM
    mlp_bias_init: Init = Init("normal", 1e-6)


@dataclass(frozen=True)
class TakeToken:
    """(L, D) -> (D,): the class token's output."""

    index: int = 0


Node = (
    Conv | BatchNorm | Activation | MaxPool | GlobalPool | SqueezeExcite | Residual | Dropout
    | Flatten | Dense | LayerNorm | Tokens | ClassToken | PositionEmbedding | EncoderBlock | TakeToken
)


def square(k: int) -> tuple[int, int]:
    return (k, k)


def symmetric(p: int) -> tuple[tuple[int, int], tuple[int, int]]:
    return ((p, p), (p, p))
