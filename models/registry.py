"""Name -> architecture, its source, its input constraints and its paper's defaults.

Like timm's registry, but one entry serves all three frameworks: ``ArchInfo.ir(...)``
returns the layer graph that every builder reads.  Importing this module imports no
framework.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from . import graph
from .architectures import paper_cnns, torchvision_cnns, vit


@dataclass(frozen=True)
class ArchInfo:
    name: str
    title: str
    description: str
    source: str
    define: Callable[[int, int, int], tuple] = field(repr=False)
    # Smallest square input the definition is meant for (every one of its down-sampling
    # steps still sees a real pixel); smaller inputs are refused even where the shape
    # arithmetic would still work.
    min_resolution: int = 1
    resolution_multiple: int | None = None
    # (resolution, channels, num_classes) the source used.
    native: tuple[int, int, int] = (224, 3, 1000)
    # The source's training settings, for the presets; None where it gives none.
    defaults: dict = field(default_factory=dict)

    def check(self, resolution: int, channels: int) -> None:
        """ValueError with the constraint's value when the input does not fit."""
        if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 1:
            raise ValueError(f"{self.name}: resolution must be a positive integer, got {resolution!r}")
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise ValueError(f"{self.name}: channels must be a positive integer, got {channels!r}")
        if resolution < self.min_resolution:
            raise ValueError(f"{self.name} needs a resolution of at least {self.min_resolution} px, "
                             f"got {resolution}")
        if self.resolution_multiple and resolution % self.resolution_multiple:
            raise ValueError(f"{self.name} needs a resolution that is a multiple of "
                             f"{self.resolution_multiple} px (its patch size), got {resolution}")

    def ir(self, resolution: int, channels: int, num_classes: int) -> tuple:
        """The resolved layer graph (explicit paddings) for this input and class count."""
        self.check(resolution, channels)
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"{self.name}: num_classes must be a positive integer, got {num_classes!r}")
        nodes = self.define(resolution, channels, num_classes)
        try:
            resolved, _ = graph.resolve(nodes, (resolution, resolution, channels))
        except graph.ShapeError as err:
            raise ValueError(f"{self.name} does not fit a {resolution}x{resolution}x{channels} "
                             f"input: {err}") from None
        return resolved


_ADAM = "adam"

_REGISTRY: dict[str, ArchInfo] = {}


def register(info: ArchInfo) -> ArchInfo:
    if info.name in _REGISTRY:
        raise ValueError(f"architecture {info.name!r} registered twice")
    _REGISTRY[info.name] = info
    return info


register(ArchInfo(
    "pathmnist_cnn", "PathMNIST CNN (6 conv)",
    "Three blocks of two 3x3 'same' ReLU convolutions (64, 128, 128) each followed by "
    "2x2/2 max pooling and dropout 0.3, then Dense 256 and 128 (ReLU, dropout 0.3) and the "
    "classifier. Outputs logits; the paper's softmax is applied by the loss.",
    "PathMNIST CNN comparison of Keras, PyTorch and JAX (Table 1); papers/pathmnist-cnn-keras-pytorch-jax.txt",
    paper_cnns.pathmnist_cnn, min_resolution=8, native=(28, 3, 9),
    defaults={"optimizer": _ADAM, "learning_rate": 0.00027092, "batch_size": 32, "epochs": 20,
              "loss": "categorical_crossentropy", "class_weighted": True},
))
register(ArchInfo(
    "blood_resnet", "BloodMNIST 6-block ResNet",
    "3x3 conv 32 + BatchNorm + ReLU stem, six residual blocks (two 3x3 conv + BatchNorm, "
    "ReLU after the addition) of 32, 32, 64, 64, 128, 128 filters with stride 2 and a 1x1 "
    "conv + BatchNorm projection where the width changes, global max pooling, Dense. "
    "Keras semantics: 'same' padding (TensorFlow's rule, also in PyTorch/Flax), conv "
    "biases, VarianceScaling() kernels, BatchNorm momentum 0.99 / epsilon 1e-3 (Keras). "
    "The stem's kernel size is not given by the paper; 3x3 is assumed. Outputs logits.",
    "BloodMNIST ResNet comparison of Keras, PyTorch and JAX; papers/bloodmnist-resnet-keras-pytorch-jax.txt",
    paper_cnns.blood_resnet, min_resolution=4, native=(28, 3, 8),
    defaults={"optimizer": _ADAM, "learning_rate": 0.001, "batch_size": 128, "epochs": 20,
              "loss": "categorical_crossentropy", "class_weighted": False},
))
register(ArchInfo(
    "fan_arch1", "Architecture 1 (MNIST / Fashion-MNIST / breast histology)",
    "Conv 5x5x16 'same', max pool 2x2 'same', conv 5x5x32 'same', max pool 2x2 'same', "
    "ReLU, flatten, Dense. 28,938 parameters at 28x28x1 / 10 classes and 24,866 at "
    "50x50x3 / 2 classes, as the paper states. Outputs logits.",
    "Variance in open source deep learning framework performance (TensorFlow vs Keras); "
    "papers/tensorflow-vs-keras-variance.txt",
    paper_cnns.fan_arch1, min_resolution=4, native=(28, 1, 10),
    defaults={"optimizer": "sgd", "learning_rate": 0.01, "batch_size": 32, "epochs": 20,
              "loss": "categorical_crossentropy", "class_weighted": False},
))
register(ArchInfo(
    "fan_arch2", "Architecture 2 (MNIST / Fashion-MNIST / breast histology)",
    "Conv 5x5x128, conv 5x5x64, BatchNorm, max pool 2x2; conv 5x5x32, conv 5x5x16, "
    "BatchNorm, max pool 2x2; flatten; Dense (all 'same'; the paper names no activation, "
    "so max pooling is the only non-linearity). 284,210 trainable parameters at 50x50x3 / "
    "2 classes, the paper's figure; at 28x28x1 / 10 classes the same reading gives "
    "280,250 where the paper prints 280,174 (no layer reading matches both figures; the "
    "breast-histology one is kept). Outputs logits.",
    "Variance in open source deep learning framework performance (TensorFlow vs Keras); "
    "papers/tensorflow-vs-keras-variance.txt",
    paper_cnns.fan_arch2, min_resolution=4, native=(28, 1, 10),
    defaults={"optimizer": "sgd", "learning_rate": 0.01, "batch_size": 32, "epochs": 20,
              "loss": "categorical_crossentropy", "class_weighted": False},
))
register(ArchInfo(
    "cifar_cnn", "Small CIFAR-10 CNN",
    "The well-known small CIFAR-10 CNN (TensorFlow tutorial; the paper does not list its "
    "layers): conv 3x3x32, max pool, conv 3x3x64, max pool, conv 3x3x64 (valid, ReLU), "
    "flatten, Dense 64 ReLU, Dense. 122,570 parameters at 32x32x3 / 10 classes. Outputs logits.",
    "PyTorch vs TensorFlow on CIFAR-10; papers/cifar10-pytorch-vs-tensorflow.txt",
    paper_cnns.cifar_cnn, min_resolution=18, native=(32, 3, 10),
    defaults={"optimizer": _ADAM, "learning_rate": 0.001, "batch_size": 32, "epochs": 10,
              "loss": "categorical_crossentropy", "class_weighted": False},
))
_H100 = {"optimizer": _ADAM, "learning_rate": 1e-4, "lr_schedule": "cosine", "batch_size": 64,
         "epochs": 5, "loss": "categorical_crossentropy", "class_weighted": False}
register(ArchInfo(
    "resnet50", "ResNet-50",
    "torchvision resnet50 (v1.5) layer for layer: 7x7/2 stem, 3x3/2 max pool (padding 1), "
    "bottlenecks [3, 4, 6, 3] with the stride on the 3x3 conv, BatchNorm eps 1e-5 / "
    "momentum 0.1 (PyTorch), global average pooling, fc; torchvision's initialization. "
    "Outputs logits.",
    "torchvision.models.resnet50; papers/jax-vs-pytorch-h100.txt",
    torchvision_cnns.resnet50, min_resolution=32, native=(224, 3, 1000), defaults=dict(_H100),
))
register(ArchInfo(
    "mobilenet_v3_small", "MobileNetV3-Small",
    "torchvision mobilenet_v3_small layer for layer: inverted residuals with depthwise "
    "convs, squeeze-excitation (ReLU, hard-sigmoid), hard-swish, BatchNorm eps 1e-3 / "
    "momentum 0.01, classifier Linear 1024 + hard-swish + dropout 0.2 + Linear. Outputs logits.",
    "torchvision.models.mobilenet_v3_small; papers/jax-vs-pytorch-h100.txt",
    torchvision_cnns.mobilenet_v3_small, min_resolution=32, native=(224, 3, 1000),
    defaults=dict(_H100),
))
register(ArchInfo(
    "efficientnet_b0", "EfficientNet-B0",
    "torchvision efficientnet_b0 layer for layer: MBConv blocks with SiLU, "
    "squeeze-excitation (SiLU, sigmoid), stochastic depth rising linearly to 0.2, "
    "BatchNorm eps 1e-5 / momentum 0.1, dropout 0.2 before the classifier. Outputs logits.",
    "torchvision.models.efficientnet_b0; papers/jax-vs-pytorch-h100.txt",
    torchvision_cnns.efficientnet_b0, min_resolution=32, native=(224, 3, 1000),
    defaults=dict(_H100),
))
register(ArchInfo(
    "vit_b_16", "ViT-B/16",
    "torchvision vit_b_16 layer for layer: 16x16 patch embedding, class token, learned "
    "position embedding (sized to the input resolution), 12 pre-norm encoder blocks "
    "(12 heads, width 768, MLP 3072, exact GELU, LayerNorm eps 1e-6), class-token head. "
    "Outputs logits.",
    "torchvision.models.vit_b_16; papers/jax-vs-pytorch-h100.txt",
    vit.vit_b_16, min_resolution=16, resolution_multiple=16, native=(224, 3, 1000),
    defaults=dict(_H100),
))


def list_architectures() -> list[str]:
    return list(_REGISTRY)


def get_architecture(name: str) -> ArchInfo:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(_REGISTRY)}") from None


def check_input(name: str, resolution: int, channels: int) -> None:
    get_architecture(name).check(resolution, channels)
