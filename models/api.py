"""Public functions of ``models``; frameworks are imported only inside the calls that
need them, so ``import models`` stays free of torch, tensorflow and jax."""

from __future__ import annotations

import importlib
import importlib.util
import os

import numpy as np

from . import canonical, graph
from .registry import get_architecture, list_architectures

# The model builders (not the frameworks: TensorFlow and Keras share the keras builder;
# engines.frameworks says which builder each framework uses).
BUILDERS = ("keras", "pytorch", "jax")
_ALIASES = {"keras": "keras", "tensorflow": "keras", "tf": "keras",
            "pytorch": "pytorch", "torch": "pytorch",
            "jax": "jax", "flax": "jax"}
_BUILDERS = {"keras": "build_keras", "pytorch": "build_torch", "jax": "build_flax"}
INITS = ("canonical", "framework")


def framework_name(framework: str) -> str:
    """'keras' | 'pytorch' | 'jax' for a framework name or alias (tensorflow, torch, flax)."""
    try:
        return _ALIASES[str(framework).lower()]
    except KeyError:
        raise ValueError(f"unknown framework {framework!r}; known: {', '.join(BUILDERS)}") from None


def _builder(framework: str):
    return importlib.import_module(f"{__package__}.{_BUILDERS[framework_name(framework)]}")


def _required_modules(framework: str) -> tuple[str, ...]:
    framework = framework_name(framework)
    if framework == "keras":
        backend = os.environ.get("KERAS_BACKEND", "tensorflow")
        return ("keras", {"torch": "torch", "jax": "jax"}.get(backend, "tensorflow"))
    return {"pytorch": ("torch",), "jax": ("jax", "flax")}[framework]


def is_installed(framework: str) -> bool:
    """Whether the framework's modules can be found, without importing them."""
    return all(importlib.util.find_spec(m) is not None for m in _required_modules(framework))


def _input_shape(resolution: int, channels: int) -> tuple[int, int, int]:
    return (resolution, resolution, channels)


def describe(name: str, resolution: int, channels: int, num_classes: int) -> dict:
    """Parameters and FLOPs from the definition alone (no framework imported).

    ``parameters`` counts trainable parameters (BatchNorm running statistics are not
    parameters; they are ``non_trainable``).  ``flops_per_image`` = 2 x
    ``macs_per_image``, the multiply-accumulates of convolutions, dense layers and
    attention matrix products for one image in inference; element-wise work
    (normalization, activations, pooling, additions, softmax) is not counted.  torchvision
    and fvcore quote MACs as "FLOPs": ResNet-50's "4.09 GFLOPS" is 4.09 G MACs here,
    8.18 GFLOPs.
    """
    info = get_architecture(name)
    nodes = info.ir(resolution, channels, num_classes)
    counts = graph.count(nodes, _input_shape(resolution, channels))
    return {"architecture": name, "resolution": resolution, "channels": channels,
            "num_classes": num_classes, **counts}


def parameter_specs(name: str, *, resolution: int, channels: int, num_classes: int):
    """The canonical arrays (key, shape, initializer, trainable) of an architecture."""
    nodes = get_architecture(name).ir(resolution, channels, num_classes)
    return graph.param_specs(nodes, _input_shape(resolution, channels))


def init_weights(name: str, *, resolution: int, channels: int, num_classes: int,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Canonical float32 weights drawn with numpy from ``seed``, following each layer's
    initializer in the definition (torchvision's scheme for the torchvision models,
    Keras' for the papers' Keras models); BatchNorm running mean 0 / variance 1."""
    specs = parameter_specs(name, resolution=resolution, channels=channels, num_classes=num_classes)
    return canonical.draw(specs, seed)


def build_model(name: str, framework: str, *, resolution: int, channels: int, num_classes: int,
                seed: int = 0, weights: dict | None = None, init: str = "canonical"):
    """A keras.Model (NHWC), torch.nn.Module (NCHW) or flax nnx.Module (NHWC) that takes
    float32 images in [0, 1] and returns LOGITS: the papers' final softmax belongs to the
    loss (from-logits cross-entropy) and to evaluation.

    Weights: ``weights`` (a canonical dict, e.g. from :func:`init_weights` or
    :func:`extract_weights`) is loaded as given.  Without it, ``init="canonical"``
    (default) loads ``init_weights(..., seed=seed)``, so the same seed gives the same
    initial weights in every framework and the reference initialization scheme;
    ``init="framework"`` keeps each framework's own layer defaults (Keras glorot-uniform,
    PyTorch kaiming-uniform, Flax lecun-normal, ...) drawn from ``seed`` by that framework.
    Models are returned in their framework's default mode (Keras: call with
    ``training=``; PyTorch and Flax: training mode, call ``.eval()`` for inference).
    """
    info = get_architecture(name)
    return build_ir(framework, info.ir(resolution, channels, num_classes),
                    _input_shape(resolution, channels), seed=seed, weights=weights, init=init, name=name)


def build_ir(framework: str, nodes, input_shape: tuple[int, int, int], *, seed: int = 0,
             weights: dict | None = None, init: str = "canonical", name: str = "model"):
    """:func:`build_model` for a resolved layer graph (``graph.resolve``) rather than a
    registered architecture: what the builders' own tests build, one node type at a time."""
    framework = framework_name(framework)
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    shape = tuple(input_shape)
    builder = _builder(framework)
    overwritten = weights is not None or init == "canonical"
    if framework == "keras":
        model = builder.build(nodes, shape, seed=seed if init == "framework" else None, name=name,
                              placeholder_init=overwritten)
    elif framework == "jax":
        model = builder.build(nodes, shape, seed=seed, placeholder_init=overwritten)
    else:
        model = builder.build(nodes, shape, seed=seed)
    specs = graph.param_specs(nodes, shape)
    if weights is None and init == "canonical":
        weights = canonical.draw(specs, seed)
    if weights is not None:
        canonical.check(specs, weights)
        canonical.load(builder.slots(model), weights)
    return model


def infer(framework: str, model, x_nhwc: np.ndarray) -> np.ndarray:
    """Inference-mode logits for a float32 NHWC batch, each framework called the way its
    users call it (Flax and Keras on JAX jitted: op-by-op dispatch would compile every op
    alone, 9 s against 3 s for MobileNetV3-Small on a CPU)."""
    framework = framework_name(framework)
    x_nhwc = np.asarray(x_nhwc, dtype=np.float32)
    if framework == "keras":
        import keras  # on any backend: a torch tensor that needs grad, a jax array, a tf tensor

        if keras.backend.backend() == "jax":
            return np.asarray(model.predict_on_batch(x_nhwc))  # inference mode, one jitted forward
        return keras.ops.convert_to_numpy(model(x_nhwc, training=False))
    if framework == "pytorch":
        import torch
        model.eval()
        with torch.no_grad():
            return model(torch.from_numpy(x_nhwc).permute(0, 3, 1, 2).contiguous()).numpy()
    from flax import nnx
    model.eval()
    return np.asarray(nnx.jit(lambda m, batch: m(batch))(model, x_nhwc))


def load_weights(framework: str, model, weights: dict[str, np.ndarray]) -> None:
    """Loads canonical weights; every array of the model must be given, no other."""
    slots = _builder(framework).slots(model)
    canonical.check_keys(slots, weights)
    canonical.load(slots, weights)


def extract_weights(framework: str, model) -> dict[str, np.ndarray]:
    """The model's weights as a canonical dict of float32 numpy arrays."""
    return canonical.extract(_builder(framework).slots(model))


def count_parameters(framework: str, model) -> int:
    """Trainable parameters of a built model (BatchNorm running statistics excluded)."""
    return _builder(framework).count_parameters(model)


def _count_built(framework: str, nodes, shape) -> int:
    """Builds the model as cheaply as the framework allows and counts its parameters:
    PyTorch on the meta device and Flax under nnx.eval_shape allocate nothing."""
    framework = framework_name(framework)
    builder = _builder(framework)
    if framework == "pytorch":
        import torch
        with torch.device("meta"):
            model = builder.build(nodes, shape)
    elif framework == "jax":
        model = builder.abstract_build(nodes, shape)
    else:
        model = builder.build(nodes, shape)
    return builder.count_parameters(model)


def definition_table(resolution: int, channels: int, num_classes: int, architectures=None) -> list[dict]:
    """Architecture -> parameters and FLOPs from its definition alone (describe(); no
    framework imported): what `python -m engines models` prints by default, in a second,
    where building every model in every framework took a minute and a half (issue 16).
    An architecture the input does not fit gets ``None`` figures and a ``"note"``."""
    rows = []
    for name in architectures or list_architectures():
        try:
            d = describe(name, resolution, channels, num_classes)
        except ValueError as err:
            rows.append({"architecture": name, "parameters": None, "flops_per_image": None, "note": str(err)})
            continue
        rows.append({"architecture": name, "parameters": d["parameters"], "flops_per_image": d["flops_per_image"]})
    return rows


def parameter_table(resolution: int, channels: int, num_classes: int,
                    frameworks=None, architectures=None) -> tuple[list[dict], list[str]]:
    """Architecture x framework -> parameters counted on the built model, and FLOPs.

    Returns ``(rows, missing)``: rows ``{"architecture", "framework", "parameters",
    "flops_per_image"}`` for every installed framework, and the frameworks that are not
    installed (found with importlib.util.find_spec, nothing imported).  An architecture
    the input does not fit gets rows with ``None`` figures and a ``"note"`` saying why.
    """
    wanted = [framework_name(f) for f in (frameworks or BUILDERS)]
    installed = [f for f in wanted if is_installed(f)]
    missing = [f for f in wanted if f not in installed]
    rows = []
    shape = _input_shape(resolution, channels)
    for name in architectures or list_architectures():
        try:
            nodes = get_architecture(name).ir(resolution, channels, num_classes)
        except ValueError as err:
            rows += [{"architecture": name, "framework": f, "parameters": None,
                      "flops_per_image": None, "note": str(err)} for f in installed]
            continue
        flops = graph.count(nodes, shape)["flops_per_image"]
        for framework in installed:
            rows.append({"architecture": name, "framework": framework,
                         "parameters": _count_built(framework, nodes, shape),
                         "flops_per_image": flops})
    return rows, missing
