"""Model predictions -> VIA 2.x project / labelme files (model-assisted annotation).

Correcting a predicted mask takes a fraction of the time of drawing one. This module
reads Detectron2's ``coco_instances_results.json`` (written by ``COCOEvaluator`` into
``OUTPUT_DIR/inference``: one ``{image_id, category_id, score, segmentation: RLE}`` per
detection), keeps detections with ``score >= score_threshold``, turns each mask into
polygons (``cv2.findContours`` on the outer boundaries, optionally simplified by
``cv2.approxPolyDP``) and writes them as a VIA 2.x project and/or one labelme JSON per
image (each in its tool's pixel convention, see
:func:`~grape_instances.convert.polygons.mask_to_polygons`). Parts of one
instance share the VIA region attribute ``instance`` and the labelme
``group_id``, so converting the corrected file back (``via --group-attr instance`` or
``labelme``) gives one instance again. Holes inside a mask are not kept (VIA and labelme
polygons have none).

Which image is ``image_id``: with ``coco_json`` (the JSON the predictions were made on,
normally the registered test set) ids and category names come from it; without it, an
image id must equal the file stem of an image in ``images_dir`` (e.g. ``IMG_0001``), and
categories are named by their id.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import GrapeInputError
from ..fileio import atomic_outputs, check_output_path, read_json
from .coco import rle_to_mask
from .images import (
    DEFAULT_MAX_PIXELS,
    list_image_files,
    read_image_size,
    resolve_image_path,
)
from .labelme import labelme_record, labelme_shape
from .polygons import MIN_COMPONENT_AREA, mask_to_polygons
from .via import via2_dropdown, via2_image, via2_polygon_region, via2_project, via2_text

logger = logging.getLogger(__name__)


def load_results(path: str | os.PathLike) -> list[dict]:
    """Detectron2 instance predictions; a one-line error for anything else."""
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
                and isinstance(rle.get("counts"), str)):
            raise GrapeInputError(f"{path}: prediction #{i} is malformed (needs integer "
                                  "image_id and category_id, a numeric score and an RLE "
                                  "segmentation {size: [h, w], counts: text})")
    return data


def _is_key(value: Any) -> bool:
    """An id a table can be keyed by (an integer or a text; not a list, null or bool)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _image_table(coco_json: str | os.PathLike | None, images_dir: Path
                 ) -> tuple[dict[Any, str], dict[Any, str]]:
    """``image_id -> file name`` (relative to ``images_dir``) and ``category_id -> name``."""
    if coco_json is not None:
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
    files = list_image_files(images_dir)
    return {p.stem: p.name for p in files}, {}


def convert_predictions(
    results_json: str | os.PathLike,
    images_dir: str | os.PathLike,
    *,
    coco_json: str | os.PathLike | None = None,
    via_out: str | os.PathLike | None = None,
    labelme_out: str | os.PathLike | None = None,
    score_threshold: float = 0.5,
    simplify: float = 0.0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    overwrite: bool = False,
) -> dict:
    """Write predictions as a VIA 2.x project and/or labelme JSONs; returns a summary.

    Every image of the table (COCO JSON or folder) is written, with or without
    detections, so images the model missed can be annotated in the same project.
    """
    if via_out is None and labelme_out is None:
        raise GrapeInputError("from-predictions: give --via-out and/or --labelme-out")
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise GrapeInputError(f"{images_dir}: images folder not found")
    if via_out is not None:
        check_output_path(via_out, overwrite)
    results = load_results(results_json)
    images, cat_names = _image_table(coco_json, images_dir)
    by_image: dict[Any, list[dict]] = defaultdict(list)
    for det in results:
        key = det["image_id"] if coco_json is not None else str(det["image_id"])
        if key not in images:
            hint = "" if coco_json is not None else " (no image with that file stem; pass --coco)"
            raise GrapeInputError(f"{results_json}: prediction for unknown image id "
                                  f"{det['image_id']!r}{hint}")
        if det["score"] >= score_threshold:
            by_image[key].append(det)

    labelme_paths: dict[Any, Path] = {}
    if labelme_out is not None:
        for key, name in images.items():
            labelme_paths[key] = Path(labelme_out) / (Path(name).with_suffix(".json"))
        for p in labelme_paths.values():
            check_output_path(p, overwrite)

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
            via_polys = mask_to_polygons(mask, "edges", simplify, MIN_COMPONENT_AREA)
            n_dets += bool(via_polys)
            n_regions += len(via_polys)
            attributes = {"name": label, "instance": str(instance),
                          "score": f"{det['score']:.3f}"}
            regions += [via2_polygon_region(poly, attributes) for poly in via_polys]
            if labelme_out is not None:
                shapes += [labelme_shape(label, poly, instance, f"score {det['score']:.3f}")
                           for poly in mask_to_polygons(mask, "centres", simplify,
                                                        MIN_COMPONENT_AREA)]
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
               "kept_threshold": score_threshold}
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
