"""Model predictions -> VIA 2.x project / labelme files (model-assisted annotation).

Correcting a predicted mask takes a fraction of the time of drawing one. This module
reads Detectron2's ``coco_instances_results.json`` (written by ``COCOEvaluator`` into
``OUTPUT_DIR/inference``: one ``{image_id, category_id, score, segmentation: RLE}`` per
detection), keeps detections with ``score >= score_threshold``, turns each mask into
polygons (``cv2.findContours`` on the outer boundaries, optionally simplified by
``cv2.approxPolyDP``) and writes them as a VIA 2.x project and/or one labelme JSON per
image (each in its tool's pixel convention, see
:func:`~grape_instances.core.polygons.mask_to_polygons`). Parts of one
instance share the VIA region attribute ``instance`` and the labelme
``group_id``, so converting the corrected file back (``via --group-attr instance`` or
``labelme``) gives one instance again. Holes inside a mask are not kept (VIA and labelme
polygons have none).

Which image a prediction is of: with ``coco_json`` (the JSON the predictions were made on,
normally the registered test set) its ``image_id`` and the category names come from it.
Without it, new photos need no hand-written file: a prediction's ``file_name`` (which
``tools/visualize.py`` writes into ``coco_results.json``) names the image, looked up in
``images_dir``; failing that, its ``image_id`` must equal the file stem of an image there
(e.g. ``IMG_0001``). Categories are then named by ``category_names`` (ids 1, 2, ...), else
by the model's class names that visualize writes beside its results (below), else
``bunch``.

Which images count: the ones the predictions were made on, never simply every photo of
``images_dir`` (an unreviewed photo written as "no bunch" would teach a model that it
holds none). With ``coco_json`` those are its images; otherwise the images the detections
name plus those visualize lists in ``<results stem>_images.json`` (every image it
predicted, with or without a detection, and the model's class names). Any other image of
``images_dir`` is left out, named in a counted warning.

A bunch's slivers (its smallest pieces, together under ``SLIVER_FRACTION`` of its area) are
dropped with the simplification (not with ``simplify=0``), so that it comes back as one
polygon; a bunch split by a leaf into larger pieces
gets one polygon per piece, all of one instance. Polygons are simplified by default
(``approxPolyDP``, epsilon a fraction of each bunch's size, ``sqrt(mask area)``): an exact
outline of a 2048 px photo's bunch has 500-1,300 vertices to drag, while 1 % of the bunch
size keeps a few dozen at mask IoU ~0.99.

Every polygon written survives the trip back: one that the project's reader of its tool
would rasterise to no pixel is not written (:func:`read_back`). Such are the outlines through
pixel centres (labelme) of pieces one pixel wide: they run there and back, enclosing no
area, and the labelme converter skips them as zero-area shapes. A detection left with no
polygon that way is named in a counted warning.
"""

from __future__ import annotations

import heapq
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..core.errors import GrapeInputError
from ..core.fileio import atomic_outputs, read_json, refuse_existing
from ..core.images import DEFAULT_MAX_PIXELS, list_image_files, read_image_size, resolve_image_path
from ..core.masks import rasterize_polygons, rle_to_mask
from ..core.polygons import MIN_COMPONENT_AREA, mask_to_polygons, sanitize_polygon
from ..core.warning_counter import WarningCounter
from .coco import DEFAULT_CATEGORY
from .labelme import labelme_record, labelme_shape, shape_mask
from .validate import rle_string_counts
from .via import via2_dropdown, via2_image, via2_polygon_region, via2_project, via2_text

logger = logging.getLogger(__name__)

# approxPolyDP epsilon as a fraction of the bunch size (sqrt of its mask area): the IoU lost
# scales with epsilon x perimeter / area, so a relative epsilon costs every bunch the same,
# small or large. Measured on WGISD bunches at 2048 px (see the README's annotation loop).
DEFAULT_SIMPLIFY = 0.01
# The smallest pieces of a predicted bunch that together hold less than this fraction of
# its mask area are slivers (specks and fringes of the model's mask, 3-7 vertices once
# simplified): dropped, so a bunch comes back as one polygon to correct, not several. On
# WGISD's own masks (every third shared photo, 227 bunches) it leaves no polygon of 3-7
# vertices (22 before) at mean mask IoU 0.985 (0.989 before, min 0.933 both); larger pieces
# (a bunch split by a leaf) stay, as polygons of the same instance.
SLIVER_FRACTION = 0.05
#: Detections kept per image, the highest scores first: Detectron2 writes at most
#: TEST.DETECTIONS_PER_IMAGE (100) per image; a results file with far more is not a model's
#: output, and turning every one into polygons would run for minutes in gigabytes.
MAX_DETECTIONS_PER_IMAGE = 300
# What a results folder holds: visualize's file, then Detectron2's inference output.
RESULTS_NAMES = ("coco_results.json", "coco_instances_results.json")
# Images under --images that no prediction (and no predicted-images list) names.
NOT_PREDICTED = "images under --images that were not predicted (left out)"
# Detections whose every polygon a tool's reader rasterises to no pixel (see read_back).
NO_PIXEL = {
    "edges": "detections whose VIA polygons enclose no pixel (left out of the VIA project)",
    "centres": "detections whose labelme polygons enclose no pixel (left out of the labelme "
               "files)",
}


def predicted_images_file(results_json: str | os.PathLike) -> Path:
    """Where visualize lists the images it predicted and the model's class names, beside
    its results: ``coco_results.json`` -> ``coco_results_images.json``."""
    path = Path(results_json)
    return path.with_name(f"{path.stem}_images.json")


def predicted_images_record(images: Sequence[tuple[int, str, int, int]],
                            class_names: Sequence[str]) -> dict:
    """The predicted-images list (COCO ``images`` and ``categories``, no annotations):
    ``images`` are ``(image_id, file_name, height, width)``, ``class_names`` the model's
    classes in contiguous order (category ids 1, 2, ...)."""
    return {"images": [{"id": i, "file_name": name, "height": h, "width": w}
                       for i, name, h, w in images],
            "categories": [{"id": i, "name": str(n)}
                           for i, n in enumerate(class_names, start=1)]}


def read_predicted_images(results_json: str | os.PathLike
                          ) -> tuple[list[str], dict[Any, str]] | None:
    """``(file names, category_id -> name)`` from the list visualize wrote beside
    ``results_json``, or None when there is none (Detectron2's own results)."""
    path = predicted_images_file(results_json)
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not all(
            isinstance(i, dict) and isinstance(i.get("file_name"), str)
            for i in data["images"]):
        raise GrapeInputError(f"{path}: not the predicted-images list visualize writes "
                              "(images with file_name)")
    cats = data.get("categories") if isinstance(data.get("categories"), list) else []
    names = {c["id"]: str(c["name"]) for c in cats
             if isinstance(c, dict) and _is_key(c.get("id")) and "name" in c}
    return [i["file_name"] for i in data["images"]], names


def results_file(path: str | os.PathLike) -> Path:
    """The results JSON itself, or the one in a folder (visualize's ``--output`` or
    Detectron2's ``OUTPUT_DIR/inference``), so either can be passed."""
    path = Path(path)
    if not path.is_dir():
        return path
    for name in RESULTS_NAMES:
        if (path / name).is_file():
            return path / name
    raise GrapeInputError(f"{path}: folder holds no {' or '.join(RESULTS_NAMES)}")


def load_results(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 check_counts: bool = True) -> list[dict]:
    """Detectron2 instance predictions; a one-line error for anything else, masks included:
    an RLE size above ``max_pixels`` or (``check_counts``; else see :func:`check_counts`)
    counts that are not runs adding up to it, which pycocotools decodes with a ValueError
    or a crash, are refused before any is decoded."""
    data = read_json(path)
    if not isinstance(data, list) or not all(
            isinstance(d, dict) and {"image_id", "category_id", "score"} <= d.keys()
            for d in data):
        raise GrapeInputError(f"{path}: not a Detectron2 coco_instances_results.json "
                              "(a list of {image_id, category_id, score, segmentation})")
    if data and not all(isinstance(d.get("segmentation"), dict) for d in data):
        raise GrapeInputError(f"{path}: predictions have no RLE 'segmentation' (box-only "
                              "model? masks are needed)")
    for i, d in enumerate(data):
        rle = d["segmentation"]
        size = rle.get("size")
        if not (_is_key(d["image_id"]) and _is_key(d["category_id"])
                and isinstance(d["score"], (int, float)) and not isinstance(d["score"], bool)
                and isinstance(size, list) and len(size) == 2
                and all(_is_key(v) and not isinstance(v, str) for v in size)
                and isinstance(rle.get("counts"), str)
                and isinstance(d.get("file_name", ""), str)):
            raise GrapeInputError(f"{path}: prediction #{i} is malformed (needs integer "
                                  "image_id and category_id, a numeric score, an RLE "
                                  "segmentation {size: [h, w], counts: text} and, if any, "
                                  "a text file_name)")
        h, w = size
        if h <= 0 or w <= 0 or (max_pixels is not None and h * w > max_pixels):
            raise GrapeInputError(f"{path}: prediction #{i} has a mask of {h} x {w} pixels "
                                  "(none, or above the --max-pixels limit)")
        if check_counts:
            check_rle_counts(d, i, path)
    return data


def check_rle_counts(det: dict, index: int, path: str | os.PathLike) -> None:
    """One line for a prediction whose RLE counts are not runs adding up to its size."""
    h, w = det["segmentation"]["size"]
    if rle_string_counts(det["segmentation"]["counts"], h * w) is None:
        raise GrapeInputError(f"{path}: prediction #{index} has malformed RLE counts (not "
                              "runs of pixels adding up to height x width)")


def _is_key(value: Any) -> bool:
    """An id a table can be keyed by (an integer or a text; not a list, null or bool)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _coco_table(coco_json: str | os.PathLike) -> tuple[dict[Any, str], dict[Any, str]]:
    """``image_id -> file name`` (relative to the images folder) and ``category_id -> name``."""
    data = read_json(coco_json)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise GrapeInputError(f"{coco_json}: not a COCO JSON (no 'images' list)")
    categories = data.get("categories", [])
    images = {img["id"]: img["file_name"] for img in data["images"]
              if isinstance(img, dict) and _is_key(img.get("id"))
              and isinstance(img.get("file_name"), str)}
    cats = {c["id"]: str(c.get("name", c["id"]))
            for c in (categories if isinstance(categories, list) else [])
            if isinstance(c, dict) and _is_key(c.get("id"))}
    return images, cats


def _name_in_folder(file_name: str, images_dir: Path) -> str | None:
    """The path relative to ``images_dir`` of the image a prediction's ``file_name`` names.

    visualize writes the path as given on its command line (relative to where it ran), so
    try it as it is, then inside ``images_dir``, then by its base name there. The check is
    lexical, as everywhere (``..`` collapsed, symlinks not followed): a folder of symlinked
    photos is accepted, and a link is named by its own path."""
    folder = Path(os.path.abspath(images_dir))
    given = Path(file_name)
    for candidate in (given, images_dir / given, images_dir / given.name):
        if candidate.is_file():
            try:
                return Path(os.path.abspath(candidate)).relative_to(folder).as_posix()
            except ValueError:  # a file outside the folder: try the next reading
                continue
    return None


def _match_images(results: list[dict], results_json: Path, images_dir: Path,
                  listed: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Without a COCO JSON: the predicted images (``name -> name``: those visualize
    ``listed``, with or without a detection, and those a detection names) and, per
    prediction, the name of its image."""
    images: dict[str, str] = {}
    for file_name in listed:
        name = _name_in_folder(file_name, images_dir)
        if name is None:
            raise GrapeInputError(f"{predicted_images_file(results_json)}: lists "
                                  f"{file_name!r}, which is not in --images {images_dir}")
        images[name] = name
    stems = {p.stem: p.name for p in list_image_files(images_dir)}
    keys: list[str] = []
    found: dict[str, str | None] = {}  # file_name -> name: the file system asked once each
    for i, det in enumerate(results):
        file_name = det.get("file_name")
        if file_name:
            if file_name not in found:
                found[file_name] = _name_in_folder(file_name, images_dir)
            name = found[file_name]
            if name is None:
                raise GrapeInputError(f"{results_json}: prediction #{i} is of {file_name!r}, "
                                      f"which is not in --images {images_dir}")
        else:
            name = stems.get(str(det["image_id"]))
            if name is None:
                raise GrapeInputError(
                    f"{results_json}: prediction for unknown image id {det['image_id']!r}: it "
                    f"has no file_name and no image in {images_dir} has that file stem; pass "
                    "--coco, the COCO JSON the predictions were made on")
        images.setdefault(name, name)
        keys.append(name)
    return dict(sorted(images.items())), keys


def drop_slivers(mask: np.ndarray, fraction: float = SLIVER_FRACTION) -> np.ndarray:
    """``mask`` without its smallest pieces (8-connected), as long as together they hold
    less than ``fraction`` of its area: a bunch made of many small pieces keeps them."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8),
                                                           connectivity=8)
    if n <= 2:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = np.argsort(areas, kind="stable")
    dropped = np.cumsum(areas[order]) < fraction * areas.sum()
    if not dropped.any():
        return mask
    return np.isin(labels, order[~dropped] + 1)


def read_back(poly: np.ndarray, convention: str) -> bool:
    """Whether this project's reader of the tool keeps ``poly`` (integer vertices) as pixels:
    the VIA converter's (``sanitize_polygon``, then pycocotools) for ``"edges"``, the labelme
    converter's (``shape_mask``: labelme's own ``shape_to_mask`` after a zero-area check) for
    ``"centres"``. Both skip a polygon with no shoelace area, such as the outline through
    the pixel centres of a piece one pixel wide, which runs there and back.

    The polygon is rasterised in its own box with a 1 px margin (an integer shift gives the
    same pixels, shifted), so the cost follows the polygon, not the photo.
    """
    pts = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    local = pts - np.floor(pts.min(axis=0)) + 1
    width, height = (np.ceil(local.max(axis=0)) + 2).astype(int).tolist()
    unused = WarningCounter()  # nothing to report: every vertex lies inside the box
    if convention == "edges":
        flat = sanitize_polygon(local[:, 0].tolist(), local[:, 1].tolist(), width, height,
                                unused)
        return flat is not None and bool(rasterize_polygons([flat], height, width).any())
    if convention == "centres":
        mask = shape_mask(labelme_shape("", local), height, width, unused, "")
        return mask is not None and bool(mask.any())
    raise ValueError(f"unknown polygon convention {convention!r}")


def detection_polygons(mask: np.ndarray, convention: str, simplify: float = DEFAULT_SIMPLIFY,
                       warnings: WarningCounter | None = None, where: str = ""
                       ) -> list[np.ndarray]:
    """The polygons from-predictions writes for one predicted mask, in a tool's pixel
    convention (:func:`~grape_instances.core.polygons.mask_to_polygons`): simplified at
    ``simplify`` x the bunch size, slivers dropped with it (``simplify`` 0: exact outlines,
    every piece), specks under ``MIN_COMPONENT_AREA`` pixels left out, and so are polygons
    the tool's reader would rasterise to no pixel (:func:`read_back`). A detection that
    loses its every polygon to that last rule is counted in ``warnings`` (``where``: the
    example), as it would otherwise vanish on the way back without a word."""
    tolerance = simplify * float(np.sqrt(mask.sum()))
    if simplify > 0:
        mask = drop_slivers(mask)
    polygons = mask_to_polygons(mask, convention, tolerance, MIN_COMPONENT_AREA)
    kept = [poly for poly in polygons if read_back(poly, convention)]
    if polygons and not kept and warnings is not None:
        warnings.add(NO_PIXEL[convention], where)
    return kept


def _warn_not_predicted(images: dict[Any, str], images_dir: Path,
                        warnings: WarningCounter) -> None:
    """Name, in one counted warning, the photos of ``images_dir`` left out as unpredicted."""
    predicted = {Path(os.path.normpath(images_dir / n)) for n in images.values()}
    for path in list_image_files(images_dir):
        if Path(os.path.normpath(path)) not in predicted:
            warnings.add(NOT_PREDICTED, path.name)


def convert_predictions(
    results_json: str | os.PathLike,
    images_dir: str | os.PathLike,
    *,
    coco_json: str | os.PathLike | None = None,
    via_out: str | os.PathLike | None = None,
    labelme_out: str | os.PathLike | None = None,
    score_threshold: float = 0.5,
    simplify: float = DEFAULT_SIMPLIFY,
    category_names: Sequence[str] | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    overwrite: bool = False,
) -> dict:
    """Write predictions as a VIA 2.x project and/or labelme JSONs; returns a summary.

    Every predicted image (see the module notes) is written, with or without detections,
    so images the model missed can be annotated in the same project; other images of
    ``images_dir`` are left out with a counted warning. ``results_json`` may be the folder
    holding it. ``simplify`` is the polygon tolerance as a fraction of each bunch's size (0:
    exact outlines); ``category_names`` name category ids 1, 2, ... when there is no
    ``coco_json`` (default: the model's class names visualize listed, else ``bunch``).
    """
    if via_out is None and labelme_out is None:
        raise GrapeInputError("from-predictions: give --via-out and/or --labelme-out")
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise GrapeInputError(f"{images_dir}: images folder not found")
    if via_out is not None:
        refuse_existing(via_out, overwrite, [results_json, coco_json])
    if simplify < 0:
        raise GrapeInputError(f"--simplify {simplify}: must be >= 0 (0: exact outlines)")
    results_json = results_file(results_json)
    results = load_results(results_json, max_pixels, check_counts=False)  # the kept, below
    if coco_json is not None:
        images, cat_names = _coco_table(coco_json)
        keys = [det["image_id"] for det in results]
        for key in keys:
            if key not in images:
                raise GrapeInputError(f"{results_json}: prediction for unknown image id "
                                      f"{key!r} (not in {coco_json})")
    else:
        listed = read_predicted_images(results_json)
        images, keys = _match_images(results, results_json, images_dir,
                                     listed[0] if listed else [])
        if category_names:
            cat_names = {i: str(name) for i, name in enumerate(category_names, start=1)}
        else:
            cat_names = (listed[1] if listed and listed[1] else {1: DEFAULT_CATEGORY})
    warnings = WarningCounter()
    _warn_not_predicted(images, images_dir, warnings)
    by_image: dict[Any, list[dict]] = defaultdict(list)
    for index, (det, key) in enumerate(zip(results, keys, strict=True)):
        if det["score"] >= score_threshold:
            det["_index"] = index
            by_image[key].append(det)
    dropped = 0
    for key, dets in by_image.items():
        if len(dets) > MAX_DETECTIONS_PER_IMAGE:
            dropped += len(dets) - MAX_DETECTIONS_PER_IMAGE
            by_image[key] = heapq.nlargest(MAX_DETECTIONS_PER_IMAGE, dets,
                                           key=lambda d: d["score"])
    if dropped:
        logger.warning("%s: %d detections beyond %d per image (the highest scores kept) left "
                       "out", results_json, dropped, MAX_DETECTIONS_PER_IMAGE)
    checked: set[tuple[str, int]] = set()  # each distinct mask once: linear in what is kept
    for dets in by_image.values():
        for det in dets:
            seg = det["segmentation"]
            key = (seg["counts"], seg["size"][0] * seg["size"][1])
            if key not in checked:
                check_rle_counts(det, det["_index"], results_json)
                checked.add(key)

    labelme_paths: dict[Any, Path] = {}
    if labelme_out is not None:
        for key, name in images.items():
            labelme_paths[key] = Path(labelme_out) / (Path(name).with_suffix(".json"))
        for p in labelme_paths.values():
            refuse_existing(p, overwrite, [results_json, coco_json])

    via_images: dict[str, dict] = {}
    labelme_files: dict[Path, dict] = {}
    n_regions = n_dets = 0
    for key, name in images.items():
        path = resolve_image_path(name, images_dir, source=coco_json or images_dir)
        size = read_image_size(path, max_pixels=max_pixels)
        regions, shapes = [], []
        dets = sorted(by_image.get(key, []), key=lambda d: -d["score"])
        for instance, det in enumerate(dets, start=1):
            rle = det["segmentation"]
            if list(rle.get("size", [])) != [size.height, size.width]:
                raise GrapeInputError(
                    f"{results_json}: mask size {rle.get('size')} of image {name!r} differs "
                    f"from the image ({size.height}x{size.width})"
                )
            label = cat_names.get(det["category_id"], str(det["category_id"]))
            mask = rle_to_mask(rle)
            where = f"{name} prediction #{det['_index']}"
            via_polys = detection_polygons(mask, "edges", simplify,
                                           warnings if via_out is not None else None, where)
            n_dets += bool(via_polys)
            n_regions += len(via_polys)
            attributes = {"name": label, "instance": str(instance),
                          "score": f"{det['score']:.3f}"}
            regions += [via2_polygon_region(poly, attributes) for poly in via_polys]
            if labelme_out is not None:
                shapes += [labelme_shape(label, poly, instance, f"score {det['score']:.3f}")
                           for poly in detection_polygons(mask, "centres", simplify,
                                                          warnings, where)]
        via_key, record = via2_image(Path(name).as_posix(), path.stat().st_size, regions)
        via_images[via_key] = record
        if labelme_out is not None:
            target = labelme_paths[key]
            rel = os.path.relpath(os.path.abspath(path), os.path.abspath(target.parent))
            labelme_files[target] = labelme_record(shapes, Path(rel).as_posix(), size.height,
                                                   size.width)

    labels = sorted({r["region_attributes"]["name"] for v in via_images.values()
                     for r in v["regions"]} | set(cat_names.values()))
    paths = ([Path(via_out)] if via_out is not None else []) + list(labelme_files)
    with atomic_outputs(paths, overwrite=overwrite) as out:  # the project and files together
        if via_out is not None:
            out.write_json(via_out, _via_project(via_images, labels, images_dir))
        for target, record in labelme_files.items():
            out.write_json(target, record, indent=2)
    summary = {"images": len(images), "instances": n_dets, "regions": n_regions,
               "kept_threshold": score_threshold, "warnings": warnings.as_dict()}
    warnings.log(logger, prefix="from-predictions: ")
    logger.info("predictions: %d images, %d instances (%d polygons) with score >= %s",
                len(images), n_dets, n_regions, score_threshold)
    return summary


def _via_project(via_images: dict[str, dict], labels: Sequence[str], images_dir: Path
                 ) -> dict:
    return via2_project(
        via_images, "predictions", os.path.abspath(images_dir) + os.sep,
        {"name": via2_dropdown("class", labels),
         "instance": via2_text("regions with the same value are parts of one instance"),
         "score": via2_text("model score")},
        region_label="name", region_color="instance")
