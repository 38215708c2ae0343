"""A one-time copy of the training photos at the scale the model sees, masks as polygons.

The real-photo recipe (``INPUT.SCALE_CROP``) shrinks each 2048 px photo to about 1024 px and
cuts a 384 px window of it. Reading the original on every iteration decodes the whole JPEG
and every bunch's full-resolution mask, then throws most of it away: about half the CPU of a
training run. Instead, :func:`scaled_training_records` writes, once per photo,

- the photo at the largest scale the augmentation can ask for (``TARGET_SIZE`` x the top of
  ``SCALE_RANGE``: 1280 x 853 for a 2048 x 1365 photo, so nothing is ever upsampled), decoded
  with PIL's JPEG draft mode when the scale allows it, as a JPEG (quality 95);
- each bunch's mask as polygons at that scale, traced on the full-resolution mask (upsampled
  4 x, so the outline follows pixel edges to 1/8 px), and its box scaled;

and returns records that point at those files. With ``INPUT.MASK_FORMAT: polygon`` masks then
follow the resize and crop as coordinates and are rasterised at crop size (inside the mask
head's boxes), never as full-resolution bitmaps.

Cache entries live in ``DATASETS.SCALED_CACHE_DIR`` (one JPEG + one JSON per photo) and are
named by a hash of the source photo's path, size and modification time, the annotations and
the scale, so an edited photo or annotation gets a new entry instead of a stale one. A photo
that cannot be decoded keeps its original record (the mapper skips it with one warning).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import cv2
import numpy as np
from detectron2.data.transforms import CropTransform, FixedSizeCrop
from PIL import Image, ImageOps

from ..core.fileio import atomic_open
from ..core.masks import segmentation_to_mask

logger = logging.getLogger(__name__)

#: Bump when the cached files' content changes for the same inputs.
CACHE_VERSION = 2
#: Masks are upsampled this many times before their outline is traced,
TRACE_UPSAMPLE = 4
#: and the outline is simplified to within this many pixels of the full-resolution mask.
SIMPLIFY_PX = 0.5
JPEG_QUALITY = 95


def cache_size(height: int, width: int, target_hw, max_scale: float) -> tuple[int, int]:
    """(h, w) of the cached copy: the photo fitted into ``target_hw`` x ``max_scale`` (as
    Detectron2's ResizeScale fits it), never larger than the photo itself."""
    scale = min(target_hw[0] * max_scale / height, target_hw[1] * max_scale / width, 1.0)
    return max(1, round(height * scale)), max(1, round(width * scale))


def mask_to_polygons(mask: np.ndarray, sx: float = 1.0, sy: float = 1.0,
                     upsample: int = TRACE_UPSAMPLE,
                     simplify_px: float = SIMPLIFY_PX) -> list[list[float]]:
    """Outer outlines of a binary mask as flat COCO polygons, scaled by (sx, sy).

    The mask's bounding box is upsampled ``upsample`` x (nearest) before tracing, so that the
    traced points (pixel centres of the upsampled mask) lie 1 / (2 * upsample) px inside the
    true pixel edges; holes are filled (COCO polygons cannot hold them; WGISD masks are
    silhouettes with < 2 % holes). Pieces thinner than one upsampled pixel are dropped; the
    outline is simplified (Douglas-Peucker) to within ``simplify_px`` full-resolution pixels.
    """
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return []
    y0, x0 = ys.min(), xs.min()
    sub = np.ascontiguousarray(mask[y0:ys.max() + 1, x0:xs.max() + 1], dtype=np.uint8)
    if upsample > 1:
        sub = cv2.resize(sub, (sub.shape[1] * upsample, sub.shape[0] * upsample),
                         interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(np.pad(sub, 1), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for c in contours:
        if simplify_px > 0:
            c = cv2.approxPolyDP(c, simplify_px * upsample, True)
        if len(c) < 3:
            continue
        pts = (c[:, 0, :].astype(np.float64) - 1 + 0.5) / upsample + (x0, y0)
        pts *= (sx, sy)
        if abs(polygon_area(pts)) <= 0:
            continue
        polygons.append([round(float(v), 3) for v in pts.ravel()])
    return polygons


def polygon_area(points: np.ndarray) -> float:
    """Signed shoelace area of an N x 2 polygon."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def polygons_area(polygons) -> float:
    """Summed area of flat polygons (the pieces of one object do not overlap)."""
    return sum(abs(polygon_area(np.asarray(p, np.float64).reshape(-1, 2))) for p in polygons)


def clip_polygon(points: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Sutherland-Hodgman clip of an N x 2 polygon to the box [x0, x1] x [y0, y1].

    A concave polygon cut into several pieces comes back as one polygon joined by zero-area
    edges along the box border, which rasterises to the same pixels."""
    for axis, bound, keep_greater in ((0, x0, True), (0, x1, False), (1, y0, True),
                                      (1, y1, False)):
        if not len(points):
            break
        inside = points[:, axis] >= bound if keep_greater else points[:, axis] <= bound
        prev = np.roll(points, 1, axis=0)
        prev_inside = np.roll(inside, 1)
        out = []
        for p, q, p_in, q_in in zip(prev, points, prev_inside, inside, strict=True):
            if q_in != p_in:  # the edge p -> q crosses the border
                t = (bound - p[axis]) / (q[axis] - p[axis])
                out.append(p + t * (q - p))
            if q_in:
                out.append(q)
        points = np.asarray(out, np.float64).reshape(-1, 2)
    return points


class PolygonCropTransform(CropTransform):
    """CropTransform whose polygons are clipped in numpy (fvcore's needs shapely, which
    the project does not install); pieces left with no area are dropped."""

    def apply_polygons(self, polygons: list) -> list:
        out = []
        x1, y1 = self.x0 + self.w, self.y0 + self.h
        for polygon in polygons:
            points = np.asarray(polygon, np.float64).reshape(-1, 2)
            lo, hi = points.min(axis=0), points.max(axis=0)
            if hi[0] <= self.x0 or hi[1] <= self.y0 or lo[0] >= x1 or lo[1] >= y1:
                continue  # wholly outside the window
            if lo[0] >= self.x0 and lo[1] >= self.y0 and hi[0] <= x1 and hi[1] <= y1:
                out.append(points - (self.x0, self.y0))  # wholly inside
                continue
            clipped = clip_polygon(points, self.x0, self.y0, x1, y1)
            if len(clipped) >= 3 and abs(polygon_area(clipped)) > 1e-6:
                out.append(clipped - (self.x0, self.y0))
        return out


class FixedSizeCropAnywhere(FixedSizeCrop):
    """Detectron2's FixedSizeCrop with the window's x and y offsets drawn independently.

    Detectron2 (0.6) draws one uniform number for both axes, so every window lies on the
    photo's diagonal from top left to bottom right and bunches in the other two corners are
    never seen; its polygons are clipped by :class:`PolygonCropTransform`."""

    def _get_crop(self, image: np.ndarray):
        input_size = image.shape[:2]
        output_size = self.crop_size
        max_offset = np.maximum(np.subtract(input_size, output_size), 0)
        offset = np.round(max_offset * np.random.uniform(0.0, 1.0, size=2)).astype(int)
        return PolygonCropTransform(offset[1], offset[0], output_size[1], output_size[0],
                                    input_size[1], input_size[0])


def _cache_key(record: dict, size_hw: tuple[int, int]) -> str:
    st = os.stat(record["file_name"])
    annotations = [
        {k: a.get(k) for k in ("segmentation", "bbox", "bbox_mode", "category_id", "iscrowd")}
        for a in record.get("annotations", [])
    ]
    payload = json.dumps([CACHE_VERSION, os.path.abspath(record["file_name"]), st.st_size,
                          st.st_mtime_ns, list(size_hw), annotations], sort_keys=True,
                         default=str)
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


def read_scaled_photo(path: str | os.PathLike, size_hw: tuple[int, int]) -> Image.Image:
    """The photo (EXIF orientation applied, RGB) resized to (h, w); JPEGs are decoded at the
    smallest DCT scale that still covers the size (PIL draft mode)."""
    with Image.open(path) as img:
        oriented = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # 90-degree turns swap w / h
        h, w = size_hw
        if img.format == "JPEG":
            img.draft("RGB", (h, w) if oriented else (w, h))
        img = ImageOps.exif_transpose(img).convert("RGB")
        if img.size != (w, h):
            img = img.resize((w, h), Image.BILINEAR, reducing_gap=None)
        return img


def scale_record(record: dict, cache_dir: str | os.PathLike, target_hw,
                 max_scale: float) -> dict:
    """The cached, scaled version of one record (building its files if they are missing)."""
    height, width = record["height"], record["width"]
    size_hw = cache_size(height, width, target_hw, max_scale)
    key = _cache_key(record, size_hw)
    stem = Path(record["file_name"]).stem
    image_path = Path(cache_dir, f"{stem}-{key}.jpg")
    anns_path = Path(cache_dir, f"{stem}-{key}.json")
    if image_path.is_file() and anns_path.is_file():
        with open(anns_path) as f:
            annotations = json.load(f)
    else:
        photo = read_scaled_photo(record["file_name"], size_hw)
        sy, sx = size_hw[0] / height, size_hw[1] / width
        annotations = [_scale_annotation(a, height, width, sx, sy)
                       for a in record.get("annotations", [])]
        os.makedirs(cache_dir, exist_ok=True)
        with atomic_open(image_path, "wb") as f:
            photo.save(f, format="JPEG", quality=JPEG_QUALITY)
        with atomic_open(anns_path, "w") as f:
            json.dump(annotations, f)
    for ann in annotations:  # arrays: cheap to deep-copy in the mapper on every iteration
        if isinstance(ann.get("segmentation"), list):
            ann["segmentation"] = [np.asarray(p, np.float32) for p in ann["segmentation"]]
    scaled = {k: v for k, v in record.items() if k != "annotations"}
    scaled.update(file_name=str(image_path), height=size_hw[0], width=size_hw[1],
                  source_file_name=record["file_name"], annotations=annotations)
    return scaled


def _scale_annotation(ann: dict, height: int, width: int, sx: float, sy: float) -> dict:
    from detectron2.structures import BoxMode

    out = {k: v for k, v in ann.items() if k not in ("segmentation", "bbox", "bbox_mode")}
    box = BoxMode.convert(list(ann["bbox"]), ann["bbox_mode"], BoxMode.XYWH_ABS)
    out["bbox"] = [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]
    out["bbox_mode"] = BoxMode.XYWH_ABS
    if "segmentation" in ann:
        segm = ann["segmentation"]
        if isinstance(segm, list):
            out["segmentation"] = [
                (np.asarray(p, np.float64).reshape(-1, 2) * (sx, sy)).ravel().tolist()
                for p in segm
            ]
        else:
            mask = segmentation_to_mask(segm, height, width)
            out["segmentation"] = mask_to_polygons(mask, sx, sy)
    return out


def scaled_training_records(records: list[dict], cache_dir: str | os.PathLike, target_hw,
                            max_scale: float) -> list[dict]:
    """Records of the cached, scaled copies of ``records`` (built once; see the module
    docstring). An undecodable photo keeps its original record; an annotation whose mask
    leaves no polygon (a speck) is dropped from the cached record."""
    out = []
    for record in records:
        try:
            scaled = scale_record(record, cache_dir, target_hw, max_scale)
        except (OSError, SyntaxError) as e:  # PIL's undecodable-image errors
            logger.warning("%s: cannot decode the image for the scaled cache (%s); read "
                           "in place", record["file_name"], e)
            out.append(record)
            continue
        scaled["annotations"] = [a for a in scaled["annotations"]
                                 if "segmentation" not in a or a["segmentation"]]
        out.append(scaled)
    cached = sum("source_file_name" in r for r in out)
    logger.info("scaled training cache %s: %d of %d photos", cache_dir, cached, len(records))
    return out


def training_records_for_config(cfg, records: list[dict]) -> list[dict]:
    """``records`` through the scaled cache when the config asks for it
    (``INPUT.SCALE_CROP.ENABLED`` and ``INPUT.SCALE_CROP.CACHE``), else unchanged."""
    sc = cfg.INPUT.SCALE_CROP
    if not (sc.ENABLED and sc.CACHE):
        return records
    return scaled_training_records(records, cfg.DATASETS.SCALED_CACHE_DIR,
                                   tuple(sc.TARGET_SIZE), max(sc.SCALE_RANGE))
