"""VGG16 encoder of SegNet, UNet and FCN-8s, registered as ``build_vgg16_backbone``.

The conv1_1..conv5_3 layout of VGG16 with a norm after every conv (BN as in torchvision's
``vgg16_bn``, GroupNorm for small CPU batches, or none for the plain VGG16), a width
multiplier for narrow CPU variants, the max-pooling indices SegNet's decoder needs and,
optionally, fc6 / fc7 as convolutions (FCN's "convolutionalised" classifier).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

from ..core.errors import GrapeInputError
from .layers import NormSpec, conv_norm_relu, read_state_dict, scale_channels
from .rgbd import is_widened_input_conv, widen_rgb_filters

logger = logging.getLogger(__name__)

# Output channels of every conv of VGG16 (configuration "D"), one tuple per stage.
VGG16_LAYOUT: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)


class VGG16Encoder(Backbone):
    """VGG16's 13 convs in 5 stages, each stage closed by a 2x2 max-pool with indices.

    Features (names usable in ``out_features``):
      ``conv{s}``: the last conv of stage s before pooling (UNet skips), stride 2**(s-1);
      ``pool{s}`` and ``pool{s}_indices``: the pooled map and its argmax positions (SegNet),
      stride 2**s; ``fc7``: fc6 (7x7) and fc7 (1x1) as convs on pool5 (FCN), stride 32,
      present only when ``fc_dim > 0``.
    Convs keep their bias (as torchvision's VGG does) so ImageNet weights load unchanged.
    """

    convs_per_stage: tuple[int, ...] = tuple(len(stage) for stage in VGG16_LAYOUT)

    def __init__(
        self,
        *,
        in_channels: int = 3,
        width_mult: float = 1.0,
        norm: NormSpec = "BN",
        fc_dim: int = 0,
        fc_dropout: float = 0.5,
        out_features: Sequence[str] | None = None,
    ):
        super().__init__()
        self.width_mult = width_mult
        self.fc_dim = fc_dim
        channels = in_channels
        self._out_feature_channels: dict[str, int] = {}
        self._out_feature_strides: dict[str, int] = {}
        for stage, widths in enumerate(VGG16_LAYOUT, start=1):
            for layer, width in enumerate(widths, start=1):
                out = scale_channels(width, width_mult)
                conv = conv_norm_relu(channels, out, 3, norm=norm, bias=True)
                self.add_module(f"conv{stage}_{layer}", conv)
                channels = out
            for name, stride in (
                (f"conv{stage}", 2 ** (stage - 1)),
                (f"pool{stage}", 2**stage),
                (f"pool{stage}_indices", 2**stage),
            ):
                self._out_feature_channels[name] = channels
                self._out_feature_strides[name] = stride
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2, return_indices=True)
        if fc_dim > 0:
            # Padding 3 keeps fc6 aligned with pool5, replacing the original FCN's
            # 100-pixel input padding and crop layers.
            self.fc6 = conv_norm_relu(channels, fc_dim, 7, norm=None)
            self.fc7 = conv_norm_relu(fc_dim, fc_dim, 1, norm=None)
            self.fc_dropout = nn.Dropout(fc_dropout)
            self._out_feature_channels["fc7"] = fc_dim
            self._out_feature_strides["fc7"] = 32
        all_features = list(self._out_feature_channels)
        self._out_features = list(out_features) if out_features else all_features
        unknown = set(self._out_features) - set(all_features)
        if unknown:
            raise ValueError(f"VGG16Encoder has no features {sorted(unknown)}")

    @property
    def size_divisibility(self) -> int:
        return 32

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features: dict[str, torch.Tensor] = {}
        for stage, widths in enumerate(VGG16_LAYOUT, start=1):
            for layer in range(1, len(widths) + 1):
                x = getattr(self, f"conv{stage}_{layer}")(x)
            features[f"conv{stage}"] = x
            x, indices = self.pool(x)
            features[f"pool{stage}"] = x
            features[f"pool{stage}_indices"] = indices
        if self.fc_dim > 0 and "fc7" in self._out_features:
            x = self.fc_dropout(self.fc6(x))
            features["fc7"] = self.fc_dropout(self.fc7(x))
        return {name: features[name] for name in self._out_features}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }


def torchvision_vgg16_key_map(batch_norm: bool) -> dict[str, str]:
    """torchvision ``vgg16`` / ``vgg16_bn`` parameter names -> ``VGG16Encoder`` names.

    torchvision numbers the modules of ``features`` in order (conv, [bn], relu, ..., pool);
    walking VGG16's layout reproduces that numbering. fc6 / fc7 are ``classifier.0`` / ``.3``.
    """
    key_map: dict[str, str] = {}
    index = 0
    for stage, widths in enumerate(VGG16_LAYOUT, start=1):
        for layer in range(1, len(widths) + 1):
            ours = f"conv{stage}_{layer}"
            for param in ("weight", "bias"):
                key_map[f"features.{index}.{param}"] = f"{ours}.{param}"
            if batch_norm:
                for param in ("weight", "bias", "running_mean", "running_var"):
                    key_map[f"features.{index + 1}.{param}"] = f"{ours}.norm.{param}"
                key_map[f"features.{index + 1}.num_batches_tracked"] = (
                    f"{ours}.norm.num_batches_tracked"
                )
                index += 3
            else:
                index += 2
        index += 1  # the max-pool
    for tv_name, ours in (("classifier.0", "fc6"), ("classifier.3", "fc7")):
        for param in ("weight", "bias"):
            key_map[f"{tv_name}.{param}"] = f"{ours}.{param}"
    return key_map


def _same_norm_kind(our_key: str, ours: dict[str, torch.Tensor]) -> bool:
    """BN parameters go only into BatchNorm-type layers (not into GroupNorm's affine)."""
    if ".norm." not in our_key:
        return True
    return f"{our_key.rsplit('.', 1)[0]}.running_mean" in ours


def load_torchvision_vgg16(
    encoder: VGG16Encoder,
    state_dict: dict[str, torch.Tensor],
    *,
    input_format: str = "BGR",
    source: str = "state dict",
) -> None:
    """Load a torchvision VGG16(-BN) ImageNet state dict into ``encoder`` (in place).

    Conv weights must all be present with matching shapes (so ``width_mult`` must be 1).
    torchvision's first conv expects RGB; for ``input_format`` "BGR" (Detectron2's default)
    its input channels are reversed, so the data pipeline stays the one Mask R-CNN uses.
    A 4-channel (RGB-D) encoder gets the RGB filters in its first 3 input channels and their
    mean in the depth channel (grape_instances.modeling.rgbd). BN statistics load only into
    a BN encoder; fc6 / fc7 load, reshaped into convs as in FCN, only when
    ``encoder.fc_dim`` is 4096; anything else is skipped and logged.
    """
    if input_format not in ("RGB", "BGR"):
        raise ValueError(f"torchvision VGG weights need RGB or BGR input, not {input_format}")
    batch_norm = "features.1.running_mean" in state_dict
    key_map = torchvision_vgg16_key_map(batch_norm)
    ours = encoder.state_dict()
    missing_convs = [
        tv_key
        for tv_key, our_key in key_map.items()
        if tv_key.startswith("features.") and ".norm." not in our_key and tv_key not in state_dict
    ]
    if missing_convs:
        raise GrapeInputError(
            f"{source}: not a torchvision VGG16 state dict (missing {missing_convs[0]})"
        )
    loaded: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for tv_key, value in state_dict.items():
        our_key = key_map.get(tv_key)
        if our_key is None or our_key not in ours or not _same_norm_kind(our_key, ours):
            skipped.append(tv_key)
            continue
        target_shape = ours[our_key].shape
        if our_key.startswith(("fc6.", "fc7.")) and value.numel() == ours[our_key].numel():
            value = value.reshape(target_shape)  # Linear -> conv ("convolutionalisation")
        if our_key == "conv1_1.weight" and input_format == "BGR":
            value = value.flip(1)
        if our_key == "conv1_1.weight" and is_widened_input_conv(value, ours[our_key]):
            value = widen_rgb_filters(value, target_shape[1])  # RGB-D input (modeling.rgbd)
            logger.info("%s: RGB filters of conv1_1 copied into the first 3 of %d input "
                        "channels, the depth channel starts as their mean", source,
                        target_shape[1])
        if value.shape != target_shape:
            if our_key.startswith(("fc6.", "fc7.")):
                skipped.append(tv_key)
                continue
            raise GrapeInputError(
                f"{source}: {tv_key} has shape {tuple(value.shape)} but the encoder needs "
                f"{tuple(target_shape)} (MODEL.VGG.WIDTH_MULT must be 1 to load ImageNet weights)"
            )
        loaded[our_key] = value
    encoder.load_state_dict(loaded, strict=False)
    not_loaded = sorted(set(ours) - set(loaded))
    if skipped:
        logger.info(
            "%s: skipped %d keys not used by the encoder: %s",
            source,
            len(skipped),
            ", ".join(skipped[:8]),
        )
    if not_loaded:
        logger.warning(
            "%s: %d encoder parameters keep their initialisation: %s",
            source,
            len(not_loaded),
            ", ".join(not_loaded[:8]),
        )
    logger.info("%s: loaded %d encoder tensors", source, len(loaded))



@BACKBONE_REGISTRY.register()
def build_vgg16_backbone(cfg, input_shape: ShapeSpec) -> VGG16Encoder:
    """VGG16 encoder from ``cfg.MODEL.VGG`` (+ ``cfg.MODEL.ENCODER_WEIGHTS`` if set)."""
    encoder = VGG16Encoder(
        in_channels=input_shape.channels,
        width_mult=cfg.MODEL.VGG.WIDTH_MULT,
        norm=cfg.MODEL.VGG.NORM,
        fc_dim=cfg.MODEL.VGG.FC_DIM,
        fc_dropout=cfg.MODEL.VGG.FC_DROPOUT,
    )
    if cfg.MODEL.ENCODER_WEIGHTS:
        weights = cfg.MODEL.ENCODER_WEIGHTS
        load_torchvision_vgg16(
            encoder, read_state_dict(weights), input_format=cfg.INPUT.FORMAT, source=weights
        )
    return encoder
