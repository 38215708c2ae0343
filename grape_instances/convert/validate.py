"""Check a COCO instances JSON (ours or another tool's) before Detectron2 chokes on it.

Files that other tools export as "COCO" are often not quite: VIA 2's own export writes no
``area`` (or the box area) and ``bbox: []`` for point regions, flat polygon lists, string
ids, sizes of the un-rotated image... Detectron2 then raises deep inside a data loader, or
worse, trains on wrong masks. :func:`validate_coco` finds these problems up front and
returns a :class:`ValidationReport` that counts each kind of problem with a first example.

Errors are what breaks loading, training or evaluation; warnings are what is suspicious but
usable (``area`` that disagrees with the mask, coordinates outside the image, images
without annotations).
"""

from __future__ import annotations

import logging
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from ..errors import GrapeInputError
from ..fileio import read_json
from .images import DEFAULT_MAX_PIXELS, decode_image, read_image_size, resolve_image_path
from .warning_counter import WarningCounter

logger = logging.getLogger(__name__)

#: A bbox edge may differ from the mask's box by this many pixels (polygon vs raster).
BBOX_TOLERANCE_PX = 2.0
#: ``area`` may differ from the mask area by this fraction before a warning.
AREA_TOLERANCE = 0.1


@dataclass
class ValidationReport:
    """Problems found in one COCO JSON, counted per kind with a first example each."""

    json_path: str
    errors: WarningCounter = field(default_factory=WarningCounter)
    warnings: WarningCounter = field(default_factory=WarningCounter)
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict:
        return {"json": self.json_path, "ok": self.ok, "stats": self.stats,
                "errors": self.errors.as_dict(), "warnings": self.warnings.as_dict()}

    def format(self) -> str:
        stats = ", ".join(f"{v} {k}" for k, v in self.stats.items())
        lines = [f"validate {self.json_path}: {stats}"]
        lines += [f"  ERROR   {line}" for line in self.errors.lines()]
        lines += [f"  WARNING {line}" for line in self.warnings.lines()]
        verdict = "OK" if self.ok else f"FAILED ({sum(self.errors.counts.values())} errors)"
        lines.append(f"result: {verdict}")
        return "\n".join(lines)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_num(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)


def _check_ids(items: list, what: str, report: ValidationReport) -> dict:
    """Index ``items`` by id; report missing, string, and duplicate ids."""
    by_id: dict = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "id" not in item:
            report.errors.add(f"{what} without an 'id'", f"{what} #{i}")
            continue
        iid = item["id"]
        if isinstance(iid, str):
            report.errors.add(f"string {what} ids (Detectron2 and COCOeval need integers)",
                              f"{what} {iid!r}")
        elif not _is_int(iid):
            report.errors.add(f"non-integer {what} ids", f"{what} {iid!r}")
        if iid in by_id:
            report.errors.add(f"duplicate {what} ids", f"{what} {iid!r}")
        else:
            by_id[iid] = item
    return by_id


def _check_image_file(img: dict, images_dir: Path, roots: list[Path], deep: bool,
                      max_pixels: int | None, report: ValidationReport) -> None:
    name = img.get("file_name")
    where = f"image {img.get('id')!r} ({name})"
    if not isinstance(name, str) or not name:
        report.errors.add("images without a 'file_name'", where)
        return
    h, w = img.get("height"), img.get("width")
    if not (_is_int(h) and _is_int(w) and h > 0 and w > 0):
        report.errors.add("images without a positive integer height / width", where)
        h = w = None
    try:
        path = resolve_image_path(name, images_dir, roots=roots)
        size = read_image_size(path, max_pixels=max_pixels)
    except GrapeInputError as e:
        kind = str(e).split(": ", 1)[-1]
        if "resolves outside" in kind or "absolute path" in kind or "URL" in kind:
            kind = "file names outside the images folder (refused)"
        elif "not found" in kind:
            kind = "image files not found"
        elif "pixels, above the limit" in kind:
            kind = "images above the pixel limit"
        else:
            kind = "unreadable or empty image files"
        report.errors.add(kind, where)
        return
    if h is not None and (size.height, size.width) != (h, w):
        if size.orientation in (5, 6, 7, 8) and (size.width, size.height) == (h, w):
            report.errors.add("image sizes of the un-rotated image (EXIF orientation "
                              "5-8: Detectron2 sees width and height swapped)", where)
        else:
            report.errors.add("image sizes that differ from the file", f"{where}: JSON "
                              f"{w}x{h}, file {size.width}x{size.height}")
    if deep:
        try:
            decode_image(path, max_pixels=max_pixels)
        except GrapeInputError:
            report.errors.add("images whose pixel data cannot be decoded", where)


def _segmentation_rle(segm: Any, h: int, w: int, where: str, report: ValidationReport
                      ) -> dict | None:
    """The annotation's mask as one RLE, or None after reporting why it is unusable."""
    if isinstance(segm, list):
        if not segm:
            report.errors.add("empty segmentations", where)
            return None
        if all(_is_num(v) for v in segm):
            report.errors.add("flat segmentation lists (a polygon must be a list of lists: "
                              "[[x1, y1, ...]])", where)
            return None
        polys = []
        for poly in segm:
            if (not isinstance(poly, list) or not all(_is_num(v) for v in poly)
                    or len(poly) % 2 or len(poly) < 6):
                report.errors.add("polygons that are not an even list of >= 6 numbers", where)
                return None
            arr = np.asarray(poly, dtype=np.float64)
            if (arr[0::2].min() < 0 or arr[0::2].max() > w or arr[1::2].min() < 0
                    or arr[1::2].max() > h):
                report.warnings.add("polygon coordinates outside the image", where)
            polys.append(arr.tolist())
        return mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
    if isinstance(segm, dict) and "counts" in segm and "size" in segm:
        if list(segm["size"]) != [h, w]:
            report.errors.add("RLE sizes that differ from the image size", where)
            return None
        try:
            if isinstance(segm["counts"], list):
                return mask_utils.frPyObjects(segm, h, w)
            counts = segm["counts"]
            return {"size": [h, w],
                    "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        except (TypeError, ValueError, UnicodeEncodeError):
            report.errors.add("malformed RLE segmentations", where)
            return None
    report.errors.add("missing or malformed segmentations", where)
    return None


def _check_annotation(ann: dict, images: dict, categories: dict, report: ValidationReport
                      ) -> None:
    where = f"annotation {ann.get('id')!r}"
    img = images.get(ann.get("image_id"))
    if img is None:
        report.errors.add("annotations whose image_id is not an image", where)
        return
    if ann.get("category_id") not in categories:
        report.errors.add("annotations whose category_id is not a category", where)
    iscrowd = ann.get("iscrowd", None)
    if iscrowd is None:
        report.warnings.add("annotations without 'iscrowd' (0 assumed)", where)
    elif iscrowd not in (0, 1):
        report.errors.add("iscrowd values other than 0 / 1", where)
    bbox = ann.get("bbox")
    bbox_ok = isinstance(bbox, list) and len(bbox) == 4 and all(_is_num(v) for v in bbox)
    if not bbox_ok:
        report.errors.add("missing, empty or malformed bbox (Detectron2 needs [x, y, w, h])",
                          where)
    elif bbox[2] <= 0 or bbox[3] <= 0:
        report.errors.add("bboxes with zero or negative width / height", where)
        bbox_ok = False
    if "area" not in ann:
        report.errors.add("annotations without 'area' (COCOeval needs it)", where)
    elif not _is_num(ann["area"]):
        report.errors.add("non-numeric 'area'", where)
    h, w = img.get("height"), img.get("width")
    if not (_is_int(h) and _is_int(w) and h > 0 and w > 0):
        return  # already reported with the image
    rle = _segmentation_rle(ann.get("segmentation"), h, w, where, report)
    if rle is None:
        return
    area = float(mask_utils.area(rle))
    if area <= 0:
        report.errors.add("empty masks (no pixel inside the image)", where)
        return
    mx, my, mw, mh = (float(v) for v in mask_utils.toBbox(rle))
    if bbox_ok:
        bx, by, bw, bh = (float(v) for v in bbox)
        tol = max(BBOX_TOLERANCE_PX, 0.02 * max(mw, mh))
        if max(abs(bx - mx), abs(by - my), abs(bx + bw - mx - mw), abs(by + bh - my - mh)) > tol:
            report.errors.add("bboxes that disagree with the mask", f"{where}: bbox "
                              f"{[round(v, 1) for v in bbox]}, mask box "
                              f"{[mx, my, mw, mh]}")
    if "area" in ann and _is_num(ann["area"]) and abs(ann["area"] - area) > AREA_TOLERANCE * area:
        report.warnings.add("'area' values that differ from the mask area by > 10 %",
                            f"{where}: area {ann['area']}, mask {area:.0f}")


def validate_coco(
    data: Any,
    images_dir: str | os.PathLike,
    *,
    json_path: str | os.PathLike = "<memory>",
    deep: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> ValidationReport:
    """Check a parsed COCO instances dict against the images under ``images_dir``.

    File names may resolve inside ``images_dir`` or inside the JSON's own folder (where the
    labelme converter writes images extracted from ``imageData``), nowhere else. With
    ``deep`` every image is fully decoded (slow), otherwise only headers are read.
    """
    report = ValidationReport(str(json_path))
    if not isinstance(data, dict) or not all(
            isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        report.errors.add("not a COCO instances JSON (needs lists 'images', 'annotations' "
                          "and 'categories')", str(json_path))
        return report
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise GrapeInputError(f"{images_dir}: images folder not found")
    roots = [images_dir]
    if str(json_path) != "<memory>":
        roots.append(Path(json_path).parent)
    images = _check_ids(data["images"], "image", report)
    _check_ids(data["annotations"], "annotation", report)
    categories = _check_ids(data["categories"], "category", report)
    names = [c.get("name") for c in categories.values()]
    if any(not isinstance(n, str) or not n for n in names):
        report.errors.add("categories without a name")
    if len(set(names)) != len(names):
        report.warnings.add("categories sharing a name")
    if not categories:
        report.errors.add("no categories")
    seen_names: dict[str, Any] = {}
    for img in tqdm(images.values(), desc="validate images", unit="img", leave=False,
                    disable=None):
        name = img.get("file_name")
        if isinstance(name, str):
            if name in seen_names:
                report.errors.add("images listed twice under the same file_name",
                                  f"{name} (ids {seen_names[name]!r}, {img.get('id')!r})")
            seen_names[name] = img.get("id")
        _check_image_file(img, images_dir, roots, deep, max_pixels, report)
    used: set = set()
    for ann in data["annotations"]:
        if isinstance(ann, dict):
            _check_annotation(ann, images, categories, report)
            used.add(ann.get("image_id"))
    empty = len(set(images) - used)
    if empty:
        report.warnings.add("images without annotations (Detectron2 drops them in training)",
                            count=empty)
    report.stats = {"images": len(data["images"]), "annotations": len(data["annotations"]),
                    "categories": len(data["categories"])}
    return report


def validate_coco_file(
    json_path: str | os.PathLike,
    images_dir: str | os.PathLike,
    *,
    deep: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> ValidationReport:
    """Read ``json_path`` (one-line error if missing or not JSON) and validate it."""
    report = validate_coco(read_json(json_path), images_dir, json_path=json_path, deep=deep,
                           max_pixels=max_pixels)
    level = logging.INFO if report.ok else logging.WARNING
    logger.log(level, "%s: %s", json_path, "valid" if report.ok else "INVALID")
    return report
