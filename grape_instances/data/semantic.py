"""The semantic view of a COCO instance dataset: one label PNG per image, derived and cached.

Semantic baselines train on, and every model is scored against, label maps derived from the
very instance JSON Mask R-CNN uses, so both families see identical labels and splits and no
second annotation set is kept by hand. A label map is 0 for background, ``category + 1``
inside a bunch (later annotations win where categories overlap), or 1 for every category when
they are merged into one foreground class (``DATASETS.SEMANTIC_MERGE_CLASSES``), and
``ignore_value`` on ``iscrowd`` regions (crowds win: their pixels are neither bunch nor
background for sure).

Detectron2's ``DatasetMapper`` and ``SemSegEvaluator`` read ``sem_seg_file_name`` per record,
so the maps are written once as PNGs under ``<cache_root>/<hash>/``, where the hash covers
the JSON's bytes, the ignore value, the merge mode and the derivation's version: an edited
JSON gets a fresh folder, an unchanged one reuses its PNGs.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.colormap import colormap
from tqdm import tqdm

from ..core import paths
from ..core.errors import GrapeInputError
from ..core.fileio import atomic_open
from ..core.masks import segmentation_to_mask
from .datasets import THING_CLASSES

logger = logging.getLogger(__name__)

SEMANTIC_SUFFIX = "_sem"
BACKGROUND = "background"
# The one foreground class of a merged view of several categories.
FOREGROUND = "foreground"
DEFAULT_CACHE_ROOT = paths.SEMANTIC_CACHE_ROOT
DEFAULT_IGNORE_VALUE = 255
# Bump whenever semantic_label_map changes, so caches of the old derivation are not reused.
DERIVATION_VERSION = 1


def semantic_view_name(instance_name: str, merge_classes: bool = False) -> str:
    """``<name>_sem`` (one class per category) or ``<name>_sem_merged``: both can coexist."""
    return instance_name + SEMANTIC_SUFFIX + ("_merged" if merge_classes else "")


def stuff_classes_for(thing_classes, merge_classes: bool = False) -> list[str]:
    """Semantic classes of an instance dataset: background, then its categories in order,
    or one foreground class for them all (named after the category if there is only one)."""
    if merge_classes and len(thing_classes) != 1:
        return [BACKGROUND, FOREGROUND]
    return [BACKGROUND, *thing_classes]


def stuff_colors_for(num_classes: int) -> list[list[int]]:
    """RGB colours: black background, then Detectron2's palette."""
    palette = colormap(rgb=True, maximum=255).astype(int).tolist()
    return [[0, 0, 0]] + [palette[i % len(palette)] for i in range(num_classes - 1)]


def semantic_label_map(
    record: dict, ignore_value: int = DEFAULT_IGNORE_VALUE, merge_classes: bool = False
) -> np.ndarray:
    """uint8 H x W label map of one Detectron2 instance record (contiguous category ids);
    ``merge_classes`` labels every category 1."""
    height, width = int(record["height"]), int(record["width"])
    labels = np.zeros((height, width), np.uint8)
    crowd = np.zeros((height, width), bool)
    for ann in record.get("annotations", []):
        if "segmentation" not in ann:
            raise GrapeInputError(
                f"{record['file_name']}: an annotation has no segmentation, so no semantic "
                "mask can be derived from it"
            )
        mask = segmentation_to_mask(ann["segmentation"], height, width).astype(bool)
        if mask.shape != (height, width):
            raise GrapeInputError(
                f"{record['file_name']}: mask of size {mask.shape} in an image of "
                f"{height}x{width}"
            )
        if ann.get("iscrowd", 0):
            crowd |= mask
        else:
            label = 1 if merge_classes else int(ann["category_id"]) + 1
            if label >= min(ignore_value, 256):
                raise GrapeInputError(f"{record['file_name']}: too many categories for a PNG map")
            labels[mask] = label
    labels[crowd] = ignore_value
    return labels


def cache_key(
    json_file: str | os.PathLike, ignore_value: int, merge_classes: bool = False
) -> str:
    """Hash of the annotation file's bytes and of everything else the label maps depend on."""
    merged = "merged;" if merge_classes else ""  # per-class keys unchanged from before
    digest = hashlib.sha256(
        f"grape-semantic-v{DERIVATION_VERSION};{ignore_value};{merged}".encode()
    )
    with open(json_file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:20]


def write_label_png(path: Path, labels: np.ndarray) -> None:
    """Lossless single-channel PNG, written atomically (several processes may race here)."""
    ok, buf = cv2.imencode(".png", labels)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {path}")
    with atomic_open(path, "wb") as f:
        f.write(buf.tobytes())


def load_semantic_records(
    instance_name: str,
    cache_root: str | os.PathLike = DEFAULT_CACHE_ROOT,
    ignore_value: int = DEFAULT_IGNORE_VALUE,
    merge_classes: bool = False,
) -> list[dict]:
    """Records of ``instance_name`` with ``sem_seg_file_name`` (PNGs written if missing).

    Annotations are dropped: a semantic model needs only the label map, and without them
    Detectron2's mapper does no instance work.
    """
    json_file = MetadataCatalog.get(instance_name).get("json_file")
    if not json_file:
        raise GrapeInputError(
            f"dataset {instance_name!r} has no COCO json_file in its metadata, so it has no "
            "semantic view"
        )
    if not os.path.isfile(json_file):
        raise GrapeInputError(f"dataset {instance_name!r}: annotation file {json_file} not found")
    folder = Path(cache_root) / cache_key(json_file, ignore_value, merge_classes)
    records, missing, seen = [], [], set()
    for record in DatasetCatalog.get(instance_name):
        image_id = record["image_id"]
        if image_id in seen:
            raise GrapeInputError(f"{json_file}: image id {image_id} is used twice")
        seen.add(image_id)
        png = folder / f"{image_id}.png"
        records.append({
            "file_name": record["file_name"],
            "height": record["height"],
            "width": record["width"],
            "image_id": image_id,
            "sem_seg_file_name": str(png),
            # RGB-D input (INPUT.DEPTH) of the semantic baselines
            **{k: record[k] for k in ("depth_file_name",) if k in record},
        })
        if not png.is_file():
            missing.append((record, png))
    if missing:
        for record, png in tqdm(missing, desc=f"semantic masks {instance_name}", unit="img"):
            write_label_png(png, semantic_label_map(record, ignore_value, merge_classes))
        logger.info("semantic view of %s: wrote %d label maps to %s",
                    instance_name, len(missing), folder)
    else:
        logger.info("semantic view of %s: reusing %d label maps in %s",
                    instance_name, len(records), folder)
    return records


def semantic_view(
    instance_name: str,
    cache_root: str | os.PathLike = DEFAULT_CACHE_ROOT,
    ignore_value: int = DEFAULT_IGNORE_VALUE,
    merge_classes: bool = False,
) -> str:
    """Register (lazily: PNGs are made on first use) the semantic view of a registered COCO
    instance dataset and return its name, ``<instance_name>_sem`` (``_sem_merged`` when
    ``merge_classes`` makes all categories one foreground class)."""
    name = semantic_view_name(instance_name, merge_classes)
    cache_root = os.fspath(cache_root)
    if not 0 < ignore_value <= 255:
        raise GrapeInputError(f"ignore value {ignore_value} does not fit a uint8 label PNG")
    if instance_name not in DatasetCatalog.list():
        raise GrapeInputError(f"unknown dataset {instance_name!r}: no semantic view of it")
    instance_meta = MetadataCatalog.get(instance_name)
    stuff_classes = stuff_classes_for(
        instance_meta.get("thing_classes", THING_CLASSES), merge_classes
    )
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if meta.get("ignore_label") != ignore_value:
            raise GrapeInputError(
                f"semantic view {name!r} is already registered with ignore value "
                f"{meta.get('ignore_label')}, not {ignore_value}"
            )
        if (meta.get("stuff_classes"), meta.get("semantic_cache_root")) == (
            stuff_classes, cache_root
        ):
            return name
        # The instance dataset was registered again with other categories, or a later run in
        # this process keeps its label maps in its own OUTPUT_DIR (the default cache, e.g. the
        # pretraining driver's runs one after another): follow it. The maps are a function of
        # the JSON alone, so either cache gives the same labels.
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(
        name, lambda: load_semantic_records(instance_name, cache_root, ignore_value, merge_classes)
    )
    MetadataCatalog.get(name).set(
        stuff_classes=stuff_classes,
        stuff_colors=stuff_colors_for(len(stuff_classes)),
        ignore_label=ignore_value,
        evaluator_type="sem_seg",
        instance_dataset=instance_name,
        semantic_cache_root=cache_root,
        merge_classes=merge_classes,
    )
    return name


def semantic_cache_dir(cfg) -> str:
    """The config's label-map cache: ``DATASETS.SEMANTIC_CACHE_DIR``, or by default
    ``OUTPUT_DIR/semantic_cache`` (never a folder relative to where the run started)."""
    return cfg.DATASETS.SEMANTIC_CACHE_DIR or os.path.join(cfg.OUTPUT_DIR, "semantic_cache")


def semantic_view_for_config(cfg, instance_name: str) -> str:
    """:func:`semantic_view` with the cache folder, ignore value and merge mode of a config."""
    return semantic_view(
        instance_name, semantic_cache_dir(cfg), cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        cfg.DATASETS.SEMANTIC_MERGE_CLASSES,
    )
