"""Depth images: the one rule that finds a photo's depth image and the one reader.

A depth image is a single-channel 16-bit PNG (or TIFF) in millimetres, 0 = no reading,
pixel-aligned with its RGB image (what RGB-D cameras write and the GrapesNet importer pairs).
Training (a COCO image's ``depth_file``), prediction (``visualize.py --depth``), measuring
(``measure.py --depth``) and the RGB-D ablation's statistics all read it here.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .errors import GrapeInputError
from .images import DEFAULT_MAX_PIXELS, UndecodableImageError, read_image_size

#: File types tried, in this order, for a depth image with the RGB image's stem.
DEPTH_EXTENSIONS = (".png", ".tif", ".tiff")


class UndecodableDepthError(GrapeInputError, OSError):
    """A depth file that is gone or cannot be decoded: the mapper skips its record, as it
    skips an undecodable photo (an OSError, like PIL's decode errors)."""


def read_depth(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """A depth image as float32 H x W millimetres (0 = no reading).

    ``size`` (height, width) is the RGB image's: a depth image of another size is not
    aligned to it. 8-bit or colour PNGs are refused: they do not hold millimetres.
    """
    if not os.path.isfile(path):
        raise UndecodableDepthError(f"{path}: depth image not found")
    # the header first: a file claiming 60000 x 60000 pixels is refused before decoding
    try:
        header = read_image_size(path, max_pixels=DEFAULT_MAX_PIXELS, photo=False)
    except UndecodableImageError as e:
        reason = str(e).split(": ", 1)[-1]
        raise UndecodableDepthError(f"{path}: cannot decode the depth image ({reason})"
                                    ) from None
    if size is not None and (header.height, header.width) != tuple(size) and \
            header.orientation == 1:
        raise GrapeInputError(
            f"{path}: depth image is {header.width}x{header.height} but its RGB image is "
            f"{size[1]}x{size[0]} (they must be aligned pixel for pixel)"
        )
    try:
        depth = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    except cv2.error as e:  # OpenCV's own size limit, a header it cannot parse
        reason = (str(e).strip().splitlines() or ["OpenCV error"])[-1][:120]
        raise UndecodableDepthError(f"{path}: cannot decode the depth image ({reason})"
                                    ) from None
    if depth is None:
        raise UndecodableDepthError(f"{path}: cannot decode the depth image")
    if depth.ndim != 2 or depth.dtype != np.uint16:
        channels = 1 if depth.ndim == 2 else depth.shape[2]
        raise GrapeInputError(
            f"{path}: not a 16-bit single-channel depth PNG in mm ({depth.dtype}, "
            f"{channels} channel(s))"
        )
    if size is not None and depth.shape != tuple(size):
        raise GrapeInputError(
            f"{path}: depth image is {depth.shape[1]}x{depth.shape[0]} but its RGB image is "
            f"{size[1]}x{size[0]} (they must be aligned pixel for pixel)"
        )
    return depth.astype(np.float32)


def find_depth(depth_dir: Path, rel_name: str) -> Path | None:
    """The depth image of the RGB image ``rel_name`` (relative to the images folder): same
    relative folder and stem under ``depth_dir``, else the same stem at its top."""
    rel = Path(rel_name)
    for folder in dict.fromkeys([depth_dir / rel.parent, depth_dir]):
        for ext in DEPTH_EXTENSIONS:
            candidate = folder / f"{rel.stem}{ext}"
            if candidate.is_file():
                return candidate
    return None
