"""PyTorch builder: IR -> torch.nn.Module (input NCHW float32 in [0, 1], output logits).

Imports torch only; never torchvision.  Each module that owns canonical weights carries a
``canonical_name`` attribute (the IR layer name) so weights are found by name, and the
module tree keeps the IR's nesting (Sequential / residual blocks) as torchvision does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import canonical, graph, ir

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
    (top, bottom), (left, right) = node.padding
    out = []
    if top == bottom and left == right:
        pad = (top, left)
    else:  # asymmetric (TensorFlow SAME with an odd total): pad explicitly, as Keras does
        out.append(nn.ZeroPad2d((left, right, top, bottom)))
        pad = 0
    out.append(_tag(nn.Conv2d(cin, node.filters, node.kernel, node.stride, pad,
                              groups=node.groups, bias=node.bias), node.name))
    return out


def _maxpool(node: ir.MaxPool) -> list[nn.Module]:
    (top, bottom), (left, right) = node.padding
    if top == bottom and left == right and 2 * top <= node.kernel[0] and 2 * left <= node.kernel[1]:
        return [nn.MaxPool2d(node.kernel, node.stride, (top, left))]
    return [nn.ConstantPad2d((left, right, top, bottom), -math.inf), nn.MaxPool2d(node.kernel, node.stride)]


def _sequential(nodes, shape) -> tuple[nn.Sequential, tuple]:
    modules = []
    for node in nodes:
        modules.extend(_modules(node, shape))
        shape = graph.out_shape(node, shape)
    return nn.Sequential(*modules), shape


def _modules(node, shape) -> list[nn.Module]:
    return canonical.handler(LAYERS, node, "PyTorch module")(node, shape)


def _squeeze_excite(node: ir.SqueezeExcite, shape) -> list[nn.Module]:
    fc1 = _conv(node.reduce, shape[2])[-1]
    fc2 = _conv(node.expand, node.reduce.filters)[-1]
    return [SqueezeExcitation(fc1, fc2, node.activation, node.gate)]


def _residual(node: ir.Residual, shape) -> list[nn.Module]:
    body, _ = _sequential(node.body, shape)
    shortcut = _sequential(node.shortcut, shape)[0] if node.shortcut else nn.Identity()
    return [Residual(body, shortcut, node.drop_path)]


# IR node type -> (node, input shape) -> modules.
LAYERS = {
    ir.Conv: lambda node, shape: _conv(node, shape[2]),
    # IR momentum is already PyTorch's convention.
    ir.BatchNorm: lambda node, shape: [_tag(nn.BatchNorm2d(shape[2], eps=node.eps, momentum=node.momentum),
                                            node.name)],
    ir.Activation: lambda node, shape: [_ACTIVATIONS[node.fn]()],
    ir.MaxPool: lambda node, shape: _maxpool(node),
    ir.GlobalPool: lambda node, shape: [GlobalPool(node.kind)],
    ir.SqueezeExcite: _squeeze_excite,
    ir.Residual: _residual,
    ir.Dropout: lambda node, shape: [nn.Dropout(node.rate)],
    ir.Flatten: lambda node, shape: [FlattenNHWC()] if len(shape) == 3 else [nn.Flatten()],
    ir.Dense: lambda node, shape: [_tag(nn.Linear(shape[-1], node.units, bias=node.bias), node.name)],
    ir.LayerNorm: lambda node, shape: [_tag(nn.LayerNorm(shape[-1], eps=node.eps), node.name)],
    ir.Tokens: lambda node, shape: [Tokens()],
    ir.ClassToken: lambda node, shape: [_tag(ClassToken(shape[1]), node.name)],
    ir.PositionEmbedding: lambda node, shape: [_tag(PositionEmbedding(shape[0], shape[1]), node.name)],
    ir.EncoderBlock: lambda node, shape: [_tag(EncoderBlock(node, shape[1]), node.name)],
    ir.TakeToken: lambda node, shape: [TakeToken(node.index)],
}


# torch.compile's Inductor options under which the models built here train correctly.
# torch 2.13's peak-memory reordering (reorder_for_peak_memory, on by default) can move a
# kernel that reads a max-pool backward's scatter_add target ahead of the scatter: the
# gradient below the pool is then exactly zero, silently. pathmnist_cnn at 28 and 32 px
# trained only its dense layers that way (issue 20); eager and aot_eager are right.
TRAINING_COMPILE_OPTIONS = {"reorder_for_peak_memory": False}


def compile_for_training(model: nn.Module) -> nn.Module:
    """``torch.compile(model)`` for a training step, with TRAINING_COMPILE_OPTIONS."""
    return torch.compile(model, options=dict(TRAINING_COMPILE_OPTIONS))


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


def _slot(tensor: torch.Tensor, rows: slice | None = None, transpose: tuple | None = None) -> canonical.Slot:
    """``rows``: the part of a packed tensor (PyTorch packs q, k, v row-wise in in_proj);
    ``transpose``: the axes order between PyTorch's layout and the canonical one, its own
    inverse for the 2-D transposes, not for the convolution kernels (given both ways)."""
    def part():
        return tensor if rows is None else tensor[rows]

    @torch.no_grad()
    def write(array):
        part().copy_(torch.from_numpy(array))

    to_torch, to_canonical = canonical.identity, canonical.identity
    if transpose is not None:
        there, back = transpose
        to_torch, to_canonical = (lambda a: a.transpose(there)), (lambda a: a.transpose(back))
    return canonical.Slot(tuple(part().shape), lambda: part().detach().cpu().float().numpy(), write,
                          to_torch, to_canonical)


_T = ((1, 0), (1, 0))  # dense kernels: (out, in) <-> (in, out)
_HWIO = ((3, 2, 0, 1), (2, 3, 1, 0))  # convolution kernels: HWIO -> OIHW, OIHW -> HWIO


def _kernel_bias(module, transpose) -> dict:
    out = {"kernel": _slot(module.weight, transpose=transpose)}
    if module.bias is not None:
        out["bias"] = _slot(module.bias)
    return out


def _norm_slots(module) -> dict:
    return {"scale": _slot(module.weight), "bias": _slot(module.bias)}


def _encoder_slots(block: EncoderBlock) -> dict:
    att, d = block.self_attention, block.ln_1.normalized_shape[0]
    out = {**canonical.prefixed("ln_1", _norm_slots(block.ln_1)),
           **canonical.prefixed("ln_2", _norm_slots(block.ln_2)),
           **canonical.prefixed("attention/out", _kernel_bias(att.out_proj, _T)),
           **canonical.prefixed("mlp_1", _kernel_bias(block.mlp[0], _T)),
           **canonical.prefixed("mlp_2", _kernel_bias(block.mlp[3], _T))}
    for i, proj in enumerate(("query", "key", "value")):
        rows = slice(i * d, (i + 1) * d)
        out[f"attention/{proj}/kernel"] = _slot(att.in_proj_weight, rows, _T)
        out[f"attention/{proj}/bias"] = _slot(att.in_proj_bias, rows)
    return out


# PyTorch module type -> its canonical arrays.
_SLOTS = {
    nn.Conv2d: lambda m: _kernel_bias(m, _HWIO),
    nn.Linear: lambda m: _kernel_bias(m, _T),
    nn.BatchNorm2d: lambda m: {**_norm_slots(m), "mean": _slot(m.running_mean), "var": _slot(m.running_var)},
    nn.LayerNorm: _norm_slots,
    ClassToken: lambda m: {"token": _slot(m.token)},
    PositionEmbedding: lambda m: {"embedding": _slot(m.embedding)},
    EncoderBlock: _encoder_slots,
}


def slots(model: nn.Module) -> dict[str, canonical.Slot]:
    """Canonical key -> where that array lives in ``model``."""
    out = {}
    for name, module in _named(model).items():
        out.update(canonical.prefixed(name, canonical.handler(_SLOTS, module, "canonical weights")(module)))
    return out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
