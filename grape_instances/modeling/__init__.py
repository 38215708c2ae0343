"""Semantic baselines for Detectron2: importing this package registers them.

``META_ARCH_REGISTRY``: SegNet, PSPNet, UNet, FCN8s. ``BACKBONE_REGISTRY``:
build_vgg16_backbone, build_dilated_resnet_backbone.
"""

from . import fcn, pspnet, resnet, segnet, unet, vgg  # noqa: F401  (registration)
from .fcn import FCN8s
from .pspnet import PSPNet
from .segnet import SegNet
from .semantic_base import SemanticBaseline
from .unet import UNet

__all__ = ["FCN8s", "PSPNet", "SegNet", "SemanticBaseline", "UNet"]
