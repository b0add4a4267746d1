"""ViT-B/16 as torchvision's ``vit_b_16`` (torchvision/models/vision_transformer.py),
with the position embedding sized to the input resolution instead of fixed at 224."""

from __future__ import annotations

import math

from ..ir import (
    GLOROT_UNIFORM,
    ZEROS,
    ClassToken,
    Conv,
    Dense,
    Dropout,
    EncoderBlock,
    Init,
    LayerNorm,
    PositionEmbedding,
    TakeToken,
    Tokens,
    square,
)


def vit(resolution: int, channels: int, num_classes: int, *, patch: int, layers: int,
        heads: int, hidden: int, mlp_dim: int, dropout: float = 0.0,
        attention_dropout: float = 0.0) -> tuple:
    # torchvision draws conv_proj from trunc_normal_(std=sqrt(1/fan_in)) cut at ±2 in
    # absolute value, i.e. ±55 std here: the same distribution as an untruncated normal.
    fan_in = channels * patch * patch
    nodes = [Conv("conv_proj", hidden, square(patch), square(patch), "valid",
                  kernel_init=Init("normal", math.sqrt(1.0 / fan_in)), bias_init=ZEROS),
             Tokens(), ClassToken("class_token"),
             PositionEmbedding("encoder.pos_embedding"), Dropout(dropout)]
    for i in range(layers):
        nodes.append(EncoderBlock(f"encoder.layers.encoder_layer_{i}", heads, mlp_dim, dropout,
                                  attention_dropout, 1e-6, qkv_init=GLOROT_UNIFORM))
    nodes += [LayerNorm("encoder.ln", 1e-6), TakeToken(0),
              Dense("heads.head", num_classes, kernel_init=ZEROS, bias_init=ZEROS)]
    return tuple(nodes)


def vit_b_16(resolution: int, channels: int, num_classes: int) -> tuple:
    return vit(resolution, channels, num_classes, patch=16, layers=12, heads=12,
               hidden=768, mlp_dim=3072)
