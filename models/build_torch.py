"""PyTorch builder: IR -> torch.nn.Module (input NCHW float32 in [0, 1], output logits).

Imports torch only; never torchvision.  Each module that owns canonical weights carries a
``canonical_name`` attribute (the IR layer name) so weights are found by name, and the
module tree keeps the IR's nesting (Sequential / residual blocks) as torchvision does.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import graph, ir

_ACTIVATIONS = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish,
    "hardsigmoid": nn.Hardsigmoid, "silu": nn.SiLU, "sigmoid": nn.Sigmoid,
    "gelu": lambda: nn.GELU(approximate="none"),
}


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth(p, "row"), written here to keep torchvision out."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        noise = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)
        return x * noise.bernoulli_(survival).div_(survival)


class Residual(nn.Module):
    def __init__(self, body: nn.Module, shortcut: nn.Module, drop_path: float):
        super().__init__()
        self.block = body
        self.shortcut = shortcut
        self.stochastic_depth = StochasticDepth(drop_path)

    def forward(self, x):
        return self.stochastic_depth(self.block(x)) + self.shortcut(x)


class SqueezeExcitation(nn.Module):
    def __init__(self, fc1: nn.Conv2d, fc2: nn.Conv2d, activation: str, gate: str):
        super().__init__()
        self.fc1, self.fc2 = fc1, fc2
        self.activation = _ACTIVATIONS[activation]()
        self.scale_activation = _ACTIVATIONS[gate]()

    def forward(self, x):
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(scale))))
        return scale * x


class GlobalPool(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, x):
        return x.mean(dim=(2, 3)) if self.kind == "avg" else x.amax(dim=(2, 3))


class FlattenNHWC(nn.Module):
    """Flattens in NHWC order so the following Dense has Keras'/Flax' weight layout."""

    def forward(self, x):
        return x.permute(0, 2, 3, 1).flatten(1)


class Tokens(nn.Module):
    def forward(self, x):
        return x.flatten(2).transpose(1, 2)


class ClassToken(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.token = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x):
        return torch.cat([self.token.expand(x.shape[0], -1, -1), x], dim=1)


class PositionEmbedding(nn.Module):
    def __init__(self, length: int, dim: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.zeros(1, length, dim))

    def forward(self, x):
        return x + self.embedding


class EncoderBlock(nn.Module):
    """torchvision's vision_transformer.EncoderBlock."""

    def __init__(self, node: ir.EncoderBlock, dim: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=node.eps)
        self.self_attention = nn.MultiheadAttention(dim, node.heads, dropout=node.attention_dropout,
                                                    batch_first=True)
        self.dropout = nn.Dropout(node.dropout)
        self.ln_2 = nn.LayerNorm(dim, eps=node.eps)
        self.mlp = nn.Sequential(nn.Linear(dim, node.mlp_dim), nn.GELU(approximate="none"),
                                 nn.Dropout(node.dropout), nn.Linear(node.mlp_dim, dim),
                                 nn.Dropout(node.dropout))

    def forward(self, x):
        y = self.ln_1(x)
        y, _ = self.self_attention(y, y, y, need_weights=False)
        x = x + self.dropout(y)
        return x + self.mlp(self.ln_2(x))


class TakeToken(nn.Module):
    def __init__(self, index: int):
        super().__init__()
        self.index = index

    def forward(self, x):
        return x[:, self.index]


def _tag(module: nn.Module, name: str) -> nn.Module:
    module.canonical_name = name
    return module


def _conv(node: ir.Conv, cin: int) -> list[nn.Module]:
    (t, b), (l, r) = node.padding
    out = []
    if t == b and l == r:
        pad = (t, l)
    else:  # asymmetric (TensorFlow SAME with an odd total): pad explicitly, as Keras does
        out.append(nn.ZeroPad2d((l, r, t, b)))
        pad = 0
    out.append(_tag(nn.Conv2d(cin, node.filters, node.kernel, node.stride, pad,
                              groups=node.groups, bias=node.bias), node.name))
    return out


def _maxpool(node: ir.MaxPool) -> list[nn.Module]:
    (t, b), (l, r) = node.padding
    if t == b and l == r and 2 * t <= node.kernel[0] and 2 * l <= node.kernel[1]:
        return [nn.MaxPool2d(node.kernel, node.stride, (t, l))]
    return [nn.ConstantPad2d((l, r, t, b), -math.inf), nn.MaxPool2d(node.kernel, node.stride)]


def _sequential(nodes, shape) -> tuple[nn.Sequential, tuple]:
    modules = []
    for node in nodes:
        modules.extend(_modules(node, shape))
        shape = graph.out_shape(node, shape)
    return nn.Sequential(*modules), shape


def _modules(node, shape) -> list[nn.Module]:
    if isinstance(node, ir.Conv):
        return _conv(node, shape[2])
    if isinstance(node, ir.BatchNorm):
        # IR momentum is already PyTorch's convention.
        return [_tag(nn.BatchNorm2d(shape[2], eps=node.eps, momentum=node.momentum), node.name)]
    if isinstance(node, ir.Activation):
        return [_ACTIVATIONS[node.fn]()]
    if isinstance(node, ir.MaxPool):
        return _maxpool(node)
    if isinstance(node, ir.GlobalPool):
        return [GlobalPool(node.kind)]
    if isinstance(node, ir.SqueezeExcite):
        c = shape[2]
        fc1 = _conv(node.reduce, c)[-1]
        fc2 = _conv(node.expand, node.reduce.filters)[-1]
        return [SqueezeExcitation(fc1, fc2, node.activation, node.gate)]
    if isinstance(node, ir.Residual):
        body, _ = _sequential(node.body, shape)
        shortcut = _sequential(node.shortcut, shape)[0] if node.shortcut else nn.Identity()
        return [Residual(body, shortcut, node.drop_path)]
    if isinstance(node, ir.Dropout):
        return [nn.Dropout(node.rate)]
    if isinstance(node, ir.Flatten):
        return [FlattenNHWC()] if len(shape) == 3 else [nn.Flatten()]
    if isinstance(node, ir.Dense):
        return [_tag(nn.Linear(shape[-1], node.units, bias=node.bias), node.name)]
    if isinstance(node, ir.LayerNorm):
        return [_tag(nn.LayerNorm(shape[-1], eps=node.eps), node.name)]
    if isinstance(node, ir.Tokens):
        return [Tokens()]
    if isinstance(node, ir.ClassToken):
        return [_tag(ClassToken(shape[1]), node.name)]
    if isinstance(node, ir.PositionEmbedding):
        return [_tag(PositionEmbedding(shape[0], shape[1]), node.name)]
    if isinstance(node, ir.EncoderBlock):
        return [_tag(EncoderBlock(node, shape[1]), node.name)]
    if isinstance(node, ir.TakeToken):
        return [TakeToken(node.index)]
    raise TypeError(f"unknown IR node {node!r}")


class IRModel(nn.Sequential):
    """The built model; a plain nn.Sequential whose ``input_shape`` is (C, H, W)."""


def build(nodes, input_shape: tuple[int, int, int], seed: int = 0) -> nn.Module:
    """``input_shape`` is (H, W, C) as in the IR; the module takes NCHW.

    Parameters get PyTorch's own layer defaults (drawn with ``torch.manual_seed(seed)``
    locally); ``models.build_model`` overwrites them with canonical weights unless asked
    for the framework's own initialization.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        body, _ = _sequential(nodes, tuple(input_shape))
    model = IRModel(*body)
    model.input_shape = (input_shape[2], input_shape[0], input_shape[1])
    return model


# --- canonical weights ----------------------------------------------------------------

def _named(model: nn.Module) -> dict[str, nn.Module]:
    return {m.canonical_name: m for m in model.modules() if hasattr(m, "canonical_name")}


def _layer_of(key: str) -> tuple[str, str]:
    name, _, param = key.partition("/")
    return name, param


def _target(module: nn.Module, param: str):
    """The tensor holding canonical ``param`` and the converters (to torch, to canonical)."""
    if isinstance(module, nn.Conv2d):
        t = {"kernel": module.weight, "bias": module.bias}[param]
        if param == "kernel":  # HWIO <-> OIHW
            return t, (lambda a: a.transpose(3, 2, 0, 1)), (lambda a: a.transpose(2, 3, 1, 0))
        return t, None, None
    if isinstance(module, nn.Linear):
        t = {"kernel": module.weight, "bias": module.bias}[param]
        if param == "kernel":
            return t, (lambda a: a.T), (lambda a: a.T)
        return t, None, None
    if isinstance(module, nn.BatchNorm2d):
        return {"scale": module.weight, "bias": module.bias, "mean": module.running_mean,
                "var": module.running_var}[param], None, None
    if isinstance(module, nn.LayerNorm):
        return {"scale": module.weight, "bias": module.bias}[param], None, None
    if isinstance(module, ClassToken):
        return module.token, None, None
    if isinstance(module, PositionEmbedding):
        return module.embedding, None, None
    raise TypeError(f"no canonical weights on {type(module).__name__}")


def _encoder_arrays(block: EncoderBlock, d: int) -> dict[str, tuple]:
    """param -> (tensor, slice of rows or None, transpose?) for one encoder block."""
    att = block.self_attention
    out = {"ln_1/scale": (block.ln_1.weight, None, False), "ln_1/bias": (block.ln_1.bias, None, False),
           "ln_2/scale": (block.ln_2.weight, None, False), "ln_2/bias": (block.ln_2.bias, None, False),
           "attention/out/kernel": (att.out_proj.weight, None, True),
           "attention/out/bias": (att.out_proj.bias, None, False),
           "mlp_1/kernel": (block.mlp[0].weight, None, True), "mlp_1/bias": (block.mlp[0].bias, None, False),
           "mlp_2/kernel": (block.mlp[3].weight, None, True), "mlp_2/bias": (block.mlp[3].bias, None, False)}
    for i, proj in enumerate(("query", "key", "value")):
        rows = slice(i * d, (i + 1) * d)  # PyTorch packs q, k, v row-wise in in_proj
        out[f"attention/{proj}/kernel"] = (att.in_proj_weight, rows, True)
        out[f"attention/{proj}/bias"] = (att.in_proj_bias, rows, False)
    return out


def _resolve(model: nn.Module, keys):
    """Yields (key, tensor, rows, to_torch, to_canonical) for every canonical key."""
    named = _named(model)
    for key in keys:
        name, param = _layer_of(key)
        if name not in named:
            raise KeyError(f"the model has no layer {name!r} (for weights[{key!r}])")
        module = named[name]
        if isinstance(module, EncoderBlock):
            tensor, rows, transpose = _encoder_arrays(module, module.ln_1.normalized_shape[0])[param]
            f = (lambda a: a.T) if transpose else None
            yield key, tensor, rows, f, f
        else:
            tensor, to_torch, to_canon = _target(module, param)
            yield key, tensor, None, to_torch, to_canon


def canonical_keys(model: nn.Module) -> list[str]:
    keys = []
    for name, module in _named(model).items():
        if isinstance(module, EncoderBlock):
            keys += [f"{name}/{p}" for p in _encoder_arrays(module, module.ln_1.normalized_shape[0])]
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            keys += [f"{name}/kernel"] + ([f"{name}/bias"] if module.bias is not None else [])
        elif isinstance(module, nn.BatchNorm2d):
            keys += [f"{name}/{p}" for p in ("scale", "bias", "mean", "var")]
        elif isinstance(module, nn.LayerNorm):
            keys += [f"{name}/scale", f"{name}/bias"]
        elif isinstance(module, ClassToken):
            keys.append(f"{name}/token")
        elif isinstance(module, PositionEmbedding):
            keys.append(f"{name}/embedding")
    return keys


@torch.no_grad()
def load(model: nn.Module, weights: dict[str, np.ndarray]) -> None:
    for key, tensor, rows, to_torch, _ in _resolve(model, weights):
        array = np.asarray(weights[key], dtype=np.float32)
        if to_torch is not None:
            array = to_torch(array)
        target = tensor if rows is None else tensor[rows]
        if tuple(target.shape) != array.shape:
            raise ValueError(f"weights[{key!r}]: shape {array.shape} does not fit {tuple(target.shape)}")
        target.copy_(torch.from_numpy(np.ascontiguousarray(array)))


@torch.no_grad()
def extract(model: nn.Module) -> dict[str, np.ndarray]:
    out = {}
    for key, tensor, rows, _, to_canon in _resolve(model, canonical_keys(model)):
        array = (tensor if rows is None else tensor[rows]).detach().cpu().float().numpy()
        out[key] = np.ascontiguousarray(to_canon(array) if to_canon is not None else array)
    return out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
