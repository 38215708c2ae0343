"""Check a COCO instances JSON (ours or another tool's) before Detectron2 chokes on it.

Files that other tools export as "COCO" are often not quite: VIA 2's own export writes no
``area`` (or the box area) and ``bbox: []`` for point regions, flat polygon lists, string
ids, sizes of the un-rotated image... Detectron2 then raises deep inside a data loader, or
worse, trains on wrong masks. :func:`validate_coco` finds these problems up front and
returns a :class:`ValidationReport` that counts each kind of problem with a first example.

Errors are what breaks loading, training or evaluation; warnings are what is suspicious but
usable (``area`` that disagrees with the mask, coordinates outside the image, images
without annotations).

Every error kind here was checked against Detectron2 itself: ``bbox: []`` or of another
length, a flat polygon list, images without ``height`` / ``width``, RLE counts that do not
add up to the image, and masks missing for a mask model (``Cannot find field 'gt_masks'``)
each crash its loader or trainer. :func:`check_datasets_for_model` runs the same checks on
every dataset before ``tools/train_net.py`` starts, so a run is refused in one line instead.

Nothing is rasterised before it is bounded: images whose JSON size exceeds the pixel limit
get no mask check, and a polygon vertex more than one image size outside its image is an
error (:func:`~grape_instances.core.polygons.far_outside`), so memory follows the image
size, not the numbers in the file. Photos in a pixel format Detectron2 misreads (16-bit
grayscale...) are errors too (:func:`~grape_instances.core.images.check_photo_mode`).
"""

from __future__ import annotations

import logging
import numbers
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from ..core.errors import GrapeInputError
from ..core.fileio import read_json
from ..core.images import (
    DEFAULT_MAX_PIXELS,
    UnsupportedImageModeError,
    decode_image,
    normalize_annotation_name,
    read_image_size,
    resolve_image_path,
)
from ..core.masks import counts_as_bytes, segmentation_to_rle
from ..core.polygons import OUTSIDE_MARGIN, clip_polygon, far_outside
from ..core.warning_counter import WarningCounter

logger = logging.getLogger(__name__)

#: A bbox edge may differ from the mask's box by this many pixels (polygon vs raster).
BBOX_TOLERANCE_PX = 2.0
#: ``area`` may differ from the mask area by this fraction before a warning.
AREA_TOLERANCE = 0.1

#: Error kinds the checks before training name (see check_datasets_for_model).
BOX_ONLY = ("annotations without a segmentation (box-only: a mask model cannot train on "
            "them, Detectron2 fails with \"Cannot find field 'gt_masks'\")")
UNSUPPORTED_MODE = ("images in a pixel format Detectron2 misreads (16-bit, 32-bit or float: "
                    "it clips them to nearly white; convert them to 8-bit)")
UNREADABLE = "unreadable or empty image files"
NO_IMAGES = "no images (Detectron2 refuses an empty dataset)"
NO_ANNOTATIONS = ("no annotations at all (nothing to train on or to score; Detectron2 "
                  "refuses such a dataset)")
ONLY_CROWD = ("only crowd regions (iscrowd 1: ignored in training and scoring, so nothing to "
              "train on or to score)")
FAR_OUTSIDE = (f"polygon coordinates more than {OUTSIDE_MARGIN:g} image size outside the "
               "image (a broken export or coordinates of another image size)")


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
            report.errors.add(f"non-integer {what} ids", f"{what} {repr(iid)[:40]}")
            if isinstance(iid, (list, dict)):  # unhashable: cannot be indexed at all
                continue
        if iid in by_id:
            report.errors.add(f"duplicate {what} ids", f"{what} {iid!r}")
        else:
            by_id[iid] = item
    return by_id


def _json_size_ok(img: dict, max_pixels: int | None) -> bool:
    """The image's JSON height / width are positive integers within the pixel limit: only
    then are its masks rasterised (memory follows the image size)."""
    h, w = img.get("height"), img.get("width")
    return (_is_int(h) and _is_int(w) and h > 0 and w > 0
            and (max_pixels is None or h * w <= max_pixels))


def _check_image_file(img: dict, images_dir: Path, roots: list[Path] | None, deep: bool,
                      max_pixels: int | None, report: ValidationReport) -> None:
    """``roots`` None: the file name is joined to ``images_dir`` as Detectron2 joins it
    (absolute names and ``..`` allowed: the config is the user's own)."""
    name = img.get("file_name")
    where = f"image {img.get('id')!r} ({name})"
    if not isinstance(name, str) or not name:
        report.errors.add("images without a 'file_name'", where)
        return
    h, w = img.get("height"), img.get("width")
    if not (_is_int(h) and _is_int(w) and h > 0 and w > 0):
        report.errors.add("images without a positive integer height / width", where)
        h = w = None
    elif not _json_size_ok(img, max_pixels):
        report.errors.add("images above the pixel limit", f"{where}: JSON {w}x{h}")
        h = w = None
    try:  # Windows separators are read as "/" here and by the training loader alike
        path = (Path(os.path.join(images_dir, normalize_annotation_name(name))) if roots is None
                else resolve_image_path(name, images_dir, roots=roots))
        size = read_image_size(path, max_pixels=max_pixels)
    except UnsupportedImageModeError as e:
        report.errors.add(UNSUPPORTED_MODE, f"{where}: {str(e).split(' is not supported')[0]}")
        return
    except GrapeInputError as e:
        kind = str(e).split(": ", 1)[-1]
        if "resolves outside" in kind or "absolute path" in kind or "URL" in kind:
            kind = "file names outside the images folder (refused)"
        elif "not found" in kind:
            kind = "image files not found"
        elif "pixels, above the limit" in kind or "decompression-bomb limit" in kind:
            kind = "images above the pixel limit"
        else:
            kind = UNREADABLE
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


def rle_string_counts(counts: str | bytes, total: int) -> np.ndarray | None:
    """The runs of a compressed COCO RLE string, or None unless they are non-negative and
    add up to ``total`` (height x width).

    pycocotools does not check this: ``area`` and ``toBbox`` report a mask of any length,
    and only ``decode`` (in Detectron2's data loader, mid-training) raises. This mirrors its
    ``rleFrString`` (5 bits a character, a delta for every run after the second), vectorised
    so it costs microseconds per mask and never more memory than the string.
    """
    if isinstance(counts, str) and not counts.isascii():
        return None
    counts = counts_as_bytes(counts)
    c = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if c.size == 0 or c.min() < 0 or c.max() > 63:
        return None
    more = (c & 0x20) != 0
    if more[-1]:  # the last value is cut off
        return None
    ends = np.flatnonzero(~more)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > 12:  # beyond 60 bits: far more than any image's pixel count
        return None
    group = np.repeat(np.arange(len(ends)), lengths)
    x = np.zeros(len(ends), np.int64)
    np.add.at(x, group, (c & 0x1F) << (5 * (np.arange(c.size) - starts[group])))
    negative = (c[ends] & 0x10) != 0
    x[negative] -= np.left_shift(1, 5 * lengths[negative])  # rleFrString's x |= -1 << 5k
    if np.abs(x).max() > total:
        return None
    runs = x.copy()
    runs[1::2] = np.cumsum(x[1::2])  # run m > 2 is stored as a delta to run m - 2
    runs[2::2] = np.cumsum(x[2::2])
    if runs.min() < 0 or int(runs.sum()) != total:
        return None
    return runs


def _rle_counts_ok(counts: Any, total: int) -> bool:
    """Uncompressed (list) or compressed (string) RLE counts whose runs are non-negative
    integers adding up to ``total``: anything else makes pycocotools raise a TypeError or
    Detectron2's loader raise mid-training."""
    if isinstance(counts, list):
        return (all(_is_int(v) and 0 <= v <= total for v in counts)
                and sum(counts) == total)
    if isinstance(counts, (str, bytes)):
        return rle_string_counts(counts, total) is not None
    return False


def _segmentation_rle(segm: Any, h: int, w: int, where: str, report: ValidationReport,
                      masks: bool = True) -> dict | None:
    """The annotation's mask as one RLE, or None after reporting why it is unusable.

    No segmentation (absent, ``[]``, ``{}`` or null: what Detectron2 treats as none) is an
    error only for ``masks`` (a mask model). Coordinates are bounded before rasterising.
    """
    if not segm:
        if masks:
            report.errors.add(BOX_ONLY, where)
        return None
    if isinstance(segm, list):
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
            if far_outside(arr, w, h):
                report.errors.add(FAR_OUTSIDE, f"{where}: {_extreme(arr)}")
                return None
            if (arr[0::2].min() < 0 or arr[0::2].max() > w or arr[1::2].min() < 0
                    or arr[1::2].max() > h):
                report.warnings.add("polygon coordinates outside the image", where)
                # rasterise only the in-image part: pycocotools' memory grows with the
                # polygon's length, not with the image
                arr = clip_polygon(arr.reshape(-1, 2), w, h).reshape(-1)
                if len(arr) < 6:
                    continue
            polys.append(arr.tolist())
        if not polys:  # every polygon lies outside: an empty mask, reported as such
            return mask_utils.encode(np.zeros((h, w), np.uint8, order="F"))
        return segmentation_to_rle(polys, h, w)
    if isinstance(segm, dict) and "counts" in segm and "size" in segm:
        size = segm["size"]
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)):
            report.errors.add("RLE 'size' that is not two integers [height, width]", where)
            return None
        if size != [h, w]:
            report.errors.add("RLE sizes that differ from the image size", where)
            return None
        counts = segm["counts"]
        if not _rle_counts_ok(counts, h * w):
            report.errors.add("malformed RLE counts (not runs of pixels adding up to height "
                              "x width)", where)
            return None
        if isinstance(counts, list):
            return segmentation_to_rle({"size": [h, w], "counts": counts}, h, w)
        return {"size": [h, w], "counts": counts_as_bytes(counts)}
    report.errors.add("malformed segmentations (neither polygons nor RLE)", where)
    return None


def _extreme(arr: np.ndarray) -> str:
    """The coordinate furthest from the origin, for the example of an error line."""
    value = float(arr[np.argmax(np.abs(arr))])
    return f"coordinate {value:g}"


def _check_annotation(ann: dict, images: dict, categories: dict, report: ValidationReport,
                      masks: bool = True, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    where = f"annotation {ann.get('id')!r}"
    image_id, category_id = ann.get("image_id"), ann.get("category_id")
    img = images.get(image_id) if not isinstance(image_id, (list, dict)) else None
    if img is None:
        report.errors.add("annotations whose image_id is not an image", where)
        return
    if isinstance(category_id, (list, dict)) or category_id not in categories:
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
    if not _json_size_ok(img, max_pixels):
        return  # already reported with the image; nothing is rasterised at such a size
    h, w = img["height"], img["width"]
    rle = _segmentation_rle(ann.get("segmentation"), h, w, where, report, masks)
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
    masks: bool = True,
    detectron2_paths: bool = False,
) -> ValidationReport:
    """Check a parsed COCO instances dict against the images under ``images_dir``.

    File names may resolve inside ``images_dir`` or inside the JSON's own folder (where the
    labelme converter writes images extracted from ``imageData``), nowhere else; with
    ``detectron2_paths`` they are joined to ``images_dir`` as Detectron2's loader joins them
    (a registered dataset is the user's own). With ``deep`` every image is fully decoded
    (slow), otherwise only headers are read. ``masks`` False (data for a box model) accepts
    annotations without a segmentation.
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
    roots: list[Path] | None = [images_dir]
    if str(json_path) != "<memory>":
        roots.append(Path(json_path).parent)
    if detectron2_paths:
        roots = None
    images = _check_ids(data["images"], "image", report)
    _check_ids(data["annotations"], "annotation", report)
    categories = _check_ids(data["categories"], "category", report)
    names = [c.get("name") for c in categories.values()]
    if any(not isinstance(n, str) or not n for n in names):
        report.errors.add("categories without a name")
    texts = [n for n in names if isinstance(n, str)]  # others are reported above
    if len(set(texts)) != len(texts):
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
            _check_annotation(ann, images, categories, report, masks, max_pixels)
            if not isinstance(ann.get("image_id"), (list, dict)):
                used.add(ann.get("image_id"))
    if not data["images"]:
        report.errors.add(NO_IMAGES, str(json_path))
    elif not data["annotations"]:
        report.errors.add(NO_ANNOTATIONS, str(json_path))
    elif not any(isinstance(a, dict) and not _crowd(a) for a in data["annotations"]):
        report.errors.add(ONLY_CROWD, str(json_path))
    empty = len(set(images) - used)
    if empty:
        report.warnings.add(EMPTY_IMAGES, count=empty)
    report.stats = {"images": len(data["images"]), "annotations": len(data["annotations"]),
                    "categories": len(data["categories"])}
    return report


# What training does with them depends on the config, not on the file: say both.
EMPTY_IMAGES = ("images without annotations (negatives: training keeps them with "
                "DATALOADER.FILTER_EMPTY_ANNOTATIONS False, as configs/mask_rcnn_grapes.yaml "
                "sets, and drops them with True, the CPU configs' setting)")


def check_records(data: dict, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ValidationReport:
    """validate's errors about what a COCO dict says, without opening an image: image sizes
    (positive, within ``max_pixels``) and every annotation's image, category, iscrowd, bbox,
    area and mask (polygons, RLE sizes and counts). What merge and split check before they
    write, so that neither passes on a file validate (and training) would refuse.
    Annotations without a segmentation are fine (box data). ``data`` has the three lists
    of objects (split.load_coco checks that first)."""
    report = ValidationReport("<records>")
    images = {img.get("id"): img for img in data["images"]
              if not isinstance(img.get("id"), (list, dict))}
    for img in images.values():
        where = f"image {img.get('id')!r} ({img.get('file_name')})"
        h, w = img.get("height"), img.get("width")
        if not (_is_int(h) and _is_int(w) and h > 0 and w > 0):
            report.errors.add("images without a positive integer height / width", where)
        elif not _json_size_ok(img, max_pixels):
            report.errors.add("images above the pixel limit", f"{where}: JSON {w}x{h}")
    categories = {c.get("id"): c for c in data["categories"]
                  if not isinstance(c.get("id"), (list, dict))}
    for ann in data["annotations"]:
        _check_annotation(ann, images, categories, report, masks=False, max_pixels=max_pixels)
    return report


def validate_coco_file(
    json_path: str | os.PathLike,
    images_dir: str | os.PathLike,
    *,
    deep: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    masks: bool = True,
) -> ValidationReport:
    """Read ``json_path`` (one-line error if missing or not JSON) and validate it."""
    report = validate_coco(read_json(json_path), images_dir, json_path=json_path, deep=deep,
                           max_pixels=max_pixels, masks=masks)
    level = logging.INFO if report.ok else logging.WARNING
    logger.log(level, "%s: %s", json_path, "valid" if report.ok else "INVALID")
    return report


def _crowd(ann: dict) -> bool:
    return ann.get("iscrowd", 0) == 1


def check_datasets_for_model(
    datasets: Sequence[tuple[str, str | os.PathLike, str | os.PathLike]],
    *,
    masks: bool,
    train: Sequence[str] = (),
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> None:
    """Refuse, in one line, datasets (name, COCO JSON, image root) a model cannot use, before
    ``tools/train_net.py`` builds anything: whatever :func:`validate_coco` calls an error
    would crash Detectron2's loader or trainer mid-run, or train on wrong pixels.

    ``masks``: the model needs masks (``MODEL.MASK_ON``, or a semantic model). Box-only data
    for it is refused, with the hint ``MODEL.MASK_ON False``, rather than training the box
    head only: a model quietly built without its mask head would not be the one the config
    names, and its checkpoints would not load into it for visualize or evaluation.

    Images that do not decode are not refused: training skips them with a warning and
    evaluation leaves them out (as data.build does). Datasets named in ``train`` must hold at
    least one non-crowd annotation between them, and no dataset may be empty (Detectron2
    asserts on both).
    """
    started = time.perf_counter()
    usable = 0
    for name, json_file, image_root in datasets:
        data = read_json(json_file)
        report = validate_coco(data, image_root, json_path=json_file, masks=masks,
                               max_pixels=max_pixels, detectron2_paths=True)
        where = f"dataset {name!r} ({json_file})"
        errors = [line for kind, line in zip(sorted(report.errors.counts), report.errors.lines(),
                                              strict=True) if kind != UNREADABLE]
        if errors:
            box_only = BOX_ONLY in report.errors.counts
            line = next((ln for ln in errors if ln.startswith(BOX_ONLY)), errors[0])
            hint = ("; to train boxes only, add MODEL.MASK_ON False" if box_only else
                    f"; `python tools/convert.py validate --json {json_file} --images "
                    f"{image_root}` lists every problem")
            more = f" (and {len(errors) - 1} more kinds of error)" if len(errors) > 1 else ""
            raise GrapeInputError(f"{where}: {line}{more}{hint}")
        if report.errors[UNREADABLE]:
            logger.warning("%s: %s: %d (first: %s); training skips them, evaluation leaves "
                           "them out", where, UNREADABLE, report.errors[UNREADABLE],
                           report.errors.examples.get(UNREADABLE))
        report.warnings.log(logger, prefix=f"{where}: ")
        if not data["images"]:
            raise GrapeInputError(f"{where}: no images (Detectron2 refuses an empty dataset)")
        if name in train:
            usable += sum(1 for a in data["annotations"] if not _crowd(a))
    if train and usable == 0:
        raise GrapeInputError(
            f"training datasets {list(train)}: no annotation to train on (none, or only "
            "crowd regions, iscrowd 1)"
        )
    logger.info("checked datasets %s for %s in %.1f s", [d[0] for d in datasets],
                "a mask model" if masks else "a box model", time.perf_counter() - started)


def check_registered_datasets(names: Sequence[str], *, masks: bool,
                              train: Sequence[str] = ()) -> None:
    """:func:`check_datasets_for_model` on the COCO datasets registered under ``names``
    (each once; a dataset registered without a JSON file is not checked)."""
    from detectron2.data import MetadataCatalog

    datasets = []
    for name in dict.fromkeys(names):
        meta = MetadataCatalog.get(name)
        json_file, image_root = meta.get("json_file"), meta.get("image_root")
        if json_file and image_root:
            datasets.append((name, json_file, image_root))
    check_datasets_for_model(datasets, masks=masks, train=train)
