"""COCO masks: the one decode of a COCO ``segmentation`` and the one RLE-counts normalisation.

A COCO ``segmentation`` is a list of flat ``[x1, y1, x2, y2, ...]`` polygons, an RLE with
``counts`` as a string (compressed; JSON) or bytes (what pycocotools returns and takes), or
an uncompressed RLE (``counts`` a list of runs). Everything that rasterises, encodes, scores
or measures a mask goes through these functions, which go through pycocotools.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


def counts_as_bytes(counts: str | bytes) -> bytes:
    """Compressed RLE counts as pycocotools takes them (bytes)."""
    return counts.encode("ascii") if isinstance(counts, str) else counts


def counts_as_str(counts: str | bytes) -> str:
    """Compressed RLE counts as JSON holds them (text)."""
    return counts.decode("ascii") if isinstance(counts, bytes) else counts


def encoded_rle(rle: dict) -> dict:
    """A copy of a compressed RLE with bytes counts (pycocotools' form)."""
    return {**rle, "counts": counts_as_bytes(rle["counts"])}


def json_rle(rle: dict) -> dict:
    """A copy of a compressed RLE with text counts (JSON's form)."""
    return {**rle, "counts": counts_as_str(rle["counts"])}


def mask_to_rle(mask: np.ndarray) -> dict:
    """Encode a binary H x W mask as a JSON-ready compressed RLE, the same string as
    ``mask_utils.encode``.

    A bunch covers a few columns of a photo: only the columns between its first and last
    pixel are copied column-major and scanned for runs; the empty columns either side are
    one run each. pycocotools would copy and scan the whole photo for every mask (most of
    the time prediction spends after the model)."""
    mask = np.asarray(mask).astype(bool, copy=False)
    height, width = mask.shape
    columns = np.flatnonzero(mask.any(axis=0))
    if columns.size == 0:
        counts = [height * width]
    else:
        first, last = int(columns[0]), int(columns[-1]) + 1
        flat = mask[:, first:last].T.ravel()  # column-major, as COCO's RLE runs
        edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        counts = np.diff(np.concatenate(([0], edges, [flat.size]))).tolist()
        if flat[0]:
            counts.insert(0, 0)  # RLE starts with a run of zeros, maybe empty
        counts[0] += first * height
        after = (width - last) * height
        if not flat[-1]:
            counts[-1] += after
        elif after:
            counts.append(after)
    return json_rle(mask_utils.frPyObjects({"counts": counts, "size": [height, width]},
                                           height, width))


def polygons_to_rle(polygons: Sequence[Sequence[float]], height: int, width: int) -> dict:
    """Rasterise flat ``[x1, y1, x2, y2, ...]`` polygons (one object) into a single JSON-ready
    RLE."""
    rles = mask_utils.frPyObjects([list(map(float, p)) for p in polygons], height, width)
    return json_rle(mask_utils.merge(rles))


def rle_area_bbox(rle: dict) -> tuple[float, list[float]]:
    """Area in pixels and ``[x, y, w, h]`` box of an RLE, as pycocotools computes them."""
    enc = encoded_rle(rle)
    return float(mask_utils.area(enc)), [float(v) for v in mask_utils.toBbox(enc)]


def segmentation_to_rle(segm: Any, height: int, width: int) -> dict:
    """Any COCO ``segmentation`` (polygons, RLE or uncompressed RLE) as one compressed RLE
    with bytes counts, the form pycocotools' ``iou`` / ``decode`` accept, without decoding it
    to a dense mask."""
    if isinstance(segm, list):
        return encoded_rle(polygons_to_rle(segm, height, width))
    if isinstance(segm.get("counts"), list):
        return mask_utils.frPyObjects(segm, *segm["size"])
    return encoded_rle(segm)


def rle_to_mask(rle: dict) -> np.ndarray:
    """Decode a compressed or uncompressed RLE to a uint8 H x W mask."""
    h, w = rle["size"]
    return mask_utils.decode(segmentation_to_rle(rle, h, w))


def segmentation_to_mask(segm: Any, height: int, width: int) -> np.ndarray:
    """Decode any COCO ``segmentation`` (polygons, RLE or uncompressed RLE) to a uint8 mask."""
    return mask_utils.decode(segmentation_to_rle(segm, height, width))


def rasterize_polygons(polygons: Sequence[Any], height: int, width: int) -> np.ndarray:
    """Bool mask of pixel-edge polygons (arrays or flat lists), rasterised by pycocotools as
    every converter does; all False for no polygon."""
    if not len(polygons):
        return np.zeros((height, width), bool)
    flat = [np.asarray(p, np.float64).ravel().tolist() for p in polygons]
    return segmentation_to_mask(flat, height, width) > 0


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
