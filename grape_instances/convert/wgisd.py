"""WGISD importer: the Embrapa Wine Grape Instance Segmentation Dataset as COCO JSON.

Expected layout (the one of the public repository, github.com/thsant/wgisd)::

    ROOT/
      data/CDY_2015.jpg      image
      data/CDY_2015.txt      boxes, YOLO format: ``class cx cy w h`` (normalised), one a line
      data/CDY_2015.npz      masks (only for the masked subset): ``arr_0``, H x W x N, one
                             channel per box, in the order of the ``.txt`` lines
      train.txt test.txt                    image ids (file stems) with boxes
      train_masked.txt test_masked.txt      image ids that also have masks

Each split ``S`` with a ``S_masked.txt`` or ``S.txt`` list becomes ``wgisd_S.json`` in the
output folder; masked images become RLE instances (category ``bunch``). Images listed in
``S.txt`` without masks are counted and left out, or, with ``boxes_json``, written to
``wgisd_S_boxes.json`` (annotations with ``bbox`` and no ``segmentation``, for detection).
Without any split list, every ``data/*.jpg`` forms one split ``all``. :func:`read_wgisd`
returns each split's masked images as records in memory (one mask per instance);
:func:`convert_wgisd` writes them with the one :class:`~.coco.CocoBuilder`. Every listed image is
decoded cheaply: an undecodable or truncated one (WGISD as published has ``SVB_1937.jpg``)
is left out with its annotations as a counted warning, or refused with ``strict_images``.

File names in the JSON are relative to ROOT (``data/CDY_2015.jpg``): register the JSON with
ROOT as the image root. The variety code that starts each file name (CDY Chardonnay, CFR
Cabernet Franc, CSV Cabernet Sauvignon, SVB Sauvignon Blanc, SYH Syrah) is kept as the
image extra ``variety``; the category stays ``bunch``, since the task is per-bunch masks.
"""

from __future__ import annotations

import logging
import math
import os
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..core.errors import GrapeInputError
from ..core.fileio import atomic_outputs, refuse_existing
from ..core.images import (
    DEFAULT_MAX_PIXELS,
    UndecodableImageError,
    leave_out_undecodable,
    read_image_size,
    resolve_image_path,
)
from ..core.warning_counter import WarningCounter
from .coco import DEFAULT_CATEGORY, CocoBuilder, ImageRecord, Instance, Records, add_record

logger = logging.getLogger(__name__)

#: WGISD's variety codes (file-name prefixes) and the grape variety each stands for.
VARIETIES = {
    "CDY": "Chardonnay",
    "CFR": "Cabernet Franc",
    "CSV": "Cabernet Sauvignon",
    "SVB": "Sauvignon Blanc",
    "SYH": "Syrah",
}
DATA_DIR = "data"
IMAGE_SUFFIX = ".jpg"
SOURCE = "wgisd"
EMPTY_MASK = "empty mask skipped"


@dataclass
class WgisdSummary:
    """What an import wrote and left out, per split (for the tool's final table and tests)."""

    outputs: list[Path] = field(default_factory=list)
    images: dict[str, int] = field(default_factory=dict)
    instances: dict[str, int] = field(default_factory=dict)
    box_only: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)


def variety_of(stem: str) -> str | None:
    """The variety code a WGISD file name starts with (``CDY_2015`` -> ``CDY``), or None."""
    code = stem.split("_", 1)[0].upper()
    return code if code in VARIETIES else None


def read_id_list(path: Path) -> list[str]:
    """Image ids (stems) of a split list, one a line; blank lines ignored, duplicates refused."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise GrapeInputError(f"{path}: split list is not a UTF-8 text file") from None
    ids: list[str] = []
    seen: set[str] = set()
    for lineno, line in enumerate(lines, 1):
        name = line.strip()
        if not name:
            continue
        if name.lower().endswith(IMAGE_SUFFIX):
            name = name[: -len(IMAGE_SUFFIX)]
        if name in seen:
            raise GrapeInputError(f"{path}: line {lineno}: image id {name!r} listed twice")
        seen.add(name)
        ids.append(name)
    return ids


def read_yolo_boxes(path: Path, width: int, height: int) -> list[list[float]]:
    """YOLO ``class cx cy w h`` lines (normalised) -> COCO ``[x, y, w, h]`` boxes in pixels."""
    if not path.is_file():
        raise GrapeInputError(f"{path}: box file not found")
    boxes = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            values = [float(v) for v in parts]
        except ValueError:
            values = []
        if len(values) != 5 or not all(math.isfinite(v) for v in values):
            raise GrapeInputError(
                f"{path}: line {lineno}: expected 'class cx cy w h' (5 numbers), got {line!r}"
            )
        _, cx, cy, bw, bh = values
        x0 = max(0.0, (cx - bw / 2) * width)
        y0 = max(0.0, (cy - bh / 2) * height)
        x1 = min(float(width), (cx + bw / 2) * width)
        y1 = min(float(height), (cy + bh / 2) * height)
        boxes.append([x0, y0, max(0.0, x1 - x0), max(0.0, y1 - y0)])
    return boxes


def read_mask_stack(path: Path, height: int, width: int) -> np.ndarray:
    """The ``arr_0`` masks of a WGISD ``.npz`` as a bool H x W x N array, checked."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "arr_0" not in npz.files:
                raise GrapeInputError(f"{path}: no 'arr_0' array (found {npz.files})")
            masks = npz["arr_0"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise GrapeInputError(f"{path}: not a readable .npz file ({type(e).__name__})") from None
    if masks.ndim == 2:
        masks = masks[:, :, None]
    if masks.ndim != 3:
        raise GrapeInputError(f"{path}: expected H x W x N masks, got shape {masks.shape}")
    if masks.shape[:2] != (height, width):
        raise GrapeInputError(
            f"{path}: masks are {masks.shape[1]} x {masks.shape[0]} but the image is "
            f"{width} x {height}"
        )
    return masks.astype(bool, copy=False)


#: Box-only split lists looked for besides every ``*_masked.txt`` (WGISD ships these two).
BOX_SPLITS = ("train", "test")


def _split_lists(root: Path) -> dict[str, tuple[list[str], list[str]]]:
    """split -> (masked ids, box-only ids), from the split lists found under ``root``.

    Splits are the stems of ``*_masked.txt`` plus ``train``/``test`` when their box lists
    exist; other ``.txt`` files (notes, licences) are not mistaken for splits.
    """
    splits: dict[str, tuple[list[str], list[str]]] = {}
    names = sorted(
        {p.name[: -len("_masked.txt")] for p in root.glob("*_masked.txt")}
        | {s for s in BOX_SPLITS if (root / f"{s}.txt").is_file()}
    )
    for split in names:
        masked_file, boxed_file = root / f"{split}_masked.txt", root / f"{split}.txt"
        masked = read_id_list(masked_file) if masked_file.is_file() else []
        boxed = read_id_list(boxed_file) if boxed_file.is_file() else []
        masked_set = set(masked)
        splits[split] = (masked, [i for i in boxed if i not in masked_set])
    return splits


def find_splits(root: str | os.PathLike) -> dict[str, tuple[list[str], list[str]]]:
    """Split lists of a WGISD root, or one split ``all`` (every image with an ``.npz`` is
    masked) when the root has none."""
    root = Path(root)
    if not root.is_dir():
        raise GrapeInputError(f"{root}: WGISD root folder not found")
    data = root / DATA_DIR
    if not data.is_dir():
        raise GrapeInputError(f"{root}: no '{DATA_DIR}/' folder (is this a WGISD root?)")
    splits = _split_lists(root)
    if splits:
        return splits
    stems = sorted(p.stem for p in data.glob(f"*{IMAGE_SUFFIX}"))
    if not stems:
        raise GrapeInputError(f"{data}: no {IMAGE_SUFFIX} images and no split lists")
    masked = [s for s in stems if (data / f"{s}.npz").is_file()]
    masked_set = set(masked)
    return {"all": (masked, [s for s in stems if s not in masked_set])}


class _Image:
    """Paths and size of one WGISD image, checked to stay inside ``data/`` and to decode."""

    def __init__(self, root: Path, image_id: str, split_file: Path, max_pixels: int | None):
        data = root / DATA_DIR
        self.path = resolve_image_path(image_id + IMAGE_SUFFIX, data, source=split_file)
        self.stem = self.path.stem
        # lexical, as resolve_image_path: a symlinked root (../shared -> elsewhere) works
        self.file_name = self.path.relative_to(Path(os.path.abspath(root))).as_posix()
        size = read_image_size(self.path, max_pixels=max_pixels, source=split_file,
                               decode=True)
        self.width, self.height = size.width, size.height
        self.boxes_path = self.path.with_suffix(".txt")
        self.masks_path = self.path.with_suffix(".npz")

    def extras(self, warnings: WarningCounter) -> dict:
        variety = variety_of(self.stem)
        if variety is None:
            warnings.add("file name without a WGISD variety prefix", self.file_name)
        return {"variety": variety}


def _decodable_images(root: Path, ids: Iterable[str], split_file: Path, max_pixels: int | None,
                      warnings: WarningCounter, strict: bool,
                      undecodable: list[str] | None = None) -> Iterator[_Image]:
    """The images of ``ids`` that decode; the others are counted warnings (or, ``strict``,
    the error) and listed in ``undecodable``, so their masks and boxes are never read."""
    for image_id in ids:
        try:
            yield _Image(root, image_id, split_file, max_pixels)
        except UndecodableImageError as e:
            leave_out_undecodable(e, warnings, strict)
            if undecodable is not None:
                undecodable.append(str(e.path))


def _masked_record(img: _Image, split_file: Path, warnings: WarningCounter) -> ImageRecord:
    """One masked image with one mask instance per ``.npz`` channel, boxes and masks checked
    to agree in number."""
    boxes = read_yolo_boxes(img.boxes_path, img.width, img.height)
    if not img.masks_path.is_file():
        raise GrapeInputError(f"{img.masks_path}: mask file not found (listed as masked)")
    masks = read_mask_stack(img.masks_path, img.height, img.width)
    if masks.shape[2] != len(boxes):
        raise GrapeInputError(
            f"{img.masks_path}: {masks.shape[2]} masks but {len(boxes)} boxes in "
            f"{img.boxes_path.name}"
        )
    instances = [Instance(DEFAULT_CATEGORY, f"{img.masks_path.name} mask {k}",
                          mask=masks[:, :, k]) for k in range(masks.shape[2])]
    return ImageRecord(img.file_name, img.path, img.height, img.width, instances, split_file,
                       extras=img.extras(warnings))


def read_wgisd(
    root: str | os.PathLike,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    strict_images: bool = False,
    warnings: WarningCounter | None = None,
    splits: dict[str, tuple[list[str], list[str]]] | None = None,
) -> dict[str, Records]:
    """Each split's masked images as :class:`Records` (split -> records), so that a caller
    composes WGISD without temporary COCO files.

    The split lists are read now (``splits`` from :func:`find_splits` when given); the
    images lazily, one at a time (an image's H x W x N masks are in memory only while it
    is consumed). File names are relative to ``root``; the image extra ``variety`` is in
    ``extras``. Undecodable images are left out as counted warnings and listed in
    ``undecodable`` (refused with ``strict_images``). Box-only images are not records:
    see ``splits``.
    """
    root = Path(root)
    splits = splits if splits is not None else find_splits(root)
    warnings = warnings if warnings is not None else WarningCounter()
    out: dict[str, Records] = {}
    for split, (masked, _) in splits.items():
        records = Records([DEFAULT_CATEGORY], root, SOURCE, iter(()), warnings)
        records.images = _split_records(root, split, masked, records, max_pixels,
                                        strict_images)
        out[split] = records
    return out


def _split_records(root: Path, split: str, ids: list[str], records: Records,
                   max_pixels: int | None, strict: bool) -> Iterator[ImageRecord]:
    split_file = root / f"{split}_masked.txt"
    for img in _decodable_images(root, tqdm(ids, desc=f"wgisd {split}", unit="img",
                                            leave=False),
                                 split_file, max_pixels, records.warnings, strict,
                                 records.undecodable):
        yield _masked_record(img, split_file, records.warnings)


def _box_only_json(images: list[tuple[_Image, list[list[float]]]], extras: list[dict]) -> dict:
    """A COCO detection JSON (``bbox``, ``area`` = box area, no ``segmentation``)."""
    builder = CocoBuilder([DEFAULT_CATEGORY], source=f"{SOURCE} (boxes only)")
    annotations = []
    for (img, boxes), extra in zip(images, extras, strict=True):
        image_id = builder.add_image(img.file_name, img.height, img.width, **extra)
        for box in boxes:
            if box[2] <= 0 or box[3] <= 0:
                continue
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                 "bbox": [round(v, 2) for v in box], "area": round(box[2] * box[3], 2),
                 "iscrowd": 0}
            )
    out = builder.to_dict()
    out["annotations"] = annotations
    return out


def convert_wgisd(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    boxes_json: bool = False,
    overwrite: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    strict_images: bool = False,
) -> WgisdSummary:
    """Convert a WGISD root into ``out_dir/wgisd_<split>.json`` (+ ``_boxes.json``).

    Undecodable images are left out (counted in ``warnings``) unless ``strict_images``.

    Every output path is checked before any work and all JSON is written at the end, so a
    bad file anywhere leaves no partial output.
    """
    root = Path(root)
    splits = find_splits(root)
    outputs = {s: Path(out_dir) / f"wgisd_{s}.json" for s in splits}
    box_outputs = {s: Path(out_dir) / f"wgisd_{s}_boxes.json" for s in splits} if boxes_json else {}
    for path in [*outputs.values(), *box_outputs.values()]:
        refuse_existing(path, overwrite)  # refuse before any work; folders made at the end
    summary = WgisdSummary()
    warnings = WarningCounter()
    records = read_wgisd(root, max_pixels=max_pixels, strict_images=strict_images,
                         warnings=warnings, splits=splits)
    pending: list[tuple[Path, dict]] = []
    for split, (_, box_only) in splits.items():
        boxed_file = root / f"{split}.txt"
        split_records = records[split]
        builder = CocoBuilder(split_records.categories, source=split_records.source)
        n_instances = sum(add_record(builder, rec, warnings, EMPTY_MASK)
                          for rec in split_records.images)
        if builder.images:
            pending.append((outputs[split], builder.to_dict()))
            summary.outputs.append(outputs[split])
        summary.images[split] = len(builder.images)
        summary.instances[split] = n_instances
        summary.box_only[split] = len(box_only)
        if box_only and boxes_json:
            loaded = list(_decodable_images(root, box_only, boxed_file, max_pixels, warnings,
                                            strict_images))
            with_boxes = [(im, read_yolo_boxes(im.boxes_path, im.width, im.height))
                          for im in loaded]
            extras = [im.extras(warnings) for im in loaded]
            pending.append((box_outputs[split], _box_only_json(with_boxes, extras)))
            summary.outputs.append(box_outputs[split])
        elif box_only:
            logger.warning(
                "%s: %d image(s) have boxes but no masks; left out of the instance JSON "
                "(pass --boxes-json to write them to %s)",
                split, len(box_only), box_outputs.get(split, f"wgisd_{split}_boxes.json"),
            )
        if not builder.images:
            logger.warning("%s: no (decodable) masked images; no instance JSON written", split)
    if not pending:
        raise GrapeInputError(f"{root}: no masked images in any split; nothing to write")
    with atomic_outputs([path for path, _ in pending], overwrite=overwrite) as out:
        for path, coco in pending:  # every split or none
            out.write_json(path, coco)
            logger.info("wrote %s (%d images, %d annotations)", path, len(coco["images"]),
                        len(coco["annotations"]))
    warnings.log(logger)
    summary.warnings = warnings.as_dict()
    return summary
