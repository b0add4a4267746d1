"""torchvision's published weights as canonical weights, and back.

The torchvision architectures here are written layer for layer with torchvision's module
names (models/architectures), so each canonical array has one torchvision state-dict entry
it comes from: a convolution's ``weight`` (O, I, kh, kw) is the canonical kernel
(kh, kw, I, O), a Linear's ``weight`` (out, in) the transposed kernel, BatchNorm's
``weight, bias, running_mean, running_var`` its ``scale, bias, mean, var``, an encoder
block's packed ``in_proj_weight`` (3D, D) the query, key and value kernels. `links`
lists those correspondences for an architecture, walking its IR; loading a state dict,
writing one back and checking one against the architecture are written once, over them.

`for_dataset` then makes the weights a run starts from, the same arrays in every
framework: the first convolution adapted to the dataset's channels (summed over RGB for
one channel, as timm's adapt_input_conv does), ViT's position embedding interpolated to
the run's resolution (bicubic, corners aligned: torchvision's interpolate_embeddings),
and the classifier replaced by a fresh one for the dataset's classes, drawn from the
run's seed with the layer's own initializer.

Reading the files (downloads, torch.load(weights_only=True), safetensors) is engines/
pretrained.py's; this module only maps numpy arrays and imports no framework.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from . import canonical, graph, ir
from .registry import get_architecture


@dataclass(frozen=True)
class PublishedWeights:
    """One torchvision weights file: where it is published, and what of the model the
    lab replaces or adapts when it starts a run from it."""

    architecture: str
    tag: str  # torchvision's name of the weights (the DEFAULT ones)
    url: str
    head: str  # the classifier layer, replaced for the dataset's classes
    stem: str  # the first convolution, adapted to the dataset's channels
    resolution: int = 224
    channels: int = 3
    classes: int = 1000

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def sha256_prefix(self) -> str:
        """torch.hub's check: the hex digits after the last '-' of the file name begin the
        file's SHA-256."""
        match = _HASH_IN_NAME.search(self.filename)
        if not match:
            raise ValueError(f"{self.filename} carries no hash in its name")
        return match.group(1)


_HASH_IN_NAME = re.compile(r"-([a-f0-9]*)\.")  # torch.hub.HASH_REGEX

# torchvision's DEFAULT weights for each architecture the lab defines from torchvision.
TORCHVISION = {w.architecture: w for w in (
    PublishedWeights("resnet50", "ResNet50_Weights.IMAGENET1K_V2",
                     "https://download.pytorch.org/models/resnet50-11ad3fa6.pth", head="fc", stem="conv1"),
    PublishedWeights("mobilenet_v3_small", "MobileNet_V3_Small_Weights.IMAGENET1K_V1",
                     "https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth",
                     head="classifier.3", stem="features.0.0"),
    PublishedWeights("efficientnet_b0", "EfficientNet_B0_Weights.IMAGENET1K_V1",
                     "https://download.pytorch.org/models/efficientnet_b0_rwightman-7f5810bc.pth",
                     head="classifier.1", stem="features.0.0"),
    PublishedWeights("vit_b_16", "ViT_B_16_Weights.IMAGENET1K_V1",
                     "https://download.pytorch.org/models/vit_b_16-c867db91.pth",
                     head="heads.head", stem="conv_proj"),
)}

# BatchNorm's step counter: in every torchvision state dict, no canonical array.
IGNORED_SUFFIX = ".num_batches_tracked"
# Names the published ViT file still uses for its MLP (torchvision renamed them in 0.14
# and converts them when loading: MLPBlock._load_from_state_dict).
_LEGACY_MLP = {".mlp.0.": ".mlp.linear_1.", ".mlp.3.": ".mlp.linear_2."}


def published(architecture: str) -> PublishedWeights:
    try:
        return TORCHVISION[architecture]
    except KeyError:
        raise ValueError(f"torchvision publishes no weights the lab maps for {architecture!r}; pretrained "
                         f"weights exist for {', '.join(TORCHVISION)}") from None


# --- the correspondences -------------------------------------------------------------------

@dataclass(frozen=True)
class Link:
    """One torchvision state-dict entry and the canonical arrays it holds."""

    key: str  # torchvision's name
    shape: tuple[int, ...]  # torchvision's shape
    canonical: tuple[str, ...]
    to_canonical: Callable[[np.ndarray], tuple[np.ndarray, ...]]
    to_torchvision: Callable[..., np.ndarray]


def _one(key, shape, ckey, forward=lambda a: a, backward=lambda a: a) -> Link:
    return Link(key, tuple(shape), (ckey,), lambda a: (forward(a),), backward)


def _conv(node: ir.Conv, in_shape) -> list[Link]:
    kh, kw = node.kernel
    cin = in_shape[2] // node.groups
    out = [_one(f"{node.name}.weight", (node.filters, cin, kh, kw), f"{node.name}/kernel",
                lambda a: a.transpose(2, 3, 1, 0), lambda a: a.transpose(3, 2, 0, 1))]
    if node.bias:
        out.append(_one(f"{node.name}.bias", (node.filters,), f"{node.name}/bias"))
    return out


def _dense(name: str, d_in: int, d_out: int, bias: bool = True, canonical_name: str | None = None) -> list[Link]:
    c = canonical_name or name
    out = [_one(f"{name}.weight", (d_out, d_in), f"{c}/kernel", lambda a: a.T, lambda a: a.T)]
    if bias:
        out.append(_one(f"{name}.bias", (d_out,), f"{c}/bias"))
    return out


def _norm(name: str, channels: int, arrays, canonical_name: str | None = None) -> list[Link]:
    c = canonical_name or name
    return [_one(f"{name}.{tv}", (channels,), f"{c}/{arr}") for arr, tv in arrays]


_BATCHNORM = (("scale", "weight"), ("bias", "bias"), ("mean", "running_mean"), ("var", "running_var"))
_LAYERNORM = (("scale", "weight"), ("bias", "bias"))


def _encoder(node: ir.EncoderBlock, in_shape) -> list[Link]:
    d, n = in_shape[1], node.name
    qkv = tuple(f"{n}/attention/{p}/kernel" for p in ("query", "key", "value"))
    qkv_bias = tuple(f"{n}/attention/{p}/bias" for p in ("query", "key", "value"))
    return [
        *_norm(f"{n}.ln_1", d, _LAYERNORM, f"{n}/ln_1"),
        # nn.MultiheadAttention packs q, k, v as rows of one (3D, D) matrix: x @ W.T.
        Link(f"{n}.self_attention.in_proj_weight", (3 * d, d), qkv,
             lambda a: tuple(part.T for part in np.split(a, 3)), lambda *ks: np.concatenate([k.T for k in ks])),
        Link(f"{n}.self_attention.in_proj_bias", (3 * d,), qkv_bias,
             lambda a: tuple(np.split(a, 3)), lambda *bs: np.concatenate(bs)),
        *_dense(f"{n}.self_attention.out_proj", d, d, canonical_name=f"{n}/attention/out"),
        *_norm(f"{n}.ln_2", d, _LAYERNORM, f"{n}/ln_2"),
        *_dense(f"{n}.mlp.0", d, node.mlp_dim, canonical_name=f"{n}/mlp_1"),
        *_dense(f"{n}.mlp.3", node.mlp_dim, d, canonical_name=f"{n}/mlp_2"),
    ]


# IR node type -> its torchvision entries (nodes without parameters have none).
_LINKS = {
    ir.Conv: _conv,
    ir.Dense: lambda node, s: _dense(node.name, s[-1], node.units, node.bias),
    ir.BatchNorm: lambda node, s: _norm(node.name, s[-1], _BATCHNORM),
    ir.LayerNorm: lambda node, s: _norm(node.name, s[-1], _LAYERNORM),
    # nn.Parameters of their own: the module attribute is the whole name.
    ir.ClassToken: lambda node, s: [_one(node.name, (1, 1, s[1]), f"{node.name}/token")],
    ir.PositionEmbedding: lambda node, s: [_one(node.name, (1, *s), f"{node.name}/embedding")],
    ir.EncoderBlock: _encoder,
}


def links(architecture: str, resolution: int | None = None, channels: int | None = None,
          num_classes: int | None = None) -> list[Link]:
    """Every torchvision state-dict entry of `architecture` (at torchvision's published
    input and classes unless given) and the canonical arrays it holds."""
    w = published(architecture)
    shape = (resolution or w.resolution, resolution or w.resolution, channels or w.channels)
    nodes = get_architecture(architecture).ir(shape[0], shape[2], num_classes or w.classes)
    out = []
    for node, in_shape, _ in graph.walk(nodes, shape):
        make = _LINKS.get(type(node))
        if make is not None:
            out.extend(make(node, in_shape))
    return out


# --- torchvision state dict <-> canonical -----------------------------------------------------

def _normalized(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The state dict with the legacy ViT MLP names renamed to today's."""
    out = {}
    for key, value in state.items():
        for new, old in _LEGACY_MLP.items():
            if old in key:
                key = key.replace(old, new)
        out[key] = value
    return out


def check_state_dict(architecture: str, state: Mapping[str, np.ndarray]) -> None:
    """ValueError naming what is missing, unexpected or of the wrong shape, unless `state`
    is a torchvision state dict of `architecture` as published (every entry there, BatchNorm's
    step counters aside, and nothing else)."""
    state = _normalized(state)
    expected = {link.key: link.shape for link in links(architecture)}
    present = {k for k in state if not k.endswith(IGNORED_SUFFIX)}
    missing, extra = sorted(set(expected) - present), sorted(present - set(expected))
    if missing or extra:
        raise ValueError(f"not a torchvision {architecture} state dict: missing {missing[:4]}, "
                         f"unexpected {extra[:4]} ({len(missing)} missing, {len(extra)} unexpected)")
    for key, shape in expected.items():
        if tuple(np.shape(state[key])) != shape:
            raise ValueError(f"torchvision {architecture} state dict: {key} has shape {tuple(np.shape(state[key]))}, "
                             f"the architecture needs {shape}")


def from_torchvision(architecture: str, state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The canonical weights (float32) of a torchvision state dict of `architecture` as
    published (224 px, 3 channels, 1000 classes)."""
    check_state_dict(architecture, state)
    state = _normalized(state)
    out = {}
    for link in links(architecture):
        arrays = link.to_canonical(np.asarray(state[link.key], dtype=np.float32))
        out.update({k: np.ascontiguousarray(a) for k, a in zip(link.canonical, arrays)})
    return out


def to_torchvision(architecture: str, weights: Mapping[str, np.ndarray], **shape) -> dict[str, np.ndarray]:
    """The torchvision state dict (float32 numpy; BatchNorm's step counters are not
    canonical and are left out) of canonical `weights`; `shape` (resolution, channels,
    num_classes) when they are not torchvision's published ones."""
    return {link.key: np.ascontiguousarray(link.to_torchvision(*(weights[k] for k in link.canonical)))
            for link in links(architecture, **shape)}


# --- the weights a run starts from ------------------------------------------------------------

def adapt_stem(kernel: np.ndarray, channels: int) -> np.ndarray:
    """A first-convolution kernel (kh, kw, 3, O) for `channels` input channels: summed
    over RGB for one channel (a grey image seen as equal R, G and B gives the same
    response), RGB tiled and scaled by 3/channels for more (timm's adapt_input_conv)."""
    have = kernel.shape[2]
    if channels == have:
        return kernel
    if channels == 1:
        return kernel.sum(axis=2, keepdims=True)
    tiled = np.tile(kernel, (1, 1, math.ceil(channels / have), 1))[:, :, :channels]
    return (tiled * (have / channels)).astype(np.float32)


def _cubic_weights(t: float, a: float = -0.75) -> np.ndarray:
    """The four taps of PyTorch's bicubic kernel (A = -0.75) at fraction t."""
    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.array([far(t + 1), near(t), near(1 - t), far(2 - t)])


def _resize_axis(grid: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Bicubic resampling of one axis with corners aligned, border taps clamped:
    torch.nn.functional.interpolate(mode="bicubic", align_corners=True) along `axis`."""
    n = grid.shape[axis]
    scale = (n - 1) / (size - 1) if size > 1 else 0.0
    rows = []
    for i in range(size):
        pos = scale * i
        base = math.floor(pos)
        taps = _cubic_weights(pos - base)
        idx = np.clip(np.arange(base - 1, base + 3), 0, n - 1)
        rows.append(np.tensordot(taps, np.take(grid, idx, axis=axis), axes=([0], [axis])))
    return np.moveaxis(np.stack(rows), 0, axis)


def resize_position_embedding(embedding: np.ndarray, tokens: int) -> np.ndarray:
    """A ViT position embedding (1, 1 + g*g, D) for 1 + tokens positions (a square grid):
    the class token's row kept, the grid's rows resampled as torchvision's
    interpolate_embeddings does."""
    _, length, d = embedding.shape
    old, new = math.isqrt(length - 1), math.isqrt(tokens)
    if old * old != length - 1 or new * new != tokens:
        raise ValueError(f"position embedding of {length} rows or {tokens} tokens is not a square grid")
    if old == new:
        return embedding
    grid = embedding[0, 1:].reshape(old, old, d).astype(np.float64)
    grid = _resize_axis(_resize_axis(grid, new, 0), new, 1)
    return np.concatenate([embedding[:, :1], grid.reshape(1, tokens, d).astype(np.float32)], axis=1)


def for_dataset(architecture: str, weights: Mapping[str, np.ndarray], *, resolution: int, channels: int,
                num_classes: int, seed: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """The canonical weights a run on (resolution, channels, num_classes) starts from,
    from the canonical weights of the published model, and what was changed (for the
    result's notes). The head is drawn from `seed` with its layer's initializer, so it is
    the same in every framework and for every framework's run of one seed."""
    w = published(architecture)
    specs = graph.param_specs(get_architecture(architecture).ir(resolution, channels, num_classes),
                              (resolution, resolution, channels))
    out = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
    notes = [f"initial weights: torchvision {architecture} ({w.tag} layout)"]
    stem = f"{w.stem}/kernel"
    if channels != out[stem].shape[2]:
        out[stem] = adapt_stem(out[stem], channels)
        notes.append(f"{w.stem}: RGB kernel {'summed' if channels == 1 else 'tiled'} for {channels} channel(s)")
    for spec in specs:
        if spec.key.endswith("/embedding") and out[spec.key].shape != spec.shape:
            out[spec.key] = resize_position_embedding(out[spec.key], spec.shape[1] - 1)
            notes.append(f"{spec.key.split('/')[0]}: {spec.shape[1] - 1} patch positions resampled (bicubic)")
    head = [s for s in specs if s.key.startswith(f"{w.head}/")]
    out.update(canonical.draw(head, seed))
    notes.append(f"{w.head}: new {num_classes}-class classifier drawn from seed {seed}")
    canonical.check(specs, out)
    return out, notes
