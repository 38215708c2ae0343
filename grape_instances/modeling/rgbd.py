"""RGB weights for an RGB-D model: a 3-channel first conv widened to the model's 4 inputs.

With ``INPUT.DEPTH.ENABLED`` the stem takes ``len(MODEL.PIXEL_MEAN)`` = 4 channels (Detectron2's
``build_backbone`` passes that as ``input_shape.channels``; the ResNet ``BasicStem`` and the
VGG16 encoder build their first conv from it). Every pretrained checkpoint (Detectron2's model
zoo, MSRA / torchvision ImageNet weights, an RGB grape model) has a 3-channel first conv,
which Detectron2's checkpointer would drop as a shape mismatch, leaving the stem random.
Here its RGB filters are copied into the first 3 input channels unchanged, and each extra
(depth) channel gets the **mean of the RGB filters**: the depth channel, normalised to a
unit-scale signal like each colour channel, then starts as a grey-like input whose edges
(depth steps between touching bunches) excite the pretrained edge filters from the first
step. Zeros would reproduce the RGB model exactly at the start but leave a frozen stem
(``MODEL.BACKBONE.FREEZE_AT`` >= 1, Detectron2's default 2) blind to depth for good.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.checkpoint.c2_model_loading import align_and_update_state_dicts
from torch import nn

logger = logging.getLogger(__name__)

RGB_CHANNELS = 3


def widen_rgb_filters(rgb: torch.Tensor, in_channels: int) -> torch.Tensor:
    """(O, 3, kh, kw) RGB conv weights -> (O, in_channels, kh, kw): RGB copied, every extra
    channel the mean of the three RGB filters."""
    extra = rgb.mean(dim=1, keepdim=True).expand(-1, in_channels - rgb.shape[1], -1, -1)
    return torch.cat([rgb, extra], dim=1)


def is_widened_input_conv(
    checkpoint_value: torch.Tensor, model_value: torch.Tensor
) -> bool:
    """A 3-input-channel conv weight in the checkpoint where the model's has more inputs and
    otherwise the same shape: only an image-reading first conv looks like this."""
    return (
        checkpoint_value.ndim == 4
        and model_value.ndim == 4
        and checkpoint_value.shape[1] == RGB_CHANNELS
        and model_value.shape[1] > RGB_CHANNELS
        and checkpoint_value.shape[0] == model_value.shape[0]
        and checkpoint_value.shape[2:] == model_value.shape[2:]
    )


def widen_input_convs(
    model_state: Mapping[str, torch.Tensor],
    checkpoint_state: MutableMapping[str, torch.Tensor],
    source: str = "checkpoint",
) -> list[str]:
    """Widen (in place) every RGB first-conv weight of ``checkpoint_state`` to the model's
    input channels; returns the keys widened, each logged in one line."""
    widened = []
    for key, value in list(checkpoint_state.items()):
        target = model_state.get(key)
        if not isinstance(value, torch.Tensor) or target is None:
            continue
        if is_widened_input_conv(value, target):
            checkpoint_state[key] = widen_rgb_filters(value.to(target.dtype), target.shape[1])
            widened.append(key)
            logger.info(
                "%s: %s has RGB filters (%d input channels); copied into the first 3 of the "
                "model's %d, the depth channel starts as their mean",
                source, key, RGB_CHANNELS, target.shape[1],
            )
    return widened


def model_input_channels(model: nn.Module) -> int:
    """Input channels of a Detectron2-style model: the length of its ``pixel_mean``."""
    pixel_mean = getattr(model, "pixel_mean", None)
    return int(pixel_mean.numel()) if isinstance(pixel_mean, torch.Tensor) else RGB_CHANNELS


class RGBDCheckpointerMixin:
    """``_load_model`` of a DetectionCheckpointer that loads RGB weights into an RGB-D model
    (see the module docstring); identical to Detectron2's for an RGB model."""

    def _load_model(self, checkpoint):
        model_state = self.model.state_dict()
        state = checkpoint["model"]
        self._convert_ndarray_to_tensor(state)
        in_channels = model_input_channels(self.model)
        if checkpoint.get("matching_heuristics", False) and in_channels > RGB_CHANNELS:
            # Detectron2 renames model-zoo keys by matching them with the model's and drops
            # any whose shape differs: it is shown the image-reading convs with 3 inputs so
            # that the RGB filters are matched (and kept), then widened below.
            rgb_view = {
                key: value[:, :RGB_CHANNELS]
                if value.ndim == 4 and value.shape[1] == in_channels else value
                for key, value in model_state.items()
            }
            checkpoint["model"] = align_and_update_state_dicts(
                rgb_view, state, c2_conversion=checkpoint.get("__author__") == "Caffe2"
            )
            checkpoint["matching_heuristics"] = False
        widen_input_convs(model_state, checkpoint["model"])
        return super()._load_model(checkpoint)


class RGBDCheckpointer(RGBDCheckpointerMixin, DetectionCheckpointer):
    """Detectron2's DetectionCheckpointer that also loads RGB weights into an RGB-D stem."""
