"""SegNet (Badrinarayanan, Kendall, Cipolla, TPAMI 2017) as a Detectron2 meta-architecture.

The decoder mirrors the VGG16-BN encoder stage by stage and upsamples with the encoder's
max-pooling indices (``nn.MaxUnpool2d``): each pooled value goes back to the position it
came from, the rest stays zero, and the following conv-BN-ReLU layers densify the map.
This is the idea of the paper (and of its Caffe model, whose decoder layers conv5_3_D ...
conv1_1_D this follows); keras_segmentation's "segnet", used by the seed study, upsamples
without indices.
"""

from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from torch import nn

from .layers import NormSpec, conv_norm_relu, init_classifier
from .semantic_base import SemanticBaseline, semantic_baseline_config
from .vgg import VGG16Encoder


@META_ARCH_REGISTRY.register()
class SegNet(SemanticBaseline):
    """VGG16-BN encoder, index-unpooling decoder, 3x3 classifier at full resolution."""

    @configurable
    def __init__(self, *, backbone: VGG16Encoder, norm: NormSpec = "BN", **kwargs):
        """
        Args:
            backbone: the encoder; its ``pool{s}`` / ``pool{s}_indices`` features are used.
            norm: norm of the decoder convs (BN in the paper, GN for small CPU batches).
            kwargs: see :class:`SemanticBaseline` (classes, ignore value, pixel mean/std).
        """
        super().__init__(**kwargs)
        if getattr(backbone, "fc_dim", 0):
            raise ValueError("SegNet uses no fc6/fc7: set MODEL.VGG.FC_DIM to 0")
        self.backbone = backbone
        self.unpool = nn.MaxUnpool2d(kernel_size=2, stride=2)
        shapes = backbone.output_shape()
        stage_channels = [shapes[f"pool{s}"].channels for s in range(1, 6)]
        # Decoder stage s mirrors encoder stage s: as many convs, all with its width except
        # the last, which narrows to stage s-1's width; stage 1 ends in the classifier.
        self.decoder = nn.ModuleList()
        for stage in range(5, 0, -1):
            width = stage_channels[stage - 1]
            convs = backbone.convs_per_stage[stage - 1]
            if stage == 1:
                layers = [conv_norm_relu(width, width, 3, norm=norm) for _ in range(convs - 1)]
            else:
                narrower = stage_channels[stage - 2]
                layers = [conv_norm_relu(width, width, 3, norm=norm) for _ in range(convs - 1)]
                layers.append(conv_norm_relu(width, narrower, 3, norm=norm))
            self.decoder.append(nn.Sequential(*layers))
        self.classifier = nn.Conv2d(stage_channels[0], self.num_classes, 3, padding=1)
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
        x = features["pool5"]
        for stage, decoder_stage in zip(range(5, 0, -1), self.decoder, strict=True):
            x = self.unpool(x, features[f"pool{stage}_indices"])
            x = decoder_stage(x)
        return {"sem_seg": self.classifier(x)}
