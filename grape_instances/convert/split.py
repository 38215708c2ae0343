"""Split one COCO JSON into train / val / test by image, and merge several into one.

Splitting is by image (never by annotation), deterministic for a given seed, and can keep
together images that share a key (``group_by``: e.g. the GrapesNet sub-dataset or a plant
id), so near-duplicate views of one plant do not leak from train into val. Merging
renumbers image and annotation ids, unifies category names through a label map, and can
rebase file names onto one image root.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.errors import GrapeInputError
from ..core.fileio import (
    atomic_outputs,
    read_json,
    refuse_existing,
    write_json_atomic,
)
from .coco import supercategory_of
from .validate import check_records

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")


def _is_id(value: Any) -> bool:
    """An id pycocotools and Detectron2 can index by: an integer (not a bool) or a text."""
    return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)


def load_coco(path: str | os.PathLike) -> dict:
    """Read a COCO instances JSON, checking what split and merge rely on and pycocotools
    indexes by (the three lists, records that are objects, integer or text ids): one line
    naming the first bad record, instead of a traceback or an output ``COCO()`` refuses."""
    data = read_json(path)
    if not isinstance(data, dict) or not all(
            isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise GrapeInputError(
            f"{path}: not a COCO instances JSON (needs lists 'images', 'annotations', "
            "'categories')"
        )
    checks = (("images", "image", ("id",)), ("categories", "category", ("id",)),
              ("annotations", "annotation", ("id", "image_id", "category_id")))
    for key, what, fields in checks:
        for i, rec in enumerate(data[key]):
            if not isinstance(rec, dict):
                raise GrapeInputError(f"{path}: {what} #{i} is not an object")
            for name in fields:
                if name not in rec:
                    raise GrapeInputError(f"{path}: {what} #{i} has no {name!r}")
                if not _is_id(rec[name]):
                    raise GrapeInputError(f"{path}: {what} #{i} has {name} "
                                          f"{repr(rec[name])[:40]} (must be an integer)")
    report = check_records(data)  # masks and boxes: what validate and training refuse
    if report.errors:
        lines = report.errors.lines()
        more = f" (and {len(lines) - 1} more kinds of error)" if len(lines) > 1 else ""
        raise GrapeInputError(f"{path}: {lines[0]}{more}; `python tools/convert.py validate "
                              f"--json {path} --images DIR` lists every problem")
    return data


def assign_splits(
    images: list[dict],
    val: float,
    test: float = 0.0,
    seed: int = 0,
    group_by: str | None = None,
) -> dict[str, list[dict]]:
    """Image records per split name; groups sharing ``image[group_by]`` stay together.

    Groups are shuffled with ``random.Random(seed)`` after sorting by key, so the result
    depends only on the records and the seed. Test is filled first, then val, each up to
    ``round(fraction * n_images)`` images; whole groups may overshoot by one group.
    """
    if not (0.0 <= val < 1.0 and 0.0 <= test < 1.0 and val + test < 1.0):
        raise GrapeInputError(f"--val {val} and --test {test}: fractions must be >= 0 and sum "
                              "to less than 1")
    groups: dict[str, list[dict]] = {}
    for img in images:
        if group_by is not None and group_by in img:
            key = f"g:{img[group_by]}"
        else:
            key = f"i:{img['id']}:{img.get('file_name', '')}"
        groups.setdefault(key, []).append(img)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    n = len(images)
    targets = {"test": round(test * n), "val": round(val * n)}
    out: dict[str, list[dict]] = {name: [] for name in SPLIT_NAMES}
    for key in keys:
        for name in ("test", "val"):
            if len(out[name]) < targets[name]:
                out[name].extend(groups[key])
                break
        else:
            out["train"].extend(groups[key])
    order = {id(img): i for i, img in enumerate(images)}
    for name in out:
        out[name].sort(key=lambda img: order[id(img)])
    return out


def assign_stratified_splits(
    images: list[dict], val: float, test: float, seed: int, stratify_by: str
) -> dict[str, list[dict]]:
    """Each value of ``image[stratify_by]`` (e.g. the grape variety) is split on its own, so a
    small validation set still sees every stratum: one of two or more images gets at least
    one image in val (and test) while one stays in train.

    Within a stratum images are ranked by a hash of the seed and their file name, not
    shuffled: adding or removing one image (say, a corrupt one a converter left out) moves
    no other image to another split.
    """
    strata: dict[str, list[dict]] = {}
    for img in images:
        strata.setdefault(str(img.get(stratify_by, "")), []).append(img)
    out: dict[str, list[dict]] = {name: [] for name in SPLIT_NAMES}
    for members in strata.values():
        n = len(members)
        counts = [max(round(f * n), 1) if f > 0 else 0 for f in (test, val)]
        if sum(counts) >= n:
            counts = [round(test * n), round(val * n)]
        ranked = sorted(members, key=lambda img: _stable_rank(img, seed))
        out["test"] += ranked[: counts[0]]
        out["val"] += ranked[counts[0] : counts[0] + counts[1]]
        out["train"] += ranked[counts[0] + counts[1] :]
    order = {id(img): i for i, img in enumerate(images)}
    for name in out:
        out[name].sort(key=lambda img: order[id(img)])
    return out


def _stable_rank(img: dict, seed: int) -> str:
    name = img.get("file_name") or f"id:{img['id']}"
    return hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()


def subset(data: dict, images: list[dict], split: str) -> dict:
    """A COCO dict holding only ``images`` and their annotations (ids unchanged)."""
    ids = {img["id"] for img in images}
    info = dict(data.get("info") or {}) if isinstance(data.get("info"), dict) else {}
    info["split"] = split
    return {
        "info": info,
        "licenses": data.get("licenses", []),
        "images": images,
        "annotations": [a for a in data["annotations"] if a["image_id"] in ids],
        "categories": data["categories"],
    }


def split_coco_file(
    json_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    val: float = 0.2,
    test: float = 0.0,
    seed: int = 0,
    group_by: str | None = None,
    stratify_by: str | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write ``<stem>_train.json``, ``<stem>_val.json`` (and ``_test``) into ``out_dir``.

    The files are written all or none (:func:`~grape_instances.core.fileio.atomic_outputs`):
    an existing file, a full disk or a concurrent split of the same file never leaves a
    mixed or partial split. Returns the written paths per split.
    """
    data = load_coco(json_path)
    names = [s for s in SPLIT_NAMES if s != "test" or test > 0]
    stem = Path(json_path).stem
    paths = {s: Path(out_dir) / f"{stem}_{s}.json" for s in names}
    for p in paths.values():
        refuse_existing(p, overwrite, [json_path])  # before any work; again under the lock
    if group_by is not None and not any(group_by in img for img in data["images"]):
        raise GrapeInputError(f"{json_path}: no image record has the key {group_by!r} "
                              "given by --group-by")
    if stratify_by is not None and not any(stratify_by in img for img in data["images"]):
        raise GrapeInputError(f"{json_path}: no image record has the key {stratify_by!r} "
                              "given by --stratify-by")
    if stratify_by is None:
        splits = assign_splits(data["images"], val, test, seed, group_by)
    elif group_by is not None:
        raise GrapeInputError("--group-by and --stratify-by cannot be combined")
    else:
        splits = assign_stratified_splits(data["images"], val, test, seed, stratify_by)
    stale = Path(out_dir) / f"{stem}_test.json"
    if "test" not in paths and stale.exists():
        logger.warning("%s is from an earlier split (this one has no test set): remove it, "
                       "its images may also be in the new train / val", stale)
    with atomic_outputs(list(paths.values()), overwrite=overwrite) as outputs:
        for s in names:
            part = subset(data, splits[s], s)
            part["info"]["split_seed"] = seed
            outputs.write_json(paths[s], part)
            logger.info("%s: %d images, %d annotations -> %s", s, len(part["images"]),
                        len(part["annotations"]), paths[s])
            if not part["images"]:
                logger.warning("%s split of %s is empty", s, json_path)
    return paths


def read_label_map(path: str | os.PathLike) -> dict[str, str]:
    """``old: new`` lines (blank lines and ``#`` comments ignored), or a JSON object."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        data = read_json(path)
        if not isinstance(data, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise GrapeInputError(f"{path}: label map JSON must map names to names")
        return data
    if not path.is_file():
        raise GrapeInputError(f"{path}: label map not found")
    mapping: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if ":" not in line:
            raise GrapeInputError(f"{path}: line {n} is not 'old name: new name'")
        old, new = (part.strip() for part in line.rsplit(":", 1))
        if not old or not new:
            raise GrapeInputError(f"{path}: line {n} has an empty name")
        mapping[old] = new
    return mapping


def merge_coco(
    datasets: Sequence[tuple[str, dict]],
    label_map: dict[str, str] | None = None,
    rebase: Sequence[tuple[Path, Path]] | None = None,
) -> dict:
    """Merge ``(source name, COCO dict)`` pairs into one dict with fresh, consecutive ids.

    ``rebase[i] = (image_dir_i, image_root)`` rewrites input ``i``'s file names relative to
    the common ``image_root``. The same file name in two inputs is an error.
    """
    label_map = label_map or {}
    cat_ids: dict[str, int] = {}
    supercategories: dict[str, Any] = {}  # the inputs' own, first one wins
    images: list[dict] = []
    annotations: list[dict] = []
    owner: dict[str, str] = {}
    for index, (source, data) in enumerate(datasets):
        cat_name = {}
        for cat in data["categories"]:
            name = cat.get("name")
            if not isinstance(name, str):
                raise GrapeInputError(f"{source}: category {cat.get('id')!r} has no name")
            name = label_map.get(name, name)
            cat_name[cat.get("id")] = name
            cat_ids.setdefault(name, len(cat_ids) + 1)
            supercategories.setdefault(name, cat.get("supercategory", supercategory_of(name)))
        image_id: dict[Any, int] = {}
        for img in data["images"]:
            new = copy.deepcopy(img)
            new["id"] = len(images) + 1
            if rebase is not None:
                image_dir, image_root = rebase[index]
                new["file_name"] = Path(os.path.relpath(
                    Path(os.path.abspath(image_dir)) / str(img.get("file_name")),
                    os.path.abspath(image_root))).as_posix()
            fname = str(new.get("file_name"))
            if fname in owner:
                raise GrapeInputError(f"{source}: image {fname!r} is also in {owner[fname]}")
            owner[fname] = source
            if img["id"] in image_id:
                raise GrapeInputError(f"{source}: duplicate image id {img['id']!r}")
            image_id[img["id"]] = new["id"]
            images.append(new)
        for ann in data["annotations"]:
            if ann["image_id"] not in image_id:
                raise GrapeInputError(f"{source}: annotation {ann.get('id')!r} refers to "
                                      f"unknown image {ann['image_id']!r}")
            if ann.get("category_id") not in cat_name:
                raise GrapeInputError(f"{source}: annotation {ann.get('id')!r} refers to "
                                      f"unknown category {ann.get('category_id')!r}")
            new = copy.deepcopy(ann)
            new["id"] = len(annotations) + 1
            new["image_id"] = image_id[ann["image_id"]]
            new["category_id"] = cat_ids[cat_name[ann["category_id"]]]
            annotations.append(new)
    return {
        "info": {"description": "grape_instances merge", "sources": [s for s, _ in datasets]},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n, "supercategory": supercategories[n]}
                       for n, i in cat_ids.items()],
    }


def merge_coco_files(
    inputs: Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    *,
    label_map_file: str | os.PathLike | None = None,
    image_dirs: Sequence[str | os.PathLike] | None = None,
    image_root: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> dict:
    """Merge COCO JSON files into ``out_path`` (atomic); returns the merged dict."""
    refuse_existing(out_path, overwrite, [*inputs, label_map_file])
    if (image_dirs is None) != (image_root is None):
        raise GrapeInputError("--image-dirs and --image-root go together")
    rebase = None
    if image_dirs is not None:
        if len(image_dirs) != len(inputs):
            raise GrapeInputError(f"--image-dirs: {len(image_dirs)} folders for "
                                  f"{len(inputs)} input files")
        rebase = [(Path(d), Path(image_root)) for d in image_dirs]
    label_map = read_label_map(label_map_file) if label_map_file else None
    datasets = [(str(p), load_coco(p)) for p in inputs]
    merged = merge_coco(datasets, label_map, rebase)
    if image_root is not None:
        merged["info"]["image_root"] = str(image_root)
    write_json_atomic(out_path, merged, overwrite=overwrite)
    logger.info("merged %d files: %d images, %d annotations, categories %s -> %s",
                len(inputs), len(merged["images"]), len(merged["annotations"]),
                [c["name"] for c in merged["categories"]], out_path)
    return merged
