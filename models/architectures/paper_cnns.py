"""The small CNNs of the papers the lab grew from (see /work/shared/papers).

Their papers used Keras, so their initializers and BatchNorm settings are Keras'
defaults: glorot-uniform kernels, zero biases, BatchNorm momentum 0.99 (Keras) = 0.01
(PyTorch convention of the IR) and epsilon 1e-3.
"""

from __future__ import annotations

from ..ir import (
    KERAS_VARIANCE_SCALING,
    Activation,
    BatchNorm,
    Conv,
    Dense,
    Dropout,
    Flatten,
    GlobalPool,
    MaxPool,
    Residual,
    square,
)

KERAS_BN = dict(momentum=0.01, eps=1e-3)


def pathmnist_cnn(resolution: int, channels: int, num_classes: int) -> tuple:
    layers = []
    for block, filters in enumerate((64, 128, 128), start=1):
        for i in (1, 2):
            layers += [Conv(f"block{block}.conv{i}", filters, square(3), padding="same"),
                       Activation("relu")]
        layers += [MaxPool(square(2), square(2)), Dropout(0.3)]
    layers += [Flatten(),
               Dense("dense1", 256), Activation("relu"), Dropout(0.3),
               Dense("dense2", 128), Activation("relu"), Dropout(0.3),
               Dense("classifier", num_classes)]
    return tuple(layers)


def _blood_block(name: str, in_filters: int, filters: int, stride: int) -> list:
    conv = dict(kernel_init=KERAS_VARIANCE_SCALING)
    body = (
        Conv(f"{name}.conv1", filters, square(3), square(stride), "same", **conv),
        BatchNorm(f"{name}.bn1", **KERAS_BN), Activation("relu"),
        Conv(f"{name}.conv2", filters, square(3), padding="same", **conv),
        BatchNorm(f"{name}.bn2", **KERAS_BN),
    )
    shortcut = ()
    if stride != 1 or in_filters != filters:
        shortcut = (Conv(f"{name}.shortcut.conv", filters, square(1), square(stride), "same", **conv),
                    BatchNorm(f"{name}.shortcut.bn", **KERAS_BN))
    return [Residual(body, shortcut), Activation("relu")]


def blood_resnet(resolution: int, channels: int, num_classes: int) -> tuple:
    layers = [Conv("stem.conv", 32, square(3), padding="same", kernel_init=KERAS_VARIANCE_SCALING),
              BatchNorm("stem.bn", **KERAS_BN), Activation("relu")]
    in_filters = 32
    for i, filters in enumerate((32, 32, 64, 64, 128, 128), start=1):
        stride = 2 if filters != in_filters else 1
        layers += _blood_block(f"block{i}", in_filters, filters, stride)
        in_filters = filters
    layers += [GlobalPool("max"), Dense("classifier", num_classes, kernel_init=KERAS_VARIANCE_SCALING)]
    return tuple(layers)


def fan_arch1(resolution: int, channels: int, num_classes: int) -> tuple:
    return (
        Conv("conv1", 16, square(5), padding="same"),
        MaxPool(square(2), square(2), "same"),
        Conv("conv2", 32, square(5), padding="same"),
        MaxPool(square(2), square(2), "same"),
        Activation("relu"),
        Flatten(),
        Dense("classifier", num_classes),
    )


def fan_arch2(resolution: int, channels: int, num_classes: int) -> tuple:
    return (
        Conv("conv1", 128, square(5), padding="same"),
        Conv("conv2", 64, square(5), padding="same"),
        BatchNorm("bn1", **KERAS_BN),
        MaxPool(square(2), square(2), "same"),
        Conv("conv3", 32, square(5), padding="same"),
        Conv("conv4", 16, square(5), padding="same"),
        BatchNorm("bn2", **KERAS_BN),
        MaxPool(square(2), square(2), "same"),
        Flatten(),
        Dense("classifier", num_classes),
    )


def cifar_cnn(resolution: int, channels: int, num_classes: int) -> tuple:
    return (
        Conv("conv1", 32, square(3)), Activation("relu"),
        MaxPool(square(2), square(2)),
        Conv("conv2", 64, square(3)), Activation("relu"),
        MaxPool(square(2), square(2)),
        Conv("conv3", 64, square(3)), Activation("relu"),
        Flatten(),
        Dense("dense1", 64), Activation("relu"),
        Dense("classifier", num_classes),
    )
