"""Build and write COCO instances JSON: the single interchange format of the project.

Every converter feeds a :class:`CocoBuilder`; masks become RLE through pycocotools, and
``area`` and ``bbox`` are always computed from the mask, never trusted from the source.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from .. import __version__
from ..fileio import OutputSet, write_json_atomic

DEFAULT_CATEGORY = "bunch"


def mask_to_rle(mask: np.ndarray) -> dict:
    """Encode a binary H x W mask as a JSON-ready compressed RLE."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def polygons_to_rle(polygons: Sequence[Sequence[float]], height: int, width: int) -> dict:
    """Rasterise flat ``[x1, y1, x2, y2, ...]`` polygons (one object) into a single RLE."""
    rles = mask_utils.frPyObjects([list(map(float, p)) for p in polygons], height, width)
    rle = mask_utils.merge(rles)
    if isinstance(rle["counts"], bytes):
        rle["counts"] = rle["counts"].decode("ascii")
    return rle


def rle_area_bbox(rle: dict) -> tuple[float, list[float]]:
    """Area in pixels and ``[x, y, w, h]`` box of an RLE, as pycocotools computes them."""
    enc = dict(rle)
    if isinstance(enc["counts"], str):
        enc["counts"] = enc["counts"].encode("ascii")
    return float(mask_utils.area(enc)), [float(v) for v in mask_utils.toBbox(enc)]


def rle_to_mask(rle: dict) -> np.ndarray:
    """Decode a compressed or uncompressed RLE to a uint8 H x W mask."""
    enc = dict(rle)
    if isinstance(enc["counts"], list):
        enc = mask_utils.frPyObjects(enc, *enc["size"])
    elif isinstance(enc["counts"], str):
        enc["counts"] = enc["counts"].encode("ascii")
    return mask_utils.decode(enc)


def segmentation_to_mask(segm: Any, height: int, width: int) -> np.ndarray:
    """Decode any COCO ``segmentation`` (polygons, RLE or uncompressed RLE) to a mask."""
    if isinstance(segm, list):
        return rle_to_mask(polygons_to_rle(segm, height, width))
    return rle_to_mask(segm)


class CocoBuilder:
    """Accumulates images, categories and annotations with stable, consecutive ids.

    Args:
        categories: fixed category names (ids 1..N in this order); when None, categories
            are added in order of first use.
        source: what the annotations came from, recorded in ``info``.
    """

    def __init__(self, categories: Sequence[str] | None = None, source: str = "") -> None:
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self._fixed = categories is not None
        self._cat_ids: dict[str, int] = {}
        for name in categories or []:
            self._category_id(name, create=True)
        self.info = {
            "description": f"grape_instances COCO export from {source}" if source else "",
            "source": source,
            "converter": f"grape_instances {__version__}",
            "date_created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
        }

    def _category_id(self, name: str, create: bool) -> int | None:
        if name not in self._cat_ids and create:
            self._cat_ids[name] = len(self._cat_ids) + 1
        return self._cat_ids.get(name)

    @property
    def categories(self) -> list[dict]:
        return [{"id": i, "name": n, "supercategory": "grape"} for n, i in self._cat_ids.items()]

    def add_image(self, file_name: str, height: int, width: int, **extra: Any) -> int:
        """Register an image; ``extra`` keys (e.g. ``depth_file``) are kept in the record."""
        image_id = len(self.images) + 1
        self.images.append(
            {"id": image_id, "file_name": file_name, "height": int(height), "width": int(width),
             **extra}
        )
        return image_id

    def image_size(self, image_id: int) -> tuple[int, int]:
        """``(height, width)`` of a registered image (a subclass may keep images on disk)."""
        image = self.images[image_id - 1]
        return image["height"], image["width"]

    def add_annotation(
        self,
        image_id: int,
        *,
        mask: np.ndarray | None = None,
        polygons: Sequence[Sequence[float]] | None = None,
        category: str = DEFAULT_CATEGORY,
        iscrowd: int = 0,
        keep_polygons: bool = False,
        **extra: Any,
    ) -> int | None:
        """Add one instance from a binary mask or from polygons of the same object.

        Returns the annotation id, or None when the mask is empty (nothing is added).
        With ``keep_polygons`` polygon input is stored as polygons (area and bbox still from
        the rasterised mask); otherwise the segmentation is RLE.
        """
        h, w = self.image_size(image_id)
        if mask is not None:
            if mask.shape[:2] != (h, w):
                raise ValueError(f"mask shape {mask.shape} != image size {(h, w)}")
            rle = mask_to_rle(mask)
        elif polygons:
            rle = polygons_to_rle(polygons, h, w)
        else:
            raise ValueError("add_annotation needs a mask or polygons")
        area, bbox = rle_area_bbox(rle)
        if area <= 0:
            return None
        cat_id = self._category_id(category, create=not self._fixed)
        if cat_id is None:
            raise ValueError(f"unknown category {category!r}")
        segmentation: Any = rle
        if keep_polygons and polygons is not None and not iscrowd:
            segmentation = [[round(float(v), 2) for v in p] for p in polygons]
        ann = {
            "id": len(self.annotations) + 1,
            "image_id": image_id,
            "category_id": cat_id,
            "segmentation": segmentation,
            "area": area,
            "bbox": bbox,
            "iscrowd": int(iscrowd),
            **extra,
        }
        self.annotations.append(ann)
        return ann["id"]

    def to_dict(self) -> dict:
        return {
            "info": self.info,
            "licenses": [],
            "images": self.images,
            "annotations": self.annotations,
            "categories": self.categories,
        }

    def write(self, path: str | os.PathLike, overwrite: bool = False,
              outputs: OutputSet | None = None) -> None:
        """Write atomically (temporary file + rename); refuse to overwrite unless asked.
        With ``outputs`` (of :func:`~grape_instances.fileio.atomic_outputs`) the file is
        one of a set renamed into place together."""
        if outputs is not None:
            outputs.write_json(path, self.to_dict())
        else:
            write_json_atomic(path, self.to_dict(), overwrite=overwrite)
