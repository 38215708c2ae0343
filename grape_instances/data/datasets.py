"""Register grape datasets in Detectron2's DatasetCatalog / MetadataCatalog.

Everything is a COCO instances JSON plus an image folder; the synthetic splits have fixed
names, and ``DATASETS.REGISTER`` lets a user add their own from the command line or YAML.
Each dataset's ``thing_classes`` are its JSON's category names in category-id order (what
Detectron2's loader derives and asserts), so data whose category is not "bunch" loads too.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from ..core import paths as synthetic_layout
from ..core.errors import GrapeInputError
from ..core.fileio import read_json
from ..core.images import normalize_annotation_name

logger = logging.getLogger(__name__)

# Default class names for predicting without a registered dataset
# (grape_instances.inference.predictor); registered datasets take theirs from their JSON.
THING_CLASSES = ["bunch"]


def synthetic_dataset_name(split: str) -> str:
    return f"grapes_synth_{split}"


def read_thing_classes(json_file: str | os.PathLike) -> list[str]:
    """Category names of a COCO JSON in category-id order, as Detectron2's loader orders them.

    Cached per file version: configs are built and datasets registered several times per
    process, and the JSON may be big.
    """
    return [name for _, name in _read_categories(json_file)]


def read_category_ids(json_file: str | os.PathLike) -> dict[int, int]:
    """``{COCO category id: contiguous id}`` of a COCO JSON, as Detectron2's loader makes
    ``thing_dataset_id_to_contiguous_id`` (ids in sorted order): how a prediction's class
    index maps back to the JSON's ``category_id`` (ids 3 and 7 are not 1 and 2)."""
    return {cid: i for i, (cid, _) in enumerate(_read_categories(json_file))}


def _read_categories(json_file: str | os.PathLike) -> tuple[tuple, ...]:
    st = os.stat(json_file)
    return _read_category_table(os.path.abspath(json_file), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _read_category_table(json_file: str, _mtime_ns: int, _size: int) -> tuple[tuple, ...]:
    """``(id, name)`` of every category in id order."""
    data = read_json(json_file)  # masks stay undecoded strings / lists here
    categories = data.get("categories") if isinstance(data, dict) else None
    if not isinstance(categories, list) or not categories:
        raise GrapeInputError(f"{json_file}: no \"categories\" list in this COCO file")
    if not all(isinstance(c, dict) and "id" in c and "name" in c for c in categories):
        raise GrapeInputError(f"{json_file}: every category needs an \"id\" and a \"name\"")
    ids = [c["id"] for c in categories]
    if len(set(ids)) != len(ids):
        raise GrapeInputError(f"{json_file}: category ids {ids} are not unique")
    try:
        ordered = sorted(categories, key=lambda c: c["id"])
    except TypeError:  # ids of mixed types (1 and "2"): no order Detectron2 could use either
        raise GrapeInputError(f"{json_file}: category ids {ids} are not all integers") from None
    return tuple((c["id"], str(c["name"])) for c in ordered)


def register_coco_dataset(name: str, json_file: str, image_root: str) -> None:
    """Register one COCO instances JSON under ``name``, its categories as ``thing_classes``.

    Detectron2's catalogs are process-global: the same files (and categories) again are a
    no-op, anything else replaces the earlier registration (the latest config wins). A JSON
    that does not exist yet is registered without classes: check_datasets_exist names it.
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    thing_classes = read_thing_classes(json_file) if os.path.isfile(json_file) else None
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if (meta.get("json_file"), meta.get("image_root"), meta.get("thing_classes")) == (
            json_file, image_root, thing_classes
        ):
            return
        logger.info("dataset %s now reads %s (was %s)", name, json_file, meta.get("json_file"))
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    extra = {"thing_classes": thing_classes} if thing_classes is not None else {}
    if thing_classes is not None:  # what load_coco_json sets too, known before it runs
        extra["thing_dataset_id_to_contiguous_id"] = read_category_ids(json_file)
    # Detectron2's register_coco_instances, with the images' depth files kept.
    DatasetCatalog.register(name, lambda: load_coco_records(json_file, image_root, name))
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type="coco", **extra
    )


def load_coco_records(json_file: str, image_root: str, name: str | None = None) -> list[dict]:
    """Detectron2's ``load_coco_json`` records, plus ``depth_file_name`` (joined to the image
    root, like ``file_name``) for images whose COCO entry names a ``depth_file``: Detectron2
    keeps only the image keys it knows, and RGB-D input (INPUT.DEPTH) needs this one.

    The JSON is parsed a second time only when it mentions ``depth_file`` at all.
    """
    records = load_coco_json(json_file, image_root, name)
    prefix = os.path.join(image_root, "")
    for record in records:  # names written on Windows: "sub\\a.jpg", as validate reads them
        rel = record["file_name"][len(prefix):]
        if "\\" in rel and record["file_name"].startswith(prefix):
            record["file_name"] = prefix + normalize_annotation_name(rel)
    with open(json_file, "rb") as f:
        if b'"depth_file"' not in f.read():
            return records
    depth_files = {
        image["id"]: image["depth_file"]
        for image in read_json(json_file).get("images", [])
        if isinstance(image, dict) and image.get("depth_file")
    }
    for record in records:
        depth_file = depth_files.get(record["image_id"])
        if depth_file:
            record["depth_file_name"] = os.path.join(image_root, depth_file)
    return records


def register_synthetic(root: str) -> list[str]:
    """Register the synthetic splits written by ``tools/make_synthetic.py`` under ``root``."""
    names = []
    for split in synthetic_layout.SPLITS:
        name = synthetic_dataset_name(split)
        register_coco_dataset(
            name, synthetic_layout.coco_json(root, split), synthetic_layout.images_dir(root, split)
        )
        names.append(name)
    return names


def config_json_file(cfg, name: str) -> str | None:
    """The COCO JSON ``register_from_config`` would register ``name`` with (None if it
    would not register it): the last ``DATASETS.REGISTER`` entry of that name wins."""
    for entry in reversed(list(cfg.DATASETS.REGISTER)):
        if isinstance(entry, Sequence) and len(entry) == 3 and str(entry[0]) == name:
            return str(entry[1])
    for split in synthetic_layout.SPLITS:
        if name == synthetic_dataset_name(split):
            return str(synthetic_layout.coco_json(cfg.DATASETS.SYNTHETIC_ROOT, split))
    return None


def dataset_thing_classes(cfg, name: str) -> list[str] | None:
    """Categories of dataset ``name`` as ``cfg`` defines it, without registering anything
    (configs are built before registration); None when not known (yet): an unregistered
    name or a missing JSON, which check_datasets_exist reports."""
    json_file = config_json_file(cfg, name)
    if json_file is not None:
        return read_thing_classes(json_file) if os.path.isfile(json_file) else None
    if name in DatasetCatalog.list():
        classes = MetadataCatalog.get(name).get("thing_classes")
        return list(classes) if classes is not None else None
    return None


def check_same_categories(
    names: Iterable[str], classes_of: Callable[[str], Sequence[str] | None]
) -> list[str] | None:
    """The category list shared by the datasets ``names`` (``classes_of(name)`` gives each,
    or None if unknown); one-line error naming two datasets whose lists differ."""
    first_name, first = None, None
    for name in names:
        classes = classes_of(name)
        if classes is None:
            continue
        if first is None:
            first_name, first = name, list(classes)
        elif list(classes) != first:
            raise GrapeInputError(
                f"datasets {first_name!r} and {name!r} have different categories: "
                f"{first} vs {list(classes)} (datasets trained or evaluated together need one list)"
            )
    return first


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
            hint = ""
            if name.startswith("grapes_synth_"):  # which target renders this root
                root = os.path.dirname(os.path.dirname(json_file))
                make = "make demo" if root.endswith("_demo") else f"make synth SYNTH_DIR={root}"
                hint = f" (run `{make}` first)"
            raise GrapeInputError(f"dataset {name!r}: annotation file {json_file} not found{hint}")
