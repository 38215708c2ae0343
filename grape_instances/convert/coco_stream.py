"""A :class:`CocoBuilder` that spills images and annotations to temporary files.

Large conversions (thousands of images) should not hold every record and RLE string in
memory: only the image sizes (two integers per image, for the mask checks) and the
categories stay in RAM; records go to anonymous temporary files as they are added, and
:meth:`StreamingCocoBuilder.write` streams them into the final JSON (itself written to a
temporary file and renamed, like every output of the project).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from array import array
from typing import Any

from ..fileio import OutputSet, atomic_open
from .coco import CocoBuilder


class _Spill:
    """Comma-separated JSON objects appended to an anonymous temporary file."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile("w+", encoding="utf-8")
        self.count = 0

    def append(self, obj: dict) -> None:
        if self.count:
            self.file.write(",")
        json.dump(obj, self.file, separators=(",", ":"), allow_nan=False)
        self.count += 1

    def copy_to(self, f) -> None:
        self.file.flush()
        self.file.seek(0)
        shutil.copyfileobj(self.file, f, length=1 << 20)
        self.file.seek(0, os.SEEK_END)


class StreamingCocoBuilder(CocoBuilder):
    """Same ``add_image`` / ``add_annotation`` / ``write`` API as :class:`CocoBuilder`.

    ``images`` and ``annotations`` stay empty; ``num_images`` and ``num_annotations``
    count what was added. Use it as a context manager (or call :meth:`close`) so the spill
    files go away even when a conversion fails halfway.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._image_spill = _Spill()
        self._annotation_spill = _Spill()
        self._heights = array("l")
        self._widths = array("l")

    @property
    def num_images(self) -> int:
        return self._image_spill.count

    @property
    def num_annotations(self) -> int:
        return self._annotation_spill.count

    def add_image(self, file_name: str, height: int, width: int, **extra: Any) -> int:
        image_id = self.num_images + 1
        self._image_spill.append({"id": image_id, "file_name": file_name,
                                  "height": int(height), "width": int(width), **extra})
        self._heights.append(int(height))
        self._widths.append(int(width))
        return image_id

    def image_size(self, image_id: int) -> tuple[int, int]:
        return self._heights[image_id - 1], self._widths[image_id - 1]

    def add_annotation(self, image_id: int, **kwargs: Any) -> int | None:
        if super().add_annotation(image_id, **kwargs) is None:
            return None
        ann = self.annotations.pop()
        ann["id"] = self.num_annotations + 1
        self._annotation_spill.append(ann)
        return ann["id"]

    def summary(self, warnings) -> dict:
        """What a converter returns: counts, category names and its warning counts."""
        return {
            "images": self.num_images,
            "annotations": self.num_annotations,
            "categories": [c["name"] for c in self.categories],
            "warnings": warnings.as_dict(),
        }

    def to_dict(self) -> dict:
        raise TypeError("StreamingCocoBuilder keeps its records on disk; use write()")

    def write(self, path: str | os.PathLike, overwrite: bool = False,
              outputs: OutputSet | None = None) -> None:
        """Write the whole JSON atomically, streaming the records from the spill files
        (standard JSON: records holding NaN / Infinity were refused when added)."""
        head = {"info": self.info, "licenses": [], "categories": self.categories}
        opened = atomic_open(path, "w", overwrite=overwrite) if outputs is None \
            else outputs.open(path, "w")
        with opened as f:
            f.write(json.dumps(head, allow_nan=False)[:-1])
            f.write(', "images": [')
            self._image_spill.copy_to(f)
            f.write('], "annotations": [')
            self._annotation_spill.copy_to(f)
            f.write("]}")

    def close(self) -> None:
        self._image_spill.file.close()
        self._annotation_spill.file.close()

    def __enter__(self) -> StreamingCocoBuilder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
