"""UNet (Ronneberger, Fischer, Brox, MICCAI 2015) on a VGG16-BN encoder.

The contracting path is VGG16-BN (five stages); a centre block works on pool5 (stride 32)
and the expanding path climbs back through all five scales: a 2x2 up-convolution that
halves the channels, concatenation with the encoder's pre-pool features of that scale
(``conv5`` ... ``conv1``), then two 3x3 conv-norm-ReLU, ending in a 1x1 classifier at full
input resolution. Unlike the paper the convs are padded (so outputs align with inputs
without cropping) and normalised. keras_segmentation's ``vgg_unet``, used by the seed study,
stops its skips at pool4 and predicts at half resolution; this is the paper's full-resolution
layout with a skip at every scale.
"""

from __future__ import annotations

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from torch import nn

from .layers import NormSpec, conv_norm_relu, init_classifier
from .semantic_base import SemanticBaseline, semantic_baseline_config
from .vgg import VGG16Encoder


class UpBlock(nn.Module):
    """Up-convolution x2, concatenation with the skip, two 3x3 conv-norm-ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, norm: NormSpec):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
        weight_init.c2_msra_fill(self.up)
        self.conv1 = conv_norm_relu(in_channels // 2 + skip_channels, out_channels, 3, norm=norm)
        self.conv2 = conv_norm_relu(out_channels, out_channels, 3, norm=norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.up(x), skip], dim=1)
        return self.conv2(self.conv1(x))


@META_ARCH_REGISTRY.register()
class UNet(SemanticBaseline):
    """VGG16-BN encoder, centre block at stride 32, five skip-connected up-blocks."""

    @configurable
    def __init__(self, *, backbone: VGG16Encoder, norm: NormSpec = "BN", **kwargs):
        """
        Args:
            backbone: the encoder; its ``conv1`` ... ``conv5`` and ``pool5`` features are used.
            norm: norm of the centre and decoder convs.
            kwargs: see :class:`SemanticBaseline`.
        """
        super().__init__(**kwargs)
        if getattr(backbone, "fc_dim", 0):
            raise ValueError("UNet uses no fc6/fc7: set MODEL.VGG.FC_DIM to 0")
        self.backbone = backbone
        shapes = backbone.output_shape()
        skip_channels = [shapes[f"conv{s}"].channels for s in range(1, 6)]
        # The paper doubles the width below the last pooling: centre = 2 x pool5 channels.
        centre = 2 * shapes["pool5"].channels
        self.centre = nn.Sequential(
            conv_norm_relu(shapes["pool5"].channels, centre, 3, norm=norm),
            conv_norm_relu(centre, centre, 3, norm=norm),
        )
        self.up_blocks = nn.ModuleList()
        channels = centre
        for stage in range(5, 0, -1):
            out = skip_channels[stage - 1]
            self.up_blocks.append(UpBlock(channels, skip_channels[stage - 1], out, norm))
            channels = out
        self.classifier = nn.Conv2d(channels, self.num_classes, kernel_size=1)
        init_classifier(self.classifier)

    @classmethod
    def from_config(cls, cfg):
        return {
            "backbone": build_backbone(cfg),
            "norm": cfg.MODEL.SEM_SEG_HEAD.NORM,
            **semantic_baseline_config(cfg),
        }

    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(images)
        x = self.centre(features["pool5"])
        for stage, block in zip(range(5, 0, -1), self.up_blocks, strict=True):
            x = block(x, features[f"conv{stage}"])
        return {"sem_seg": self.classifier(x)}
