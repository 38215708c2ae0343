"""labelme JSON files -> COCO instances JSON, rasterised exactly as labelme does.

Masks come from labelme's own ``labelme.utils.shape_to_mask`` (polygon, rectangle, circle,
oriented_rectangle) or from the base64 PNG of ``mask`` shapes placed in their box, as
``labelme.utils.shapes_to_label`` places them, so areas are labelme's own. Shapes sharing
``(label, group_id)`` form one instance (labelme's rule; a shape without ``group_id`` is
its own instance); shapes labelled ``__ignore__`` become ``iscrowd: 1`` regions (Detectron2
skips them in training; the semantic view maps them to ``ignore_value``). Other shape
types (line, linestrip, point) are skipped with a count.

Image paths: ``imagePath`` is relative to the JSON and may point anywhere inside the
dataset ``root`` (``../images/x.jpg``), never outside it. File names in the output are
relative to ``root``. When the image file is absent but the JSON embeds it
(``imageData``), the embedded image is used and written beside the output JSON, in
``<out stem>_images/``, so Detectron2 can read it; its file name then starts with the path
from ``root`` to that folder. Every image (on disk or embedded) is decoded cheaply; one that
does not decode is left out with its shapes as a counted warning, or refused (strict).
"""

from __future__ import annotations

import base64
import binascii
import importlib.metadata
import io
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from ..core.errors import GrapeInputError
from ..core.fileio import atomic_outputs, check_output_path, read_json, refuse_existing
from ..core.images import (
    DEFAULT_MAX_PIXELS,
    EXIF_ORIENTATION_TAG,
    ImageSize,
    UndecodableImageError,
    check_photo_mode,
    decode_cheaply,
    leave_out_undecodable,
    read_image_size,
    refuse_all_undecodable,
    resolve_image_path,
)
from ..core.polygons import (
    CLIPPED,
    NON_NUMERIC,
    TOO_FEW_POINTS,
    ZERO_AREA,
    numeric_array,
    polygon_area,
)
from ..core.warning_counter import WarningCounter
from .coco import (
    DEFAULT_CATEGORY,
    CocoBuilder,
    ImageRecord,
    Instance,
    Records,
    SpoolStore,
    add_instances,
)

logger = logging.getLogger(__name__)

IGNORE_LABEL = "__ignore__"
BACKGROUND_LABEL = "_background_"
AREA_SHAPES = {"polygon", "rectangle", "circle", "oriented_rectangle", "mask"}

#: Points in one labelme file beyond which it is refused: an exact outline of a bunch in a
#: 2048 px photo has about 1,300, so a million is no annotation; millions of points took
#: gigabytes of memory on their way to the rasteriser.
MAX_POINTS = 1_000_000
SKIPPED_TYPE = "line / linestrip / point shapes (no area, skipped)"
MALFORMED = "malformed shapes (wrong point count or unreadable mask PNG, skipped)"
EMPTY_MASK = "instances whose mask has no pixel (skipped)"
SIZE_MISMATCH = "files whose imageHeight / imageWidth differ from the image (image used)"
EMBEDDED = "images absent on disk, taken from the embedded imageData"
# The same rule as VIA's images without regions: an unreviewed photo kept as "nothing here"
# would teach a model that it holds nothing.
NO_SHAPES = ("images without shapes (left out; --keep-empty keeps them as images with "
             "nothing to find)")


@dataclass
class LabelmeFile:
    """The parts of one labelme JSON the converter needs (``imageData`` is not kept)."""

    json_path: Path
    image_name: str | None
    declared_size: tuple[Any, Any]
    shapes: list[dict]
    has_image_data: bool
    labels: set[str] = field(default_factory=set)


def labelme_version() -> str:
    """The installed labelme's version, written in the files we make so that labelme opens
    them as its own (read from the package metadata: importing labelme is not needed)."""
    return importlib.metadata.version("labelme")


def labelme_shape(label: str, points: Any, group_id: int | None = None,
                  description: str = "") -> dict:
    """One labelme polygon shape from a K x 2 ``(x, y)`` array (floats, as labelme saves);
    shapes sharing ``(label, group_id)`` are one instance."""
    return {"label": label, "points": np.asarray(points, dtype=np.float64).tolist(),
            "group_id": group_id, "description": description, "shape_type": "polygon",
            "flags": {}, "mask": None}


def labelme_record(shapes: list[dict], image_path: str, height: int, width: int) -> dict:
    """The one labelme JSON writer: ``image_path`` is relative to the JSON's folder (posix),
    the image is referenced, not embedded (``imageData`` null)."""
    return {"version": labelme_version(), "flags": {}, "shapes": shapes,
            "imagePath": image_path, "imageData": None,
            "imageHeight": int(height), "imageWidth": int(width)}


def read_labels_file(path: str | os.PathLike) -> list[str]:
    """Class names of a labelme ``labels.txt`` (``__ignore__`` and ``_background_`` dropped)."""
    path = Path(path)
    if not path.is_file():
        raise GrapeInputError(f"{path}: labels file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise GrapeInputError(f"{path}: not a UTF-8 text file") from None
    names = [ln.strip() for ln in lines if ln.strip()]
    if len(set(names)) != len(names):
        raise GrapeInputError(f"{path}: a label is listed twice")
    classes = [n for n in names if n not in (IGNORE_LABEL, BACKGROUND_LABEL)]
    if not classes:
        raise GrapeInputError(f"{path}: no class names (only __ignore__ / _background_)")
    return classes


def find_labelme_files(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """JSON files named directly, plus ``*.json`` inside named folders (sorted, unique)."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files.extend(sorted(p.glob("*.json")))
        elif p.is_file():
            files.append(p)
        else:
            raise GrapeInputError(f"{p}: input not found")
    unique = list(dict.fromkeys(Path(os.path.abspath(f)) for f in files))
    if not unique:
        raise GrapeInputError(f"{', '.join(map(str, inputs))}: no labelme JSON files found")
    return unique


def default_root(inputs: Sequence[str | os.PathLike]) -> Path:
    """The input folder, or the common folder of the input files."""
    dirs = [os.path.abspath(p if Path(p).is_dir() else Path(p).parent) for p in inputs]
    return Path(os.path.commonpath(dirs))


def load_labelme_file(path: Path) -> LabelmeFile:
    """Parse and check the structure of one labelme JSON (one-line errors naming it)."""
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        hint = ""
        if isinstance(data, dict) and ("_via_img_metadata" in data or any(
                isinstance(v, dict) and "regions" in v for v in data.values())):
            hint = " (it looks like VIA: use the 'via' subcommand)"
        elif isinstance(data, dict) and "annotations" in data:
            hint = " (it looks like COCO JSON)"
        raise GrapeInputError(f"{path}: not a labelme file (no 'shapes' list){hint}")
    shapes = []
    total_points = 0
    for i, s in enumerate(data["shapes"]):
        if not isinstance(s, dict) or not isinstance(s.get("label"), str):
            raise GrapeInputError(f"{path}: shape {i} has no text 'label'")
        points = s.get("points")
        total_points += len(points) if isinstance(points, list) else 0
        if total_points > MAX_POINTS:  # refused before numpy and the rasteriser see them
            raise GrapeInputError(f"{path}: more than {MAX_POINTS} points in its shapes (shape "
                                  f"{i} reaches {total_points}); a broken export, not an "
                                  "outline")
        gid = s.get("group_id")
        if gid is not None and (not isinstance(gid, int) or isinstance(gid, bool)):
            raise GrapeInputError(f"{path}: shape {i} has a non-integer group_id {gid!r}")
        shapes.append(s)
    image_name = data.get("imagePath")
    if image_name is not None and not isinstance(image_name, str):
        raise GrapeInputError(f"{path}: 'imagePath' is not text")
    has_data = isinstance(data.get("imageData"), str) and bool(data["imageData"])
    if not image_name and not has_data:
        raise GrapeInputError(f"{path}: neither 'imagePath' nor 'imageData' is set")
    return LabelmeFile(
        json_path=path,
        image_name=image_name or None,
        declared_size=(data.get("imageHeight"), data.get("imageWidth")),
        shapes=shapes,
        has_image_data=has_data,
        labels={s["label"] for s in shapes},
    )


def _embedded_image(path: Path, max_pixels: int | None, decode: bool = True
                    ) -> tuple[bytes, ImageSize, str]:
    """Bytes, size (EXIF applied) and file suffix of a JSON's embedded ``imageData``, its
    pixels decoded cheaply unless ``decode`` is False (already checked)."""
    try:
        raw = base64.b64decode(read_json(path)["imageData"], validate=True)
        with Image.open(io.BytesIO(raw)) as img:
            width, height = img.size
            fmt = (img.format or "PNG").lower()
            orientation = img.getexif().get(EXIF_ORIENTATION_TAG, 1)
            check_photo_mode(img.mode, path)  # a 16-bit imageData is refused like a file
            if max_pixels is not None and width * height > max_pixels:
                raise GrapeInputError(
                    f"{path}: embedded image is {width} x {height} pixels, above the limit "
                    f"of {max_pixels} (decompression-bomb guard; raise it with --max-pixels)"
                )
            if decode:
                decode_cheaply(img, path)
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError):
        raise UndecodableImageError(
            path, f"{path}: embedded imageData is not a readable image"
        ) from None
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    suffix = {"jpeg": ".jpg", "mpo": ".jpg"}.get(fmt, f".{fmt}")
    return raw, ImageSize(width, height, orientation), suffix


def _points(shape: dict) -> np.ndarray | None:
    pts = shape.get("points")
    if not isinstance(pts, list) or not all(isinstance(p, list) and len(p) == 2 for p in pts):
        return None
    flat = numeric_array([v for p in pts for v in p])
    return None if flat is None else flat.reshape(-1, 2)


def shape_mask(shape: dict, height: int, width: int, warnings: WarningCounter, where: str
               ) -> np.ndarray | None:
    """The boolean mask of one labelme shape, or None (reason counted in ``warnings``)."""
    from labelme.utils import img_b64_to_arr, shape_to_mask

    stype = shape.get("shape_type") or "polygon"
    if not isinstance(stype, str) or stype not in AREA_SHAPES:
        warnings.add(SKIPPED_TYPE, where)
        return None
    pts = _points(shape)
    if pts is None:
        warnings.add(NON_NUMERIC, where)
        return None
    outside = (pts[:, 0] < 0) | (pts[:, 0] > width) | (pts[:, 1] < 0) | (pts[:, 1] > height)
    if stype != "circle" and outside.any():  # a circle's second point may lie outside
        warnings.add(CLIPPED, where, count=int(outside.sum()))
    if stype == "mask":
        return _mask_shape(shape, pts, height, width, warnings, where, img_b64_to_arr)
    if stype == "polygon":
        if len(pts) < 3:
            warnings.add(TOO_FEW_POINTS, where)
            return None
        if polygon_area(pts) <= 0.0:
            warnings.add(ZERO_AREA, where)
            return None
    elif len(pts) != {"rectangle": 2, "circle": 2, "oriented_rectangle": 4}[stype]:
        warnings.add(MALFORMED, where)
        return None
    return shape_to_mask((height, width), pts.tolist(), stype)


def _mask_shape(shape, pts, height, width, warnings, where, img_b64_to_arr):
    """A ``mask`` shape: a PNG covering the box ``points``, as labelme's shapes_to_label."""
    if len(pts) != 2 or not isinstance(shape.get("mask"), str):
        warnings.add(MALFORMED, where)
        return None
    try:
        patch = img_b64_to_arr(shape["mask"]).astype(bool)
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError):
        warnings.add(MALFORMED, where)
        return None
    (x1, y1), (x2, y2) = pts.astype(int)
    if patch.ndim != 2 or patch.shape != (y2 - y1 + 1, x2 - x1 + 1):
        warnings.add(MALFORMED, where)
        return None
    full = np.zeros((height, width), dtype=bool)
    top, left = max(y1, 0), max(x1, 0)
    bottom, right = min(y2 + 1, height), min(x2 + 1, width)
    if bottom > top and right > left:
        full[top:bottom, left:right] = patch[top - y1: bottom - y1, left - x1: right - x1]
    return full


def read_labelme(
    inputs: Sequence[str | os.PathLike],
    *,
    root: str | os.PathLike | None = None,
    labels_file: str | os.PathLike | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    strict_images: bool = False,
    extract_dir: str | os.PathLike | None = None,
    warnings: WarningCounter | None = None,
    keep_empty: bool = False,
) -> Records:
    """Read labelme JSON files (or folders of them): categories now, images lazily (one
    :class:`ImageRecord` each, instances as masks from labelme's own rasteriser, which is
    the reference), so that a caller composes it without temporary files.

    Categories: those of ``labels_file`` in its order (a label outside it is an error),
    else the labels found, sorted. An image absent on disk but embedded in its JSON gets
    ``embedded=True`` and a path under ``extract_dir`` (default: ``root/labelme_images``);
    nothing is written. An image that does not decode is left out (counted, listed in
    ``undecodable``) unless ``strict_images``. A file without any shape is left out with a
    counted warning, as VIA's images without regions are, unless ``keep_empty``.
    """
    root_path = Path(os.path.abspath(root)) if root else default_root(inputs)
    if not root_path.is_dir():
        raise GrapeInputError(f"{root_path}: dataset root folder not found")
    files = [load_labelme_file(p) for p in find_labelme_files(inputs)]
    categories = _categories(files, labels_file)
    warnings = warnings if warnings is not None else WarningCounter()
    records = Records(categories, root_path, "labelme", iter(()), warnings)
    target = Path(extract_dir) if extract_dir is not None else root_path / "labelme_images"
    records.images = _labelme_records(files, root_path, target, max_pixels, strict_images,
                                      records, keep_empty, root is None)
    return records


def _labelme_records(files: list[LabelmeFile], root_path: Path, extract_dir: Path,
                     max_pixels: int | None, strict_images: bool, records: Records,
                     keep_empty: bool = False, root_is_default: bool = False
                     ) -> Iterator[ImageRecord]:
    warnings, categories = records.warnings, records.categories
    seen: dict[str, Path] = {}
    for lf in tqdm(files, desc="labelme files", unit="file", leave=False, disable=None):
        try:
            path, size, embedded = _locate_image(lf, root_path, extract_dir, max_pixels,
                                                 warnings)
        except UndecodableImageError as e:
            leave_out_undecodable(e, warnings, strict_images)
            records.undecodable.append(str(e.path))
            continue
        except GrapeInputError as e:
            if root_is_default and "resolves outside" in str(e):
                raise GrapeInputError(f"{e}; pass --root DIR, a folder holding the images "
                                      "(file names in the output are relative to it)"
                                      ) from None
            raise
        if not lf.shapes and not keep_empty:
            warnings.add(NO_SHAPES, lf.json_path.name)
            continue
        rel = os.path.relpath(path, root_path).replace(os.sep, "/")
        if rel in seen:
            raise GrapeInputError(
                f"{lf.json_path}: image {rel!r} is also annotated by {seen[rel]}"
            )
        seen[rel] = lf.json_path
        h, w = lf.declared_size
        if (h, w) != (None, None) and (h, w) != (size.height, size.width):
            warnings.add(SIZE_MISMATCH, f"{lf.json_path.name}: JSON {w}x{h}, image "
                                        f"{size.width}x{size.height}")
        instances = [Instance(categories[0] if label == IGNORE_LABEL else label, where,
                              mask=mask, iscrowd=int(label == IGNORE_LABEL))
                     for label, mask, where in _instances(lf, size.height, size.width,
                                                          warnings)]
        yield ImageRecord(rel, Path(path), size.height, size.width, instances, lf.json_path,
                          embedded)


def convert_labelme(
    inputs: Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    labels_file: str | os.PathLike | None = None,
    keep_polygons: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    overwrite: bool = False,
    strict_images: bool = False,
    keep_empty: bool = False,
) -> dict:
    """Convert labelme JSON files (or folders of them) into one COCO instances JSON:
    :func:`read_labelme` into a spooled :class:`CocoBuilder`; embedded images are written
    to ``<out stem>_images/`` together with the JSON (all or none).

    ``keep_polygons`` is accepted for symmetry with the VIA converter but masks are always
    RLE: labelme's rasterisation is the reference.
    Returns a summary like :func:`grape_instances.convert.via.convert_via`.
    """
    del keep_polygons  # masks come from labelme's rasteriser; polygons would re-rasterise
    refuse_existing(out_path, overwrite, [*find_labelme_files(inputs), labels_file])
    out_path = check_output_path(out_path, overwrite)
    extract_dir = out_path.parent / f"{out_path.stem}_images"
    records = read_labelme(inputs, root=root, labels_file=labels_file, max_pixels=max_pixels,
                           strict_images=strict_images, extract_dir=extract_dir,
                           keep_empty=keep_empty)
    warnings, root_path = records.warnings, records.image_root
    to_extract: list[tuple[Path, Path]] = []
    with CocoBuilder(records.categories, source=records.source, store=SpoolStore()
                     ) as builder:
        for rec in records.images:
            if rec.embedded:
                to_extract.append((rec.source, rec.path))
            image_id = builder.add_image(rec.file_name, rec.height, rec.width)
            add_instances(builder, image_id, rec.instances, warnings, EMPTY_MASK)
        if builder.num_images == 0:
            refuse_all_undecodable(records.undecodable, ", ".join(map(str, inputs)))
        builder.info["image_root"] = str(root_path)
        if to_extract and extract_dir.exists() and not overwrite:
            raise GrapeInputError(f"{extract_dir}: output already exists (pass --overwrite "
                                  "to replace it)")
        # the COCO JSON and the images it names appear together or not at all
        with atomic_outputs([out_path] + [t for _, t in to_extract],
                            overwrite=overwrite) as outputs:
            for json_path, target in to_extract:
                raw, _, _ = _embedded_image(json_path, max_pixels, decode=False)
                with outputs.open(target, "wb") as f:
                    f.write(raw)
            builder.write(out_path, outputs=outputs)
        summary = builder.summary(warnings)
    summary["undecodable"] = records.undecodable
    warnings.log(logger, prefix="labelme: ")
    logger.info("labelme: %d files, %d instances -> %s (image root %s)", summary["images"],
                summary["annotations"], out_path, root_path)
    return summary


def _categories(files: list[LabelmeFile], labels_file: str | os.PathLike | None) -> list[str]:
    found = set().union(*(f.labels for f in files)) - {IGNORE_LABEL, BACKGROUND_LABEL}
    if labels_file is None:
        if not found:  # only negative images: keep the project's default class
            logger.warning("labelme: no labelled shapes; category %r used", DEFAULT_CATEGORY)
            return [DEFAULT_CATEGORY]
        return sorted(found)
    classes = read_labels_file(labels_file)
    for f in files:
        unknown = f.labels - set(classes) - {IGNORE_LABEL, BACKGROUND_LABEL}
        if unknown:
            raise GrapeInputError(
                f"{f.json_path}: label {sorted(unknown)[0]!r} is not in {labels_file}"
            )
    return classes


def _locate_image(lf: LabelmeFile, root: Path, extract_dir: Path, max_pixels: int | None,
                  warnings: WarningCounter) -> tuple[Path, ImageSize, bool]:
    """The image of a labelme JSON, its size, and whether it must be extracted from the JSON.

    An image absent on disk but embedded in the JSON goes to ``extract_dir``, under its path
    relative to ``root`` (or the JSON's name when it has no ``imagePath``).
    """
    path = None
    if lf.image_name:
        path = resolve_image_path(lf.image_name, lf.json_path.parent, roots=[root],
                                  source=lf.json_path)
        if os.path.exists(path) or not lf.has_image_data:  # False for a name too long
            size = read_image_size(path, max_pixels=max_pixels, source=lf.json_path,
                                   decode=True)
            return path, size, False
    _, size, suffix = _embedded_image(lf.json_path, max_pixels)
    warnings.add(EMBEDDED, str(lf.json_path.name))
    rel_name = os.path.relpath(path, root) if path is not None else lf.json_path.stem + suffix
    return Path(os.path.normpath(extract_dir / rel_name)), size, True


def _instances(lf: LabelmeFile, height: int, width: int, warnings: WarningCounter):
    """``(label, mask, where)`` per instance: shapes grouped by ``(label, group_id)``."""
    groups: dict[tuple, list] = {}
    for i, shape in enumerate(lf.shapes):
        where = f"{lf.json_path.name} shape {i}"
        mask = shape_mask(shape, height, width, warnings, where)
        if mask is None:
            continue
        gid = shape.get("group_id")
        key = (shape["label"], gid if gid is not None else ("shape", i))
        if key in groups:
            groups[key][1] |= mask
        else:
            groups[key] = [shape["label"], mask, where]
    for label, mask, where in groups.values():
        yield label, mask, where
