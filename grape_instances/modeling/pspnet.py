"""PSPNet (Zhao, Shi, Qi, Wang, Jia, CVPR 2017) as a Detectron2 meta-architecture.

A dilated ResNet-50 (output stride 8; 16 for the CPU variant) feeds the pyramid pooling
module: the res5 map is average-pooled to 1x1, 2x2, 3x3 and 6x6 bins, each reduced by a
1x1 conv to C/4 channels (C/len(bins)), upsampled back and concatenated with the map; a
3x3 conv-norm-ReLU, dropout 0.1 and a 1x1 classifier follow, and the logits are upsampled
bilinearly to the input. The optional auxiliary FCN head on res4 adds ``loss_aux`` (weight
0.4 in the paper) during training only. The stem is Detectron2's single 7x7 conv (matching
the MSRA ImageNet weights) rather than the paper's three 3x3 convs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from torch import nn
from torch.nn import functional as F

from .layers import NormSpec, conv_norm_relu, init_classifier
from .semantic_base import SemanticBaseline, semantic_baseline_config

# Batch norms, whose statistics over one image's 1x1 bin are a single value per channel.
_BATCH_NORMS = {"BN", "SyncBN", "naiveSyncBN", "nnSyncBN"}


class PyramidPooling(nn.Module):
    """Average-pool to each bin size, 1x1 conv-norm-ReLU, upsample, concat with the input.

    A batch norm on the 1x1 bin of one image per process (``--num-gpus N`` with N images)
    has one value per channel to normalise and fails; the pyramid's small bins then use
    GroupNorm, which normalises over channels and works at any batch size.
    """

    def __init__(self, in_channels: int, bins: Sequence[int], norm: NormSpec):
        super().__init__()
        self.bins = tuple(bins)
        reduced = in_channels // len(self.bins)
        bin_norm = "GN" if isinstance(norm, str) and norm in _BATCH_NORMS else norm
        self.reductions = nn.ModuleList(
            conv_norm_relu(in_channels, reduced, 1, norm=bin_norm if b < 2 else norm)
            for b in self.bins
        )
        self.out_channels = in_channels + reduced * len(self.bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pyramid = [x]
        for bin_size, reduce in zip(self.bins, self.reductions, strict=True):
            pooled = reduce(F.adaptive_avg_pool2d(x, bin_size))
            pyramid.append(F.interpolate(pooled, size=size, mode="bilinear", align_corners=False))
        return torch.cat(pyramid, dim=1)


def fcn_head(in_channels: int, hidden: int, num_classes: int, norm: NormSpec) -> nn.Sequential:
    """3x3 conv-norm-ReLU, dropout 0.1, 1x1 classifier (PSPNet's final and auxiliary heads)."""
    classifier = nn.Conv2d(hidden, num_classes, kernel_size=1)
    init_classifier(classifier)
    return nn.Sequential(
        conv_norm_relu(in_channels, hidden, 3, norm=norm), nn.Dropout2d(0.1), classifier
    )


@META_ARCH_REGISTRY.register()
class PSPNet(SemanticBaseline):
    """Dilated ResNet + pyramid pooling module (+ auxiliary res4 head while training)."""

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        bins: Sequence[int] = (1, 2, 3, 6),
        aux_weight: float = 0.4,
        norm: NormSpec = "BN",
        **kwargs,
    ):
        """
        Args:
            backbone: a dilated ResNet returning ``res5`` (and ``res4`` when aux_weight > 0).
            bins: output sizes of the pyramid's pooling levels.
            aux_weight: weight of the auxiliary res4 loss; 0 leaves the auxiliary head out.
            norm: norm of the pyramid and head convs.
            kwargs: see :class:`SemanticBaseline`.
        """
        super().__init__(**kwargs)
        shapes = backbone.output_shape()
        needed = ["res5"] + (["res4"] if aux_weight > 0 else [])
        missing = [name for name in needed if name not in shapes]
        if missing:
            raise ValueError(
                f"PSPNet needs backbone features {needed}; add {missing} to "
                "MODEL.RESNETS.OUT_FEATURES"
            )
        self.backbone = backbone
        self.output_stride = shapes["res5"].stride
        res5 = shapes["res5"].channels
        self.ppm = PyramidPooling(res5, bins, norm)
        self.head = fcn_head(self.ppm.out_channels, res5 // 4, self.num_classes, norm)
        self.aux_weight = aux_weight
        if aux_weight > 0:
            res4 = shapes["res4"].channels
            self.aux_head = fcn_head(res4, res4 // 4, self.num_classes, norm)

    @classmethod
    def from_config(cls, cfg):
        psp = cfg.MODEL.PSPNET
        return {
            "backbone": build_backbone(cfg),
            "bins": tuple(psp.BINS),
            "aux_weight": psp.AUX_WEIGHT,
            "norm": cfg.MODEL.SEM_SEG_HEAD.NORM,
            **semantic_baseline_config(cfg),
        }

    @property
    def size_divisibility(self) -> int:
        return self.output_stride

    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        size = images.shape[-2:]
        features = self.backbone(images)
        logits = self.head(self.ppm(features["res5"]))
        outputs = {"sem_seg": F.interpolate(logits, size, mode="bilinear", align_corners=False)}
        if self.training and self.aux_weight > 0:
            aux = self.aux_head(features["res4"])
            outputs["aux"] = F.interpolate(aux, size, mode="bilinear", align_corners=False)
        return outputs

    def losses(
        self, outputs: dict[str, torch.Tensor], targets: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        losses = super().losses(outputs, targets)
        if "aux" in outputs:
            losses["loss_aux"] = self.cross_entropy(outputs["aux"], targets) * self.aux_weight
        return losses
