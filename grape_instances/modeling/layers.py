"""Layers and helpers shared by the semantic baselines' encoders and decoders."""

from __future__ import annotations

import logging
import math
import pickle
from collections.abc import Callable

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.layers import Conv2d, get_norm
from detectron2.utils.file_io import PathManager
from torch import nn
from torch.nn import functional as F

from ..core.errors import GrapeInputError

logger = logging.getLogger(__name__)

NormSpec = str | Callable[[int], nn.Module] | None

def resolve_norm(norm: NormSpec) -> NormSpec:
    """Detectron2's norm names, except that "GN" also works for narrow layers.

    Detectron2's "GN" is ``GroupNorm(32, C)``, which fails for C not divisible by 32 (the
    narrow CPU variants). Here "GN" keeps 32 groups wherever C allows it (every layer of the
    full models) and otherwise uses the largest group count that divides C with at least two
    channels per group.
    """
    if norm == "GN":
        return lambda channels: nn.GroupNorm(math.gcd(32, max(channels // 2, 1)), channels)
    return norm


def scale_channels(channels: int, width_mult: float) -> int:
    """Channels of a layer in a narrowed network: a multiple of 8, at least 8."""
    if width_mult == 1.0:
        return channels
    return max(8, int(round(channels * width_mult / 8.0)) * 8)


def conv_norm_relu(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    *,
    norm: NormSpec = "BN",
    dilation: int = 1,
    bias: bool | None = None,
) -> Conv2d:
    """A same-padding conv followed by a norm (if any) and ReLU, MSRA-initialised."""
    norm_layer = get_norm(resolve_norm(norm), out_channels)
    conv = Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        padding=dilation * (kernel_size - 1) // 2,
        dilation=dilation,
        bias=norm_layer is None if bias is None else bias,
        norm=norm_layer,
        activation=F.relu,
    )
    weight_init.c2_msra_fill(conv)
    return conv


def init_classifier(conv: nn.Conv2d) -> None:
    """Small random weights for a final per-pixel classifier, so training starts near
    uniform class probabilities (loss ~ ln C) instead of at large random logits."""
    nn.init.normal_(conv.weight, std=0.01)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)




def read_state_dict(path_or_url: str) -> dict[str, torch.Tensor]:
    """A state dict from a local path or URL (downloaded once into Detectron2's cache)."""
    try:
        local = PathManager.get_local_path(path_or_url)
        state = torch.load(local, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise GrapeInputError(f"{path_or_url}: cannot read encoder weights ({exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise GrapeInputError(f"{path_or_url}: encoder weights are not a state dict")
    return state

