"""Register grape datasets in Detectron2's DatasetCatalog / MetadataCatalog.

Everything is a COCO instances JSON plus an image folder; the synthetic splits have fixed
names, and ``DATASETS.REGISTER`` lets a user add their own from the command line or YAML.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from ..errors import GrapeInputError

logger = logging.getLogger(__name__)

THING_CLASSES = ["bunch"]
SYNTHETIC_SPLITS = ("train", "val")


def synthetic_dataset_name(split: str) -> str:
    return f"grapes_synth_{split}"


def register_coco_dataset(name: str, json_file: str, image_root: str) -> None:
    """Register one COCO instances JSON under ``name``.

    Detectron2's catalogs are process-global: the same files again are a no-op, other files
    replace the earlier registration (the latest config wins).
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if getattr(meta, "json_file", None) == json_file and meta.image_root == image_root:
            return
        logger.info("dataset %s now reads %s (was %s)", name, json_file, meta.get("json_file"))
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, {"thing_classes": list(THING_CLASSES)}, json_file, image_root)
    MetadataCatalog.get(name).set(evaluator_type="coco")


def register_synthetic(root: str) -> list[str]:
    """Register the synthetic splits written by ``tools/make_synthetic.py`` under ``root``."""
    names = []
    for split in SYNTHETIC_SPLITS:
        name = synthetic_dataset_name(split)
        register_coco_dataset(
            name,
            os.path.join(root, "annotations", f"instances_{split}.json"),
            os.path.join(root, "images", split),
        )
        names.append(name)
    return names


def register_from_config(cfg) -> None:
    """Register the synthetic splits and every ``DATASETS.REGISTER`` triple of ``cfg``."""
    register_synthetic(cfg.DATASETS.SYNTHETIC_ROOT)
    for entry in cfg.DATASETS.REGISTER:
        if not isinstance(entry, Sequence) or len(entry) != 3:
            raise GrapeInputError(
                f"DATASETS.REGISTER entries must be [name, coco_json, image_root], got {entry!r}"
            )
        register_coco_dataset(*map(str, entry))


def check_datasets_exist(names: Iterable[str]) -> None:
    """Fail early, in one line, for a dataset name nobody registered or a missing JSON."""
    registered = set(DatasetCatalog.list())
    for name in names:
        if name not in registered:
            raise GrapeInputError(
                f"unknown dataset {name!r}: register it with "
                "DATASETS.REGISTER \"[['name', 'coco.json', 'images/']]\""
            )
        json_file = getattr(MetadataCatalog.get(name), "json_file", None)
        if json_file and not os.path.isfile(json_file):
            hint = " (run `make synth` first)" if name.startswith("grapes_synth_") else ""
            raise GrapeInputError(f"dataset {name!r}: annotation file {json_file} not found{hint}")
