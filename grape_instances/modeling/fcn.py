"""FCN-8s (Long, Shelhamer, Darrell, CVPR 2015) on VGG16 as a Detectron2 meta-architecture.

VGG16's fc6 / fc7 run as 7x7 / 1x1 convolutions (the encoder's ``fc7`` feature, width
``MODEL.VGG.FC_DIM``: 4096 in the paper, narrower for CPU). Class scores at stride 32 are
upsampled x2 and fused with scores from pool4, upsampled x2 again and fused with scores from
pool3, then upsampled x8 to the input. All three upsamplings are transposed convolutions
initialised to bilinear interpolation; as in the paper's released models the two x2 layers
learn and the final x8 layer stays fixed. The scoring layers start at zero (the paper's
initialisation for new score layers). The encoder shares VGG16-BN with SegNet and UNet
(``MODEL.VGG.NORM ""`` gives the paper's plain VGG16; ImageNet weights load for both).
"""

from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from torch import nn

from .semantic_base import SemanticBaseline, semantic_baseline_config
from .vgg import VGG16Encoder


def bilinear_upsampling_weight(channels: int, factor: int) -> torch.Tensor:
    """Weights of a ConvTranspose2d(channels, channels, 2*factor, factor, factor//2) that
    upsamples each channel bilinearly (no mixing between channels)."""
    kernel_size = 2 * factor
    center = factor - 0.5
    steps = torch.arange(kernel_size, dtype=torch.float32)
    profile = 1 - (steps - center).abs() / factor
    kernel = profile[:, None] * profile[None, :]
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = kernel
    return weight


def bilinear_upsampler(channels: int, factor: int, trainable: bool) -> nn.ConvTranspose2d:
    """A transposed conv that maps H x W to exactly factor*H x factor*W, bilinear at start."""
    up = nn.ConvTranspose2d(
        channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False
    )
    with torch.no_grad():
        up.weight.copy_(bilinear_upsampling_weight(channels, factor))
    up.weight.requires_grad_(trainable)
    return up


def zero_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


@META_ARCH_REGISTRY.register()
class FCN8s(SemanticBaseline):
    """Scores from fc7, pool4 and pool3, fused coarse-to-fine (strides 32 -> 16 -> 8 -> 1)."""

    @configurable
    def __init__(self, *, backbone: VGG16Encoder, **kwargs):
        """
        Args:
            backbone: a VGG16 encoder built with ``fc_dim > 0`` (its ``fc7``, ``pool4`` and
                ``pool3`` features are used).
            kwargs: see :class:`SemanticBaseline`.
        """
        super().__init__(**kwargs)
        shapes = backbone.output_shape()
        if "fc7" not in shapes:
            raise ValueError("FCN8s needs fc6/fc7 in its encoder: set MODEL.VGG.FC_DIM > 0")
        self.backbone = backbone
        classes = self.num_classes
        self.score_fr = zero_conv(shapes["fc7"].channels, classes)
        self.score_pool4 = zero_conv(shapes["pool4"].channels, classes)
        self.score_pool3 = zero_conv(shapes["pool3"].channels, classes)
        self.upscore2 = bilinear_upsampler(classes, 2, trainable=True)
        self.upscore_pool4 = bilinear_upsampler(classes, 2, trainable=True)
        self.upscore8 = bilinear_upsampler(classes, 8, trainable=False)

    @classmethod
    def from_config(cls, cfg):
        return {"backbone": build_backbone(cfg), **semantic_baseline_config(cfg)}

    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(images)
        scores = self.upscore2(self.score_fr(features["fc7"]))  # stride 16
        scores = self.upscore_pool4(scores + self.score_pool4(features["pool4"]))  # stride 8
        scores = self.upscore8(scores + self.score_pool3(features["pool3"]))  # stride 1
        return {"sem_seg": scores}
