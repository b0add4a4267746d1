"""ResNet-50, MobileNetV3-Small and EfficientNet-B0, layer for layer as torchvision defines
them (torchvision/models/resnet.py, mobilenetv3.py, efficientnet.py), including their
weight initialization.  Layer names are torchvision's state_dict names.
"""

from __future__ import annotations

import math

from ..ir import (
    KAIMING_NORMAL_FAN_OUT,
    TORCH_DEFAULT_BIAS,
    TORCH_DEFAULT_KERNEL,
    ZEROS,
    Activation,
    BatchNorm,
    Conv,
    Dense,
    Dropout,
    GlobalPool,
    Init,
    MaxPool,
    Residual,
    SqueezeExcite,
    square,
    symmetric,
)


def _conv(name, filters, k, stride=1, groups=1, bias=False):
    # torchvision's padding for odd kernels: (k - 1) // 2 on every side, never TF's SAME.
    return Conv(name, filters, square(k), square(stride), symmetric((k - 1) // 2), groups,
                bias, KAIMING_NORMAL_FAN_OUT, ZEROS)


def _conv_norm_act(name, filters, k, stride=1, groups=1, act=None, bn=None):
    """torchvision.ops.Conv2dNormActivation: conv (no bias) -> BN -> activation."""
    bn = bn or {}
    out = [_conv(f"{name}.0", filters, k, stride, groups), BatchNorm(f"{name}.1", **bn)]
    if act:
        out.append(Activation(act))
    return out


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """torchvision.models._utils._make_divisible."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


# --- ResNet-50 (v1.5: stride on the 3x3 convolution) ----------------------------------

def resnet50(resolution: int, channels: int, num_classes: int) -> tuple:
    layers = [_conv("conv1", 64, 7, 2), BatchNorm("bn1"), Activation("relu"),
              MaxPool(square(3), square(2), symmetric(1))]
    inplanes = 64
    for stage, (planes, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3)), start=1):
        for i in range(blocks):
            stride = 2 if (i == 0 and stage > 1) else 1
            n = f"layer{stage}.{i}"
            body = (_conv(f"{n}.conv1", planes, 1), BatchNorm(f"{n}.bn1"), Activation("relu"),
                    _conv(f"{n}.conv2", planes, 3, stride), BatchNorm(f"{n}.bn2"), Activation("relu"),
                    _conv(f"{n}.conv3", planes * 4, 1), BatchNorm(f"{n}.bn3"))
            shortcut = ()
            if stride != 1 or inplanes != planes * 4:
                shortcut = (_conv(f"{n}.downsample.0", planes * 4, 1, stride),
                            BatchNorm(f"{n}.downsample.1"))
            layers += [Residual(body, shortcut), Activation("relu")]
            inplanes = planes * 4
    layers += [GlobalPool("avg"),
               Dense("fc", num_classes, kernel_init=TORCH_DEFAULT_KERNEL, bias_init=TORCH_DEFAULT_BIAS)]
    return tuple(layers)


# --- SqueezeExcitation (torchvision.ops) ----------------------------------------------

def _squeeze_excite(name, channels, squeeze, act, gate):
    return SqueezeExcite(name, _conv(f"{name}.fc1", squeeze, 1, bias=True),
                         _conv(f"{name}.fc2", channels, 1, bias=True), act, gate)


# --- MobileNetV3-Small ----------------------------------------------------------------

_MOBILENET_V3_SMALL = (
    # in, kernel, expanded, out, use_se, activation, stride   (torchvision's bneck_conf)
    (16, 3, 16, 16, True, "relu", 2),
    (16, 3, 72, 24, False, "relu", 2),
    (24, 3, 88, 24, False, "relu", 1),
    (24, 5, 96, 40, True, "hardswish", 2),
    (40, 5, 240, 40, True, "hardswish", 1),
    (40, 5, 240, 40, True, "hardswish", 1),
    (40, 5, 120, 48, True, "hardswish", 1),
    (48, 5, 144, 48, True, "hardswish", 1),
    (48, 5, 288, 96, True, "hardswish", 2),
    (96, 5, 576, 96, True, "hardswish", 1),
    (96, 5, 576, 96, True, "hardswish", 1),
)


def mobilenet_v3_small(resolution: int, channels: int, num_classes: int) -> tuple:
    bn = dict(momentum=0.01, eps=0.001)  # torchvision: partial(BatchNorm2d, eps=0.001, momentum=0.01)
    layers = _conv_norm_act("features.0", 16, 3, 2, act="hardswish", bn=bn)
    for index, (cin, k, exp, cout, use_se, act, stride) in enumerate(_MOBILENET_V3_SMALL, start=1):
        cin, exp, cout = make_divisible(cin), make_divisible(exp), make_divisible(cout)
        n, j, block = f"features.{index}.block", 0, []
        if exp != cin:
            block += _conv_norm_act(f"{n}.{j}", exp, 1, act=act, bn=bn)
            j += 1
        block += _conv_norm_act(f"{n}.{j}", exp, k, stride, groups=exp, act=act, bn=bn)
        j += 1
        if use_se:
            block.append(_squeeze_excite(f"{n}.{j}", exp, make_divisible(exp // 4), "relu", "hardsigmoid"))
            j += 1
        block += _conv_norm_act(f"{n}.{j}", cout, 1, bn=bn)
        if stride == 1 and cin == cout:
            layers.append(Residual(tuple(block)))
        else:
            layers += block
    last_in = make_divisible(96)
    layers += _conv_norm_act(f"features.{len(_MOBILENET_V3_SMALL) + 1}", 6 * last_in, 1,
                             act="hardswish", bn=bn)
    linear = dict(kernel_init=Init("normal", 0.01), bias_init=ZEROS)
    layers += [GlobalPool("avg"),
               Dense("classifier.0", make_divisible(1024), **linear), Activation("hardswish"),
               Dropout(0.2),
               Dense("classifier.3", num_classes, **linear)]
    return tuple(layers)


# --- EfficientNet-B0 ------------------------------------------------------------------

_EFFICIENTNET_B0 = (
    # expand_ratio, kernel, stride, in, out, layers   (torchvision's MBConvConfig)
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)


def efficientnet_b0(resolution: int, channels: int, num_classes: int,
                    stochastic_depth_prob: float = 0.2, dropout: float = 0.2) -> tuple:
    layers = _conv_norm_act("features.0", 32, 3, 2, act="silu")
    total = sum(cfg[-1] for cfg in _EFFICIENTNET_B0)
    block_id = 0
    for stage, (ratio, k, stride, cin, cout, repeats) in enumerate(_EFFICIENTNET_B0, start=1):
        cin, cout = make_divisible(cin), make_divisible(cout)
        for i in range(repeats):
            b_in, b_stride = (cin, stride) if i == 0 else (cout, 1)
            exp = make_divisible(b_in * ratio)
            n, j, block = f"features.{stage}.{i}.block", 0, []
            if exp != b_in:
                block += _conv_norm_act(f"{n}.{j}", exp, 1, act="silu")
                j += 1
            block += _conv_norm_act(f"{n}.{j}", exp, k, b_stride, groups=exp, act="silu")
            j += 1
            block.append(_squeeze_excite(f"{n}.{j}", exp, max(1, b_in // 4), "silu", "sigmoid"))
            j += 1
            block += _conv_norm_act(f"{n}.{j}", cout, 1)
            # torchvision grows the drop probability linearly with the block index.
            sd_prob = stochastic_depth_prob * float(block_id) / total
            if b_stride == 1 and b_in == cout:
                layers.append(Residual(tuple(block), (), sd_prob))
            else:
                layers += block
            block_id += 1
    last_in = make_divisible(320)
    layers += _conv_norm_act(f"features.{len(_EFFICIENTNET_B0) + 1}", 4 * last_in, 1, act="silu")
    bound = 1.0 / math.sqrt(num_classes)
    layers += [GlobalPool("avg"), Dropout(dropout),
               Dense("classifier.1", num_classes, kernel_init=Init("uniform", bound), bias_init=ZEROS)]
    return tuple(layers)
