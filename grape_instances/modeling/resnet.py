"""Dilated ResNet of PSPNet, registered as ``build_dilated_resnet_backbone``.

Detectron2's own ``ResNet`` / ``BottleneckBlock`` with res4 / res5 turned from strided into
dilated stages, for output stride 8, 16 or 32 (Detectron2's ``build_resnet_backbone`` only
dilates res5).
"""

from __future__ import annotations

from collections.abc import Sequence

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import BasicStem, BottleneckBlock, ResNet

from ..core.errors import GrapeInputError
from .layers import NormSpec, resolve_norm

# Dilation of res4 / res5 for each output stride; strided stages become dilated ones.
_RES45_DILATION = {8: (2, 4), 16: (1, 2), 32: (1, 1)}


def make_dilated_resnet(
    *,
    depth: int = 50,
    output_stride: int = 8,
    norm: NormSpec = "BN",
    in_channels: int = 3,
    stem_channels: int = 64,
    res2_channels: int = 256,
    bottleneck_channels: int = 64,
    num_groups: int = 1,
    stride_in_1x1: bool = True,
    out_features: Sequence[str] = ("res4", "res5"),
    freeze_at: int = 0,
) -> ResNet:
    """Detectron2's bottleneck ResNet with res4 / res5 dilated instead of strided.

    Output stride 8 dilates res4 by 2 and res5 by 4 (PSPNet, DeepLab), 16 dilates res5 by 2,
    32 is the plain ResNet. Layer names match Detectron2's, so ImageNet weights such as
    ``detectron2://ImageNetPretrained/MSRA/R-50.pkl`` load through ``MODEL.WEIGHTS``. Narrow
    variants shrink ``stem_channels`` / ``res2_channels`` / ``bottleneck_channels``.
    """
    if output_stride not in _RES45_DILATION:
        raise ValueError(
            f"output_stride must be one of {sorted(_RES45_DILATION)}, got {output_stride}"
        )
    blocks_per_stage = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}.get(depth)
    if blocks_per_stage is None:
        raise ValueError(
            f"a dilated ResNet needs bottleneck blocks (depth 50/101/152), got {depth}"
        )
    norm = resolve_norm(norm)
    res4_dilation, res5_dilation = _RES45_DILATION[output_stride]
    dilations = (1, 1, res4_dilation, res5_dilation)
    last_stage = max({"res2": 0, "res3": 1, "res4": 2, "res5": 3}[f] for f in out_features)
    stem = BasicStem(in_channels=in_channels, out_channels=stem_channels, norm=norm)
    stages = []
    channels_in, channels_out = stem_channels, res2_channels
    for index in range(last_stage + 1):
        dilation = dilations[index]
        first_stride = 1 if index == 0 or dilation > 1 else 2
        stages.append(
            ResNet.make_stage(
                BottleneckBlock,
                blocks_per_stage[index],
                in_channels=channels_in,
                out_channels=channels_out,
                bottleneck_channels=bottleneck_channels,
                num_groups=num_groups,
                stride_per_block=[first_stride] + [1] * (blocks_per_stage[index] - 1),
                stride_in_1x1=stride_in_1x1,
                dilation=dilation,
                norm=norm,
            )
        )
        channels_in, channels_out = channels_out, channels_out * 2
        bottleneck_channels *= 2
    return ResNet(stem, stages, out_features=list(out_features), freeze_at=freeze_at)


@BACKBONE_REGISTRY.register()
def build_dilated_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """Dilated ResNet from ``cfg.MODEL.RESNETS`` (``OUTPUT_STRIDE`` picks the dilations)."""
    if cfg.MODEL.ENCODER_WEIGHTS:
        raise GrapeInputError(
            f"{cfg.MODEL.ENCODER_WEIGHTS}: MODEL.ENCODER_WEIGHTS is for VGG encoders; give ResNet "
            "ImageNet weights through MODEL.WEIGHTS (detectron2://ImageNetPretrained/MSRA/R-50.pkl)"
        )
    resnets = cfg.MODEL.RESNETS
    return make_dilated_resnet(
        depth=resnets.DEPTH,
        output_stride=resnets.OUTPUT_STRIDE,
        norm=resnets.NORM,
        in_channels=input_shape.channels,
        stem_channels=resnets.STEM_OUT_CHANNELS,
        res2_channels=resnets.RES2_OUT_CHANNELS,
        bottleneck_channels=resnets.NUM_GROUPS * resnets.WIDTH_PER_GROUP,
        num_groups=resnets.NUM_GROUPS,
        stride_in_1x1=resnets.STRIDE_IN_1X1,
        out_features=resnets.OUT_FEATURES,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
    )
