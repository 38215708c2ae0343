"""Where the masks come from: a COCO instances file, a COCO results list, or a model.

A **COCO instances** file (ground truth, or any converter's output) names its images by
``file_name`` relative to ``--images``; an image entry may carry ``depth_file`` (relative to
the same folder), as the GrapesNet importer and the synthetic Dataset-4 twin write. Crowd
regions (``iscrowd`` 1) are not single bunches and are left out, counted.

A **COCO results** list (``[{image_id, category_id, score, segmentation: RLE}, ...]``) has no
file names of its own, so its images are found, in this order of preference:

1. with ``coco_images`` (the instances JSON the predictions were made on, e.g. Detectron2's
   ``coco_instances_results.json`` of a registered test set): by ``image_id``;
2. from each detection's ``file_name``, which ``tools/visualize.py`` adds: the image under
   ``--images`` with that relative path, else the one with that file name;
3. otherwise ``image_id`` must equal the file stem of one image under ``--images``.

The images measured are the ones the predictions were made on: with ``coco_images`` its
images; otherwise the images the detections name plus those ``tools/visualize.py`` lists
beside its results (``coco_results_images.json``: every image it predicted, so a photo
without a bunch counts as zero bunches). Any other image under ``--images`` was not
predicted and is left out, named in a counted warning: counting it as zero bunches would
make the per-folder counts wrong. Detections below the score threshold are dropped.
Categories are named by ``coco_images``, else by the model's class names visualize lists,
else ``bunch`` (id 1) and ``class <id>``.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..convert.coco import DEFAULT_CATEGORY
from ..convert.predictions import NOT_PREDICTED, load_results, read_predicted_images
from ..core.errors import GrapeInputError
from ..core.fileio import read_json
from ..core.images import list_image_files, normalize_annotation_name, resolve_image_path
from ..core.masks import segmentation_to_mask
from ..core.warning_counter import WarningCounter

logger = logging.getLogger(__name__)

CROWD = "crowd regions (iscrowd 1, not single bunches; left out)"


@dataclass
class MaskSpec:
    """One bunch as stored in the file: decoded only when its image is measured."""

    segmentation: Any
    score: float | None
    category: str = DEFAULT_CATEGORY

    def decode(self, height: int, width: int, source: str | os.PathLike) -> np.ndarray:
        size = self.segmentation.get("size") if isinstance(self.segmentation, dict) else None
        if size is not None and list(size) != [height, width]:
            raise GrapeInputError(f"{source}: a mask of size {size[1]}x{size[0]} belongs to an "
                                  f"image of {width}x{height}")
        try:
            return segmentation_to_mask(self.segmentation, height, width).astype(bool)
        except (TypeError, ValueError, KeyError, IndexError) as e:
            raise GrapeInputError(f"{source}: malformed segmentation ({type(e).__name__})"
                                  ) from None


@dataclass
class ImageJob:
    """One image to measure. ``masks`` is None when a model predicts them."""

    path: Path
    name: str  # relative to the images root, '/' separators: the table's ``image`` column
    depth_path: Path | None = None
    masks: list[MaskSpec] | None = field(default=None)

    @property
    def folder(self) -> str:
        """The image's folder relative to the root ('.' at the top): one vine or row."""
        return str(PurePosixPath(self.name).parent)


def _coco_images(data: Any, path: str | os.PathLike, images_dir: Path
                 ) -> dict[Any, ImageJob]:
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise GrapeInputError(f"{path}: not a COCO instances JSON (no 'images' list)")
    jobs: dict[Any, ImageJob] = {}
    for entry in data["images"]:
        if not isinstance(entry, dict) or "id" not in entry or "file_name" not in entry:
            raise GrapeInputError(f"{path}: an image entry lacks 'id' or 'file_name'")
        name = normalize_annotation_name(str(entry["file_name"]))
        image_path = resolve_image_path(name, images_dir, source=path)
        depth = entry.get("depth_file")
        depth_path = (resolve_image_path(str(depth), images_dir, source=path)
                      if depth else None)
        jobs[entry["id"]] = ImageJob(image_path, PurePosixPath(os.path.normpath(name)).as_posix(),
                                     depth_path, [])
    return jobs


def _instances(data: dict, path: str | os.PathLike, images_dir: Path,
               warnings: WarningCounter) -> list[ImageJob]:
    jobs = _coco_images(data, path, images_dir)
    if not isinstance(data.get("annotations"), list):
        raise GrapeInputError(f"{path}: not a COCO instances JSON (no 'annotations' list)")
    cats = {c.get("id"): str(c.get("name", c.get("id"))) for c in data.get("categories") or []
            if isinstance(c, dict)}
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or "image_id" not in ann or "segmentation" not in ann:
            raise GrapeInputError(f"{path}: an annotation lacks 'image_id' or 'segmentation'")
        if ann["image_id"] not in jobs:
            raise GrapeInputError(f"{path}: annotation {ann.get('id')!r} names unknown image id "
                                  f"{ann['image_id']!r}")
        if ann.get("iscrowd"):
            warnings.add(CROWD, jobs[ann["image_id"]].name)
            continue
        category = cats.get(ann.get("category_id"), DEFAULT_CATEGORY)
        jobs[ann["image_id"]].masks.append(MaskSpec(ann["segmentation"], None, category))
    return list(jobs.values())


class _FolderIndex:
    """The images under ``images_dir``, found by relative path, file name or stem."""

    def __init__(self, images_dir: Path) -> None:
        self.jobs = [ImageJob(p, p.relative_to(images_dir).as_posix(), None, [])
                     for p in list_image_files(images_dir, recursive=True)]
        self.by_name: dict[str, list[ImageJob]] = defaultdict(list)
        self.by_stem: dict[str, list[ImageJob]] = defaultdict(list)
        for job in self.jobs:
            self.by_name[job.path.name].append(job)
            self.by_stem[job.path.stem].append(job)
        self.images_dir = images_dir

    def by_file_name(self, file_name: str, source: str | os.PathLike) -> ImageJob:
        parts = PurePosixPath(normalize_annotation_name(file_name)).parts
        same = self.by_name.get(parts[-1] if parts else "", [])
        # the longest relative path that the detection's path ends with wins
        tails = [j for j in same if tuple(PurePosixPath(j.name).parts)
                 == parts[-len(PurePosixPath(j.name).parts):]]
        found = tails if tails else same
        if len(found) == 1:
            return found[0]
        if not found:
            raise GrapeInputError(f"{source}: prediction for {file_name!r}, which is not under "
                                  f"{self.images_dir}")
        names = ", ".join(j.name for j in found[:3])
        raise GrapeInputError(f"{source}: prediction for {file_name!r} matches several images "
                              f"under {self.images_dir} ({names}); pass --coco-images")

    def by_image_id(self, image_id: Any, source: str | os.PathLike) -> ImageJob:
        found = self.by_stem.get(str(image_id), [])
        if len(found) == 1:
            return found[0]
        if not found:
            raise GrapeInputError(f"{source}: prediction for image id {image_id!r}: no image with "
                                  f"that file stem under {self.images_dir} (pass --coco-images "
                                  "with the JSON the predictions were made on)")
        raise GrapeInputError(f"{source}: image id {image_id!r} matches several images under "
                              f"{self.images_dir}; pass --coco-images")


def _results(results: list[dict], path: str | os.PathLike, images_dir: Path,
             coco_images: str | os.PathLike | None, threshold: float,
             warnings: WarningCounter) -> list[ImageJob]:
    names: dict[Any, str] = {}
    if coco_images is not None:
        coco = read_json(coco_images)
        table = _coco_images(coco, coco_images, images_dir)
        jobs = list(table.values())
        names = {c.get("id"): str(c.get("name", c.get("id")))
                 for c in coco.get("categories") or [] if isinstance(c, dict)}

        def find(det: dict) -> ImageJob:
            if det["image_id"] not in table:
                raise GrapeInputError(f"{path}: prediction for image id {det['image_id']!r}, "
                                      f"which {coco_images} does not list")
            return table[det["image_id"]]
    else:
        index = _FolderIndex(images_dir)
        listed = read_predicted_images(path)
        chosen: dict[int, ImageJob] = {}
        if listed is not None:
            for file_name in listed[0]:
                job = index.by_file_name(file_name, path)
                chosen[id(job)] = job
            names = listed[1]

        def find(det: dict) -> ImageJob:
            if isinstance(det.get("file_name"), str):
                job = index.by_file_name(det["file_name"], path)
            else:
                job = index.by_image_id(det["image_id"], path)
            chosen[id(job)] = job
            return job
    for det in results:
        job = find(det)
        if det["score"] >= threshold:
            cat = det.get("category_id", 1)
            category = names.get(cat) or (DEFAULT_CATEGORY if cat == 1 and not names
                                          else f"class {cat}")
            job.masks.append(MaskSpec(det["segmentation"], float(det["score"]), category))
    if coco_images is None:
        jobs = [j for j in index.jobs if id(j) in chosen]
        for job in index.jobs:
            if id(job) not in chosen:
                warnings.add(NOT_PREDICTED, job.name)
    for job in jobs:  # bunch ids follow the score, as on the model's overlays
        job.masks.sort(key=lambda m: -m.score)
    return jobs


def load_mask_file(path: str | os.PathLike, images_dir: str | os.PathLike,
                   coco_images: str | os.PathLike | None = None, threshold: float = 0.5,
                   warnings: WarningCounter | None = None) -> tuple[str, list[ImageJob]]:
    """``("instances" | "results", jobs)`` for a COCO instances file or a results list."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise GrapeInputError(f"{images_dir}: images folder not found")
    warnings = warnings if warnings is not None else WarningCounter()
    data = read_json(path)
    if isinstance(data, list):
        return "results", _results(load_results(path), path, images_dir, coco_images,
                                   threshold, warnings)
    if coco_images is not None:
        raise GrapeInputError(f"{path}: --coco-images is only for a results list, and this is "
                              "a COCO instances file")
    return "instances", _instances(data, path, images_dir, warnings)


def jobs_from_files(files: Sequence[Path]) -> list[ImageJob]:
    """Image files given to a model: names relative to their common folder, so that images
    in sub-folders (one per vine or row) are totalled per folder."""
    if not files:
        raise GrapeInputError("no input image")
    root = Path(os.path.commonpath([os.path.abspath(f.parent) for f in files]))
    return [ImageJob(f, Path(os.path.abspath(f)).relative_to(root).as_posix()) for f in files]
