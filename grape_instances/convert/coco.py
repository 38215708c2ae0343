"""Build and write COCO instances JSON: the single interchange format of the project.

Format readers (``read_via``, ``read_labelme``, ...) return :class:`ImageRecord` s in memory;
:func:`add_record` feeds them to a :class:`CocoBuilder`, so that conversions compose
without temporary COCO files. Masks become RLE through pycocotools (polygons may stay
polygons), and ``area`` and ``bbox`` are always computed from the mask, never trusted from
the source. The builder keeps its records in a pluggable store: in memory, or spilled to
disk for large conversions; either way :meth:`CocoBuilder.write` is one atomic write.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from .. import __version__
from ..core.errors import GrapeInputError
from ..core.fileio import OutputSet, atomic_open
from ..core.masks import mask_to_rle, polygons_to_rle, rle_area_bbox
from ..core.warning_counter import WarningCounter

DEFAULT_CATEGORY = "bunch"


def supercategory_of(name: str) -> str:
    """A category's COCO ``supercategory``: ``grape`` for the project's own ``bunch``; any
    other class (someone's ``beet``, labelme's ``bus``) is its own, nothing invented."""
    return "grape" if name == DEFAULT_CATEGORY else name


class MemoryStore:
    """Records kept in two lists: small datasets, and callers that read them back
    (``builder.images`` / ``builder.annotations`` are these lists)."""

    def __init__(self) -> None:
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    @property
    def num_images(self) -> int:
        return len(self.images)

    @property
    def num_annotations(self) -> int:
        return len(self.annotations)

    def add_image(self, record: dict) -> None:
        self.images.append(record)

    def add_annotation(self, record: dict) -> None:
        self.annotations.append(record)

    def image_size(self, image_id: int) -> tuple[int, int]:
        image = self.images[image_id - 1]
        return image["height"], image["width"]

    def write_images(self, f: IO) -> None:
        _dump_array(self.images, f)

    def write_annotations(self, f: IO) -> None:
        _dump_array(self.annotations, f)

    def close(self) -> None:
        pass


def _dump_array(records: list[dict], f: IO) -> None:
    f.write("[")
    for i, rec in enumerate(records):
        if i:
            f.write(",")
        f.write(_dumps(rec))
    f.write("]")


def _dumps(obj: Any) -> str:
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False)
    except ValueError as e:
        if "JSON compliant" not in str(e):
            raise
        raise GrapeInputError(f"refusing to write NaN / Infinity in a COCO record: {str(obj)[:200]}"
                              ) from None


class _Spill:
    """Comma-separated JSON objects appended to an anonymous temporary file."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile("w+", encoding="utf-8")
        self.count = 0

    def append(self, obj: dict) -> None:
        text = _dumps(obj)  # refused here, before anything reaches the spill
        if self.count:
            self.file.write(",")
        self.file.write(text)
        self.count += 1

    def copy_to(self, f: IO) -> None:
        self.file.flush()
        self.file.seek(0)
        f.write("[")
        shutil.copyfileobj(self.file, f, length=1 << 20)
        f.write("]")
        self.file.seek(0, os.SEEK_END)

    def read_all(self) -> list[dict]:
        self.file.flush()
        self.file.seek(0)
        records = json.loads("[" + self.file.read() + "]")
        self.file.seek(0, os.SEEK_END)
        return records


class SpoolStore:
    """Records spilled to anonymous temporary files as they are added: large conversions
    (thousands of images) keep only two integers per image (its size, for the mask checks)
    in RAM, and :meth:`CocoBuilder.write` copies the spills into the output.
    ``images`` / ``annotations`` read the spills back (the whole list in memory)."""

    def __init__(self) -> None:
        self._images = _Spill()
        self._annotations = _Spill()
        self._heights = array("l")
        self._widths = array("l")

    @property
    def num_images(self) -> int:
        return self._images.count

    @property
    def num_annotations(self) -> int:
        return self._annotations.count

    @property
    def images(self) -> list[dict]:
        return self._images.read_all()

    @property
    def annotations(self) -> list[dict]:
        return self._annotations.read_all()

    def add_image(self, record: dict) -> None:
        self._images.append(record)
        self._heights.append(record["height"])
        self._widths.append(record["width"])

    def add_annotation(self, record: dict) -> None:
        self._annotations.append(record)

    def image_size(self, image_id: int) -> tuple[int, int]:
        return self._heights[image_id - 1], self._widths[image_id - 1]

    def write_images(self, f: IO) -> None:
        self._images.copy_to(f)

    def write_annotations(self, f: IO) -> None:
        self._annotations.copy_to(f)

    def close(self) -> None:
        self._images.file.close()
        self._annotations.file.close()


RecordStore = MemoryStore | SpoolStore


class CocoBuilder:
    """Accumulates images, categories and annotations with stable, consecutive ids.

    Args:
        categories: fixed category names (ids 1..N in this order); when None, categories
            are added in order of first use.
        source: what the annotations came from, recorded in ``info``.
        store: where the records go: a :class:`MemoryStore` (the default) or, for large
            conversions, a :class:`SpoolStore` on disk; use the builder as a context manager
            (or call :meth:`close`) so a spool goes away even when a conversion fails.
    """

    def __init__(self, categories: Sequence[str] | None = None, source: str = "",
                 store: RecordStore | None = None) -> None:
        self.store: RecordStore = store if store is not None else MemoryStore()
        self._fixed = categories is not None
        self._cat_ids: dict[str, int] = {}
        for name in categories or []:
            self._category_id(name, create=True)
        self.info = {
            "description": f"grape_instances COCO export from {source}" if source else "",
            "source": source,
            "converter": f"grape_instances {__version__}",
            "date_created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
        }

    def _category_id(self, name: str, create: bool) -> int | None:
        if name not in self._cat_ids and create:
            self._cat_ids[name] = len(self._cat_ids) + 1
        return self._cat_ids.get(name)

    @property
    def categories(self) -> list[dict]:
        return [{"id": i, "name": n, "supercategory": supercategory_of(n)}
                for n, i in self._cat_ids.items()]

    @property
    def images(self) -> list[dict]:
        return self.store.images

    @property
    def annotations(self) -> list[dict]:
        return self.store.annotations

    @property
    def num_images(self) -> int:
        return self.store.num_images

    @property
    def num_annotations(self) -> int:
        return self.store.num_annotations

    def add_image(self, file_name: str, height: int, width: int, **extra: Any) -> int:
        """Register an image; ``extra`` keys (e.g. ``depth_file``) are kept in the record."""
        image_id = self.store.num_images + 1
        self.store.add_image({"id": image_id, "file_name": file_name, "height": int(height),
                              "width": int(width), **extra})
        return image_id

    def image_size(self, image_id: int) -> tuple[int, int]:
        """``(height, width)`` of a registered image."""
        return self.store.image_size(image_id)

    def add_annotation(
        self,
        image_id: int,
        *,
        mask: np.ndarray | None = None,
        polygons: Sequence[Sequence[float]] | None = None,
        category: str = DEFAULT_CATEGORY,
        iscrowd: int = 0,
        keep_polygons: bool = False,
        **extra: Any,
    ) -> int | None:
        """Add one instance from a binary mask or from polygons of the same object.

        Returns the annotation id, or None when the mask is empty (nothing is added).
        With ``keep_polygons`` polygon input is stored as polygons (area and bbox still from
        the rasterised mask); otherwise the segmentation is RLE.
        """
        h, w = self.image_size(image_id)
        if mask is not None:
            if mask.shape[:2] != (h, w):
                raise ValueError(f"mask shape {mask.shape} != image size {(h, w)}")
            rle = mask_to_rle(mask)
        elif polygons:
            rle = polygons_to_rle(polygons, h, w)
        else:
            raise ValueError("add_annotation needs a mask or polygons")
        area, bbox = rle_area_bbox(rle)
        if area <= 0:
            return None
        cat_id = self._category_id(category, create=not self._fixed)
        if cat_id is None:
            raise ValueError(f"unknown category {category!r}")
        segmentation: Any = rle
        if keep_polygons and polygons is not None and not iscrowd:
            segmentation = [[round(float(v), 2) for v in p] for p in polygons]
        ann = {
            "id": self.store.num_annotations + 1,
            "image_id": image_id,
            "category_id": cat_id,
            "segmentation": segmentation,
            "area": area,
            "bbox": bbox,
            "iscrowd": int(iscrowd),
            **extra,
        }
        self.store.add_annotation(ann)
        return ann["id"]

    def summary(self, warnings: WarningCounter) -> dict:
        """What a converter returns: counts, category names and its warning counts."""
        return {
            "images": self.num_images,
            "annotations": self.num_annotations,
            "categories": [c["name"] for c in self.categories],
            "warnings": warnings.as_dict(),
        }

    def to_dict(self) -> dict:
        """The whole dataset as one dict (a spool store reads its records back)."""
        return {
            "info": self.info,
            "licenses": [],
            "images": self.images,
            "annotations": self.annotations,
            "categories": self.categories,
        }

    def write(self, path: str | os.PathLike, overwrite: bool = False,
              outputs: OutputSet | None = None) -> None:
        """Write atomically (temporary file + rename), streaming the records from the
        store; refuse to overwrite unless asked. With ``outputs`` (of
        :func:`~grape_instances.core.fileio.atomic_outputs`) the file is one of a set renamed
        into place together. Standard JSON: NaN / Infinity is a one-line error."""
        head = _dumps({"info": self.info, "licenses": [], "categories": self.categories})
        opened = atomic_open(path, "w", overwrite=overwrite) if outputs is None \
            else outputs.open(path, "w")
        with opened as f:
            f.write(head[:-1])
            f.write(',"images":')
            self.store.write_images(f)
            f.write(',"annotations":')
            self.store.write_annotations(f)
            f.write("}")

    def close(self) -> None:
        """Release the store (a spool's temporary files)."""
        self.store.close()

    def __enter__(self) -> CocoBuilder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Instance:
    """One object as a reader found it: polygons of one object, or a mask."""

    category: str
    where: str  # names the source region / shape in warnings
    polygons: list[list[float]] | None = None
    mask: np.ndarray | None = None
    iscrowd: int = 0


@dataclass
class ImageRecord:
    """One image a reader found, with its instances (not yet rasterised to RLE)."""

    file_name: str  # relative to the image root, '/' separators
    path: Path  # absolute; for an image embedded in a labelme JSON, where it would go
    height: int
    width: int
    instances: list[Instance] = field(default_factory=list)
    source: Path | None = None  # the annotation file it came from
    embedded: bool = False  # labelme: the image is inside the JSON, not on disk
    extras: dict[str, Any] = field(default_factory=dict)  # kept in the COCO image record


@dataclass
class Records:
    """What a format reader returns. ``images`` is lazy (read one by one, so a large
    conversion need not hold them all); ``warnings`` and ``undecodable`` (absolute paths of
    images left out because they do not decode) fill while it is consumed."""

    categories: list[str]
    image_root: Path
    source: str
    images: Iterator[ImageRecord]
    warnings: WarningCounter
    undecodable: list[str] = field(default_factory=list)


def add_record(builder: CocoBuilder, record: ImageRecord, warnings: WarningCounter,
               empty_kind: str, keep_polygons: bool = False) -> int:
    """Add one reader record (image, its ``extras`` and its instances) to ``builder``;
    returns how many instances were added (see :func:`add_instances`)."""
    image_id = builder.add_image(record.file_name, record.height, record.width,
                                 **record.extras)
    return add_instances(builder, image_id, record.instances, warnings, empty_kind,
                         keep_polygons=keep_polygons)


def add_instances(builder: CocoBuilder, image_id: int, instances: Iterable[Instance],
                  warnings: WarningCounter, empty_kind: str, keep_polygons: bool = False
                  ) -> int:
    """Add a record's instances to ``builder``; an instance without any pixel is counted
    as ``empty_kind``. Returns how many were added."""
    added = 0
    for inst in instances:
        ann_id = builder.add_annotation(image_id, mask=inst.mask, polygons=inst.polygons,
                                        category=inst.category, iscrowd=inst.iscrowd,
                                        keep_polygons=keep_polygons)
        if ann_id is None:
            warnings.add(empty_kind, inst.where)
        else:
            added += 1
    return added
