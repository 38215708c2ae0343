"""Depth as a fourth input channel: moving aligned depth images with the photo (they are
read by :func:`grape_instances.core.depth.read_depth`).

A depth image is a 16-bit PNG in millimetres, 0 = no reading, pixel-aligned with its RGB
image (what RGB-D cameras write and the GrapesNet importer pairs); a COCO image entry names it
in ``depth_file`` and a Detectron2 record in ``depth_file_name``.

Depth is kept apart from the colour image while augmenting, and follows the very transforms
Detectron2 drew for the colour image (:func:`transform_depth`), because Detectron2's transforms
assume uint8 colour: a 4-channel float image would be resized through another code path
(``F.interpolate``, no antialiasing, unlike PIL for the uint8 photo), blended by the
brightness / contrast jitter, and refused by RandomSaturation (grey from 3 weights).

Geometry uses **nearest-neighbour** resizing, as Detectron2 does for label maps: a linear
blend of a 0 hole with a valid reading invents a surface halfway to the camera, and across a
bunch's edge it mixes foreground and background depths into floating pixels; nearest keeps
every value a real reading or a hole. Photometric transforms leave depth untouched.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import detectron2.data.transforms as T
import numpy as np
import torch
from PIL import Image

from ..core.errors import GrapeInputError
from ..core.images import read_image_size

#: Transforms that change colours only: depth does not follow them.
PHOTOMETRIC_TRANSFORMS = (T.BlendTransform, T.ColorTransform, T.PILColorTransform)


def transform_depth(
    transforms: T.Transform | Sequence[T.Transform], depth: np.ndarray
) -> np.ndarray:
    """Apply the geometric part of the photo's transforms to its H x W float depth map."""
    if isinstance(transforms, T.TransformList):
        transforms = transforms.transforms
    elif isinstance(transforms, T.Transform):
        transforms = [transforms]
    for tfm in transforms:
        if isinstance(tfm, PHOTOMETRIC_TRANSFORMS):
            continue
        if isinstance(tfm, T.ResizeTransform):
            # PIL's nearest on a 32-bit float image: the same pixel choice as the uint8 masks
            # and label maps get from ResizeTransform (its float path samples differently).
            resized = Image.fromarray(np.ascontiguousarray(depth, np.float32)).resize(
                (tfm.new_w, tfm.new_h), Image.NEAREST
            )
            depth = np.asarray(resized, dtype=np.float32)
        elif isinstance(tfm, T.PadTransform):
            depth = np.pad(depth, ((tfm.y0, tfm.y1), (tfm.x0, tfm.x1)))  # padding: no reading
        else:
            # Flips, crops and anything else: moved as Detectron2 moves a label map.
            depth = tfm.apply_segmentation(depth)
    return np.ascontiguousarray(depth)


def stack_depth(image: torch.Tensor, depth: np.ndarray, max_mm: float) -> torch.Tensor:
    """C x H x W photo + H x W depth (mm, clipped to ``max_mm``) -> float32 (C+1) x H x W."""
    if tuple(image.shape[1:]) != depth.shape:
        raise ValueError(f"image {tuple(image.shape)} and depth {depth.shape} differ in size")
    depth_t = torch.from_numpy(np.minimum(depth, max_mm, dtype=np.float32))
    return torch.cat([image.to(torch.float32), depth_t[None]], dim=0)


def check_depth_config(cfg) -> None:
    """One line for a config whose input channels and normalisation disagree: with depth on,
    PIXEL_MEAN / PIXEL_STD need a fourth value for the depth channel (the stem's input
    channels are ``len(MODEL.PIXEL_MEAN)``); with it off, 4 values would build a 4-channel
    stem that the 3-channel photos cannot feed."""
    mean, std = list(cfg.MODEL.PIXEL_MEAN), list(cfg.MODEL.PIXEL_STD)
    if cfg.INPUT.DEPTH.ENABLED:
        if len(mean) != 4 or len(std) != 4:
            raise GrapeInputError(
                f"INPUT.DEPTH.ENABLED needs 4 values in MODEL.PIXEL_MEAN and MODEL.PIXEL_STD "
                f"(B, G, R, then depth in mm), got {len(mean)} and {len(std)}: e.g. "
                "MODEL.PIXEL_MEAN \"[103.53, 116.28, 123.675, 1000.0]\" "
                "MODEL.PIXEL_STD \"[57.375, 57.12, 58.395, 500.0]\""
            )
        if cfg.INPUT.DEPTH.MAX_MM <= 0:
            raise GrapeInputError(f"INPUT.DEPTH.MAX_MM must be > 0, got {cfg.INPUT.DEPTH.MAX_MM}")
    elif len(mean) != 3 or len(std) != 3:
        raise GrapeInputError(
            f"MODEL.PIXEL_MEAN / MODEL.PIXEL_STD have {len(mean)} / {len(std)} values but the "
            "input is a 3-channel photo (set INPUT.DEPTH.ENABLED True for RGB-D input)"
        )
    if any(s <= 0 for s in std):
        raise GrapeInputError(f"MODEL.PIXEL_STD {std}: every value must be > 0")


def check_depth_files(dataset_dicts: Sequence[Mapping], dataset_names) -> None:
    """Before training or evaluating with depth: every record names a depth image that
    exists, and its header has the photo's size (one line naming the first that does not),
    so a data-loader worker does not die on it mid-run."""
    for record in dataset_dicts:
        depth_file = record.get("depth_file_name")
        if not depth_file:
            raise GrapeInputError(
                f"{record['file_name']}: INPUT.DEPTH.ENABLED but its COCO image entry has no "
                f"depth_file (dataset {list(dataset_names)})"
            )
        if not os.path.isfile(depth_file):
            raise GrapeInputError(
                f"{depth_file}: depth image not found (of {record['file_name']})"
            )
        size = read_image_size(depth_file, max_pixels=None, photo=False)
        if (size.height, size.width) != (record["height"], record["width"]):
            raise GrapeInputError(
                f"{depth_file}: depth image is {size.width}x{size.height} but its RGB image "
                f"{record['file_name']} is {record['width']}x{record['height']}"
            )
