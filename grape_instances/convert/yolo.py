"""COCO instances JSON -> a YOLO segmentation dataset (Ultralytics' ``*-seg`` format).

    OUT/images/<split>/<file_name>   a symlink to the photo (or a copy with ``copy_images``)
    OUT/labels/<split>/<file stem>.txt   one line per instance: ``cls x1 y1 x2 y2 ...``
    OUT/data.yaml                     path, train / val (/ test) folders, class names

Coordinates are normalised by the photo's width and height (so within [0, 1]); ``cls`` is the
category's index in ascending COCO id order, which is also Detectron2's contiguous id, so
predictions map back to the dataset's ids the same way on both sides (:func:`category_ids`).
Photos keep their relative layout under ``images/<split>/``; each label file lies where
Ultralytics looks for it (the last ``/images/`` of the photo's path replaced by ``/labels/``).

Masks (polygons, RLE) are decoded and traced again as outer outlines through the centres of
the boundary pixels: Ultralytics rasterises label polygons with OpenCV's ``fillPoly``, whose
integer coordinates are pixel centres, so the label fills the mask back (holes are filled: a
YOLO polygon has none). Outlines are simplified by ``simplify`` pixels (Douglas-Peucker: 1 px
leaves about 150 numbers a line instead of thousands) and components under
:data:`~grape_instances.core.polygons.MIN_COMPONENT_AREA` px are dropped.

**A bunch in several parts** (a branch or a leaf across it) is one object, so it must be one
line: a line per part would teach the model several bunches. The parts are joined into one
ring with zero-width bridges, the idea of Ultralytics' ``merge_multi_segment`` (written anew
here): each smaller part is entered from the vertex of the largest part nearest to it, walked
once around, and left back along the same bridge. A bridge is traversed twice in opposite
directions, so it encloses nothing, and the ring fills the union of the parts (test:
``tests/test_convert_yolo.py``). Keeping only the largest part was the alternative; it drops
real grape pixels and teaches smaller masks than the annotators drew. On the 128 bunches of
the real-photo validation part (49 of them in several parts), the labels filled back by
``fillPoly`` have mask IoU 0.989 on average (lowest 0.960) with the annotated masks; the
largest part alone would give 0.909 (lowest 0.507).

Crowd regions are left out with a counted warning (YOLO has no ignore regions), as are
undecodable photos (refused with ``strict_images``). The output folder is written whole or
not at all and refused if it exists, unless ``overwrite``; inputs are never modified.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import GrapeInputError
from ..core.fileio import path_exists, replacing_folder
from ..core.images import DEFAULT_MAX_PIXELS, checked_image_size, resolve_image_path
from ..core.masks import segmentation_to_mask
from ..core.polygons import MIN_COMPONENT_AREA, mask_to_polygons, polygon_area
from ..core.warning_counter import WarningCounter
from .split import load_coco

logger = logging.getLogger(__name__)

#: Douglas-Peucker tolerance of the traced outlines, in pixels of the photo.
DEFAULT_SIMPLIFY = 1.0
CROWD = "crowd regions (left out: YOLO labels have no ignore regions)"
EMPTY_MASK = "annotations whose mask is empty or smaller than 4 px (left out)"
MULTI_PART = "instances in several parts (joined into one polygon)"
SIZE_MISMATCH = "images whose file size differs from the JSON's width / height"


@dataclass
class YoloSummary:
    """What the conversion wrote, per split."""

    out_dir: Path
    data_yaml: Path
    names: list[str] = field(default_factory=list)
    images: dict[str, int] = field(default_factory=dict)
    instances: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)


def category_ids(coco: dict) -> list[int]:
    """COCO category ids in YOLO class order (ascending id, as Detectron2's contiguous ids):
    ``category_ids(coco)[cls]`` is the dataset's id of YOLO class ``cls``."""
    return sorted(c["id"] for c in coco["categories"])


def join_parts(parts: Sequence[np.ndarray]) -> np.ndarray:
    """One K x 2 ring through every part (K_i x 2 outlines of one instance): the largest part,
    with each other part inserted at the largest part's vertex nearest to it along a
    zero-width bridge (there and back on the same segment); see the module docstring."""
    parts = [np.asarray(p) for p in parts]
    if len(parts) == 1:
        return parts[0]
    order = sorted(range(len(parts)), key=lambda i: -abs(polygon_area(parts[i])))
    main = parts[order[0]]
    inserts: dict[int, list[np.ndarray]] = {}
    for i in order[1:]:
        part = parts[i]
        d = ((main[:, None, :].astype(np.float64) - part[None, :, :]) ** 2).sum(-1)
        a, b = np.unravel_index(np.argmin(d), d.shape)
        loop = np.roll(part, -b, axis=0)  # starts (and, closed below, ends) at vertex b
        inserts.setdefault(int(a), []).append(np.concatenate([loop, loop[:1], main[a:a + 1]]))
    ring = []
    for k in range(len(main)):
        ring.append(main[k:k + 1])
        ring.extend(inserts.get(k, []))
    return np.concatenate(ring)


def mask_to_yolo_polygon(mask: np.ndarray, simplify: float = DEFAULT_SIMPLIFY
                         ) -> tuple[np.ndarray | None, int]:
    """(one ring of pixel-centre vertices, number of parts) of a binary mask; (None, 0) when
    nothing of at least MIN_COMPONENT_AREA px is left."""
    parts = mask_to_polygons(mask, "centres", tolerance=simplify, min_area=MIN_COMPONENT_AREA)
    if not parts:
        return None, 0
    return join_parts(parts), len(parts)


def label_line(cls: int, ring: np.ndarray, width: int, height: int) -> str:
    """``cls x1 y1 x2 y2 ...``, coordinates divided by the photo's size, within [0, 1]."""
    xy = np.asarray(ring, np.float64) / np.array([width, height], np.float64)
    xy = np.clip(xy, 0.0, 1.0)
    return " ".join([str(cls), *(f"{v:.6f}".rstrip("0").rstrip(".") for v in xy.ravel())])


def label_path(image_path: Path) -> Path:
    """Where Ultralytics reads the labels of ``image_path`` (its ``img2label_paths``)."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return Path(sb.join(str(image_path).rsplit(sa, 1))).with_suffix(".txt")


def _split_labels(coco: dict, json_path: Path, images_dir: Path, simplify: float,
                  warnings: WarningCounter, max_pixels: int | None, strict: bool
                  ) -> list[tuple[str, Path, list[str]]]:
    """(file name, photo path, label lines) of every decodable image of one COCO file."""
    classes = {cid: i for i, cid in enumerate(category_ids(coco))}
    by_image: dict[object, list[dict]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    out = []
    for img in coco["images"]:
        name = img.get("file_name")
        photo = resolve_image_path(name, images_dir, source=json_path)
        size = checked_image_size(photo, warnings, strict, max_pixels, source=json_path)
        if size is None:
            continue
        width, height = img.get("width"), img.get("height")
        if (width, height) != (size.width, size.height):
            raise GrapeInputError(
                f"{json_path}: image {name!r} is {size.width} x {size.height} px but the JSON "
                f"says {width} x {height}; normalised coordinates would be wrong")
        lines = []
        for ann in by_image.get(img["id"], []):
            if ann.get("iscrowd", 0):
                warnings.add(CROWD, f"{name} annotation {ann['id']}")
                continue
            if ann["category_id"] not in classes:
                raise GrapeInputError(f"{json_path}: annotation {ann['id']} has category_id "
                                      f"{ann['category_id']!r}, not one of its categories")
            mask = segmentation_to_mask(ann["segmentation"], height, width)
            ring, parts = mask_to_yolo_polygon(mask, simplify)
            if ring is None:
                warnings.add(EMPTY_MASK, f"{name} annotation {ann['id']}")
                continue
            if parts > 1:
                warnings.add(MULTI_PART, f"{name} annotation {ann['id']}")
            lines.append(label_line(classes[ann["category_id"]], ring, width, height))
        out.append((name, photo, lines))
    return out


def _data_yaml(out_dir: Path, splits: Sequence[str], names: list[str], ids: list[int],
               sources: dict[str, Path]) -> str:
    import yaml

    body = {"path": str(out_dir.resolve()),
            **{s: f"images/{s}" for s in splits},
            "names": dict(enumerate(names))}
    if "val" not in splits:  # Ultralytics needs a val entry
        body["val"] = "images/train"
    head = ["# YOLO segmentation dataset written by `python tools/convert.py yolo`",
            *(f"# {s}: {p}" for s, p in sources.items()),
            f"# class index -> COCO category id: {dict(enumerate(ids))}"]
    return "\n".join(head) + "\n" + yaml.safe_dump(body, sort_keys=False)


def convert_yolo(
    train_json: str | os.PathLike,
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    val_json: str | os.PathLike | None = None,
    test_json: str | os.PathLike | None = None,
    copy_images: bool = False,
    simplify: float = DEFAULT_SIMPLIFY,
    overwrite: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    strict_images: bool = False,
) -> YoloSummary:
    """Write ``out_dir`` (see the module docstring) from one COCO file per split, all sharing
    one category list; file names are relative to ``images_dir``."""
    out_dir = Path(out_dir)
    images_dir = Path(images_dir)
    sources = {s: Path(p) for s, p in (("train", train_json), ("val", val_json),
                                        ("test", test_json)) if p is not None}
    if path_exists(out_dir) and not overwrite:
        raise GrapeInputError(f"{out_dir}: output already exists (pass --overwrite to replace "
                              "it)")
    if not images_dir.is_dir():
        raise GrapeInputError(f"{images_dir}: images folder not found")
    if simplify < 0:
        raise GrapeInputError(f"--simplify {simplify}: must be >= 0")
    cocos = {s: load_coco(p) for s, p in sources.items()}
    first = next(iter(sources))
    names_of = {s: [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
                for s, coco in cocos.items()}
    for s in cocos:
        if (category_ids(cocos[s]), names_of[s]) != (category_ids(cocos[first]),
                                                     names_of[first]):
            raise GrapeInputError(f"{sources[s]}: categories differ from those of "
                                  f"{sources[first]}; the splits must share one list")
    if not cocos[first]["categories"]:
        raise GrapeInputError(f"{sources[first]}: no categories")
    warnings = WarningCounter()
    labels = {s: _split_labels(cocos[s], sources[s], images_dir, simplify, warnings,
                               max_pixels, strict_images) for s in sources}
    summary = YoloSummary(out_dir, out_dir / "data.yaml", names_of[first])
    with replacing_folder(out_dir, inputs=[images_dir, *sources.values()]) as tmp:
        for split, entries in labels.items():
            seen: set[str] = set()
            for name, photo, lines in entries:
                rel = os.path.normpath(name.replace("\\", "/"))
                if rel in seen:
                    raise GrapeInputError(f"{sources[split]}: image {name!r} is listed twice")
                seen.add(rel)
                image = tmp / "images" / split / rel
                image.parent.mkdir(parents=True, exist_ok=True)
                if copy_images:
                    shutil.copy2(photo, image)
                else:
                    os.symlink(photo.resolve(), image)
                text = label_path(image)
                text.parent.mkdir(parents=True, exist_ok=True)
                text.write_text("".join(f"{line}\n" for line in lines))
            summary.images[split] = len(entries)
            summary.instances[split] = sum(len(lines) for _, _, lines in entries)
        (tmp / "data.yaml").write_text(_data_yaml(out_dir, list(sources), names_of[first],
                                                  category_ids(cocos[first]), sources))
    for split in sources:
        logger.info("%s: %d images, %d instances -> %s", split, summary.images[split],
                    summary.instances[split], out_dir / "labels" / split)
    logger.info("wrote %s", summary.data_yaml)
    warnings.log(logger)
    summary.warnings = warnings.as_dict()
    return summary
