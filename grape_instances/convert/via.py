"""VIA (VGG Image Annotator) 1.x, 2.x and 3.x files -> COCO instances JSON.

Formats read:

* **VIA 1.x / 2.x export** (``Annotation > Export as JSON``): ``{key: {filename, size,
  regions, file_attributes}}`` with ``key = filename + size``; ``regions`` is a dict
  (1.x) or a list (2.x) of ``{shape_attributes, region_attributes}``.
* **VIA 2.x project** (``Project > Save``): the same records under ``_via_img_metadata``.
* **VIA 3.x project**: ``project`` / ``attribute`` / ``file`` / ``view`` / ``metadata``; a
  region's image is ``file[view[metadata.vid].fid_list[0]]``; its shape is the ``xy``
  array ``[shape_code, ...]`` and its attribute values ``av`` are keyed by attribute id,
  with radio / select / checkbox values given as option ids (mapped to option labels).

Shapes polygon, rect, circle, ellipse (with VIA 2's rotation ``theta``) and VIA 3's extreme
rectangle / extreme circle become masks; points and polylines carry no area and are skipped
with a count. Image sizes come from the image headers (EXIF applied), never from the VIA
file; the ``size`` in bytes VIA keys images by is only compared with the file (warning).
VIA has no instance grouping: ``group_attr`` merges the regions of one image that share a
value of that attribute (the visible parts of one occluded bunch) into one instance.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..core.errors import GrapeInputError
from ..core.fileio import read_json, refuse_existing
from ..core.images import (
    DEFAULT_MAX_PIXELS,
    checked_image_size,
    refuse_all_undecodable,
    resolve_image_path,
)
from ..core.polygons import (
    circle_through,
    ellipse_outline,
    numeric_array,
    rectangle_outline,
    sanitize_polygon,
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

# VIA 3 shape codes (_VIA_RSHAPE) and attribute types (_VIA_ATTRIBUTE_TYPE).
VIA3_SHAPES = {
    1: "point", 2: "rect", 3: "circle", 4: "ellipse", 5: "polyline", 6: "polyline",
    7: "polygon", 8: "extreme_rectangle", 9: "extreme_circle",
}
VIA3_ATTR_CHECKBOX, VIA3_ATTR_OPTION_TYPES = 2, {2, 3, 4, 5}
VIA3_FILE_IMAGE = 2

AREA_SHAPES = {"polygon", "rect", "circle", "ellipse", "extreme_rectangle", "extreme_circle"}
LINE_SHAPES = {"point", "polyline", "line"}

# Warning kinds specific to VIA (polygon problems use the kinds of polygons.py).
SKIPPED_LINE = "point / polyline regions (no area, skipped)"
SKIPPED_UNKNOWN = "regions with an unknown or malformed shape (skipped)"
SIZE_UNKNOWN = "images with size -1 in the VIA file (added by URL; file size not checked)"
SIZE_MISMATCH = "images whose VIA size key does not match the file on disk"
URL_NAMES = "images named by URL (looked up by base name in the images folder)"
NO_LABEL = "regions without a value for the label attribute (skipped)"
MANY_LABELS = "regions with several checked label values (skipped)"
MIXED_GROUP = "instance groups whose regions disagree on the label (first label used)"
EMPTY_MASK = "regions whose mask has no pixel after rasterisation (skipped)"
NO_REGIONS = ("images without regions (left out; --keep-empty keeps them as images with "
              "nothing to find)")
NON_IMAGE = "non-image files in the VIA 3 project (skipped)"
NO_IMAGES = "files without any annotated image (an empty COCO JSON is written)"
TEMPORAL = "VIA 3 temporal (video / audio) or multi-file regions (skipped)"


@dataclass
class ViaImage:
    """One image of a VIA file, in the VIA 2 shape whatever the version."""

    key: str
    filename: str
    size: int | None  # bytes as VIA recorded them; -1 = added by URL; None = not recorded
    regions: list[dict] = field(default_factory=list)


def via2_settings(name: str, default_filepath: str = "", region_label: str = "__via_region_id__",
                  region_color: str = "__via_default_region_color__") -> dict:
    """``_via_settings`` of a VIA 2.x project we write (synthetic data, edges, predictions):
    VIA opens the images from ``default_filepath`` and labels / colours regions by the given
    region attributes."""
    return {
        "ui": {
            "annotation_editor_height": 25, "annotation_editor_fontsize": 0.8,
            "leftsidebar_width": 18,
            "image_grid": {"img_height": 80, "rshape_fill": "none", "rshape_fill_opacity": 0.3,
                           "rshape_stroke": "yellow", "rshape_stroke_width": 2,
                           "show_region_shape": True, "show_image_policy": "all"},
            "image": {"region_label": region_label, "region_color": region_color,
                      "region_label_font": "10px Sans",
                      "on_image_annotation_editor_placement": "NEAR_REGION"},
        },
        "core": {"buffer_size": 18, "filepath": {}, "default_filepath": default_filepath},
        "project": {"name": name},
    }


#: ``_via_data_format_version`` of the VIA 2 projects we write.
VIA2_FORMAT_VERSION = "2.0.10"


def via2_dropdown(description: str, options: Iterable[str], default: str | None = None
                  ) -> dict:
    """A VIA 2 dropdown attribute (a class, a background kind) with its options declared, so
    that VIA offers them and ``convert via`` keeps classes nobody has drawn yet."""
    return {"type": "dropdown", "description": description,
            "options": {o: o for o in options},
            "default_options": {default: True} if default is not None else {}}


def via2_text(description: str) -> dict:
    """A VIA 2 free-text attribute (an instance id, a score)."""
    return {"type": "text", "description": description, "default_value": ""}


def via2_polygon_region(polygon: Any, attributes: dict) -> dict:
    """One VIA 2 polygon region from a K x 2 ``(x, y)`` vertex array, numbers as given."""
    pts = np.asarray(polygon)
    return {"shape_attributes": {"name": "polygon", "all_points_x": pts[:, 0].tolist(),
                                 "all_points_y": pts[:, 1].tolist()},
            "region_attributes": attributes}


def via2_image(filename: str, size: int, regions: list[dict],
               file_attributes: dict | None = None) -> tuple[str, dict]:
    """``(key, record)`` of one image of a VIA 2 project: VIA keys images by file name +
    size in bytes, and finds a file by that key when a person adds it again."""
    return f"{filename}{size}", {"filename": filename, "size": int(size), "regions": regions,
                                 "file_attributes": file_attributes or {}}


def via2_project(images: dict[str, dict], name: str, default_filepath: str,
                 region_attributes: dict, file_attributes: dict | None = None, *,
                 region_label: str = "__via_region_id__",
                 region_color: str = "__via_default_region_color__") -> dict:
    """The one VIA 2.x project writer (``Project > Open`` in VIA 2; read back by
    :func:`convert_via`): ``images`` maps :func:`via2_image` keys to records, the attribute
    specs come from :func:`via2_dropdown` / :func:`via2_text`; see :func:`via2_settings` for
    ``default_filepath``, ``region_label`` and ``region_color``."""
    return {
        "_via_settings": via2_settings(name, default_filepath, region_label=region_label,
                                       region_color=region_color),
        "_via_img_metadata": images,
        "_via_attributes": {"region": region_attributes, "file": file_attributes or {}},
        "_via_data_format_version": VIA2_FORMAT_VERSION,
        "_via_image_id_list": list(images),
    }


def detect_via_version(data: Any, path: str | os.PathLike) -> str:
    """``"1"``, ``"2"`` (export or project) or ``"3"``; a clear error for anything else."""
    if isinstance(data, dict):
        if {"project", "file", "view", "metadata"} <= data.keys():
            return "3"
        if "_via_img_metadata" in data:
            return "2"
        if "shapes" in data and "imagePath" in data:
            raise GrapeInputError(
                f"{path}: this is a labelme file, not VIA (use the 'labelme' subcommand)"
            )
        if "images" in data and "annotations" in data:
            raise GrapeInputError(f"{path}: this is a COCO JSON, not a VIA file")
        values = list(data.values())
        if values and all(isinstance(v, dict) and "filename" in v and "regions" in v
                          for v in values):
            return "1" if any(isinstance(v["regions"], dict) for v in values) else "2"
    raise GrapeInputError(
        f"{path}: not a VIA 1.x / 2.x / 3.x file (expected image records with 'filename' "
        "and 'regions', '_via_img_metadata', or a VIA 3 project)"
    )


def _regions_list(regions: Any, path: str | os.PathLike, key: str) -> list[dict]:
    if isinstance(regions, dict):  # VIA 1.x: {"0": region, "1": region, ...}
        regions = list(regions.values())
    if not isinstance(regions, list) or not all(isinstance(r, dict) for r in regions):
        raise GrapeInputError(f"{path}: image {key!r} has malformed 'regions'")
    return regions


def _iter_via2(records: Any, path: str | os.PathLike) -> Iterator[ViaImage]:
    if not isinstance(records, dict):
        raise GrapeInputError(f"{path}: '_via_img_metadata' is not an object")
    for key, rec in records.items():
        if not isinstance(rec, dict) or not isinstance(rec.get("filename"), str):
            raise GrapeInputError(f"{path}: image record {key!r} has no 'filename'")
        size = rec.get("size", -1)
        try:
            size = int(size)
        except (TypeError, ValueError, OverflowError):  # e.g. "size": Infinity
            size = -1
        yield ViaImage(key, rec["filename"], size, _regions_list(rec.get("regions", []),
                                                                 path, key))


def _via3_shape(xy: Any) -> dict:
    """A VIA 3 ``xy`` array as VIA 2 ``shape_attributes``."""
    if not isinstance(xy, list) or not xy or not isinstance(xy[0], int) \
            or xy[0] not in VIA3_SHAPES:
        return {"name": "unknown"}
    name, v = VIA3_SHAPES[xy[0]], xy[1:]
    if name == "point" and len(v) >= 2:
        return {"name": "point", "cx": v[0], "cy": v[1]}
    if name == "rect" and len(v) == 4:
        return {"name": "rect", "x": v[0], "y": v[1], "width": v[2], "height": v[3]}
    if name == "circle" and len(v) == 3:
        return {"name": "circle", "cx": v[0], "cy": v[1], "r": v[2]}
    if name == "ellipse" and len(v) == 4:
        return {"name": "ellipse", "cx": v[0], "cy": v[1], "rx": v[2], "ry": v[3]}
    if name in ("polygon", "polyline", "extreme_rectangle", "extreme_circle"):
        # odd lengths are kept: they surface as "mismatched x / y" when sanitised
        return {"name": name, "all_points_x": v[0::2], "all_points_y": v[1::2]}
    return {"name": "unknown"}


def _via3_attribute_values(av: Any, attributes: dict) -> dict:
    """``av`` (attribute id -> value / option ids) as VIA 2 ``region_attributes``."""
    out: dict[str, Any] = {}
    if not isinstance(av, dict):
        return out
    for aid, value in av.items():
        attr = attributes.get(str(aid))
        attr = attr if isinstance(attr, dict) else {}
        name = attr.get("aname")
        name = name if isinstance(name, str) else str(aid)
        options = attr.get("options")
        options = options if isinstance(options, dict) else {}
        atype = attr.get("type")
        atype = atype if isinstance(atype, int) else None
        if atype == VIA3_ATTR_CHECKBOX and isinstance(value, str):
            ids = [i for i in value.split(",") if i != ""]
            out[name] = {str(options.get(i, i)): True for i in ids}
        elif atype in VIA3_ATTR_OPTION_TYPES and isinstance(value, str):
            out[name] = options.get(value, value)
        else:
            out[name] = value
    return out


def _iter_via3(data: dict, path: str | os.PathLike, warnings: WarningCounter
               ) -> Iterator[ViaImage]:
    files, views, metadata = data.get("file"), data.get("view"), data.get("metadata")
    attributes = data.get("attribute") or {}
    if not all(isinstance(x, dict) for x in (files, views, metadata, attributes)):
        raise GrapeInputError(f"{path}: VIA 3 'file', 'view', 'metadata' must be objects")
    for vid, view in views.items():
        if not isinstance(view, dict) or not isinstance(view.get("fid_list", []), list):
            raise GrapeInputError(f"{path}: VIA 3 view {vid!r} is not an object with a "
                                  "'fid_list' list")
    regions_by_fid: dict[str, list[dict]] = {}
    for mid, meta in metadata.items():
        if not isinstance(meta, dict):
            raise GrapeInputError(f"{path}: VIA 3 metadata {mid!r} is not an object")
        vid = str(meta.get("vid"))
        if vid not in views:
            raise GrapeInputError(f"{path}: VIA 3 metadata {mid!r} refers to unknown view {vid}")
        xy, z = meta.get("xy") or [], meta.get("z") or []
        if not xy:  # file-level attributes or temporal segments: not spatial regions
            if z:
                warnings.add(TEMPORAL, f"metadata {mid}")
            continue
        fid_list = views[vid].get("fid_list") or []
        if z or len(fid_list) != 1:
            warnings.add(TEMPORAL, f"metadata {mid}")
            continue
        regions_by_fid.setdefault(str(fid_list[0]), []).append({
            "shape_attributes": _via3_shape(xy),
            "region_attributes": _via3_attribute_values(meta.get("av"), attributes),
        })
    vid_order = data["project"].get("vid_list") if isinstance(data["project"], dict) else None
    if not isinstance(vid_order, list):
        vid_order = None
    fids: list[str] = []
    for vid in vid_order or list(views):
        for fid in (views.get(str(vid)) or {}).get("fid_list") or []:
            if str(fid) not in fids:
                fids.append(str(fid))
    fids += [fid for fid in regions_by_fid if fid not in fids]
    for fid in fids:
        rec = files.get(fid)
        if not isinstance(rec, dict) or not isinstance(rec.get("fname"), str):
            raise GrapeInputError(f"{path}: VIA 3 view refers to unknown file id {fid!r}")
        if rec.get("type", VIA3_FILE_IMAGE) != VIA3_FILE_IMAGE:
            warnings.add(NON_IMAGE, rec["fname"])
            continue
        yield ViaImage(fid, rec["fname"], None, regions_by_fid.get(fid, []))


def iter_via_images(data: Any, path: str | os.PathLike, warnings: WarningCounter
                    ) -> Iterator[ViaImage]:
    """Every image of a parsed VIA file (any version) with its regions, in file order."""
    version = detect_via_version(data, path)
    if version == "3":
        yield from _iter_via3(data, path, warnings)
    elif "_via_img_metadata" in data:
        yield from _iter_via2(data["_via_img_metadata"], path)
    else:
        yield from _iter_via2(data, path)


def shape_outline(shape: Any) -> tuple[list, list] | str:
    """Outline ``(xs, ys)`` of an area shape, or the warning kind explaining the skip."""
    if not isinstance(shape, dict):
        return SKIPPED_UNKNOWN
    name = shape.get("name")
    if not isinstance(name, str):
        return SKIPPED_UNKNOWN
    if name in LINE_SHAPES:
        return SKIPPED_LINE
    if name not in AREA_SHAPES:
        return SKIPPED_UNKNOWN
    if name == "polygon":
        return shape.get("all_points_x"), shape.get("all_points_y")
    if name == "extreme_rectangle":
        xs, ys = numeric_array(shape.get("all_points_x")), numeric_array(shape.get("all_points_y"))
        if xs is None or ys is None or len(xs) != 4 or len(ys) != 4:
            return SKIPPED_UNKNOWN
        return rectangle_outline(xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min())
    if name == "extreme_circle":
        xs, ys = numeric_array(shape.get("all_points_x")), numeric_array(shape.get("all_points_y"))
        if xs is None or ys is None or len(xs) != 3 or len(ys) != 3:
            return SKIPPED_UNKNOWN
        circle = circle_through(list(zip(xs.tolist(), ys.tolist(), strict=True)))
        if circle is None:
            return SKIPPED_UNKNOWN
        return ellipse_outline(circle[0], circle[1], circle[2], circle[2])
    keys = {"rect": ("x", "y", "width", "height"), "circle": ("cx", "cy", "r"),
            "ellipse": ("cx", "cy", "rx", "ry")}[name]
    values = numeric_array([shape.get(k) for k in keys])
    if values is None:
        return [float("nan")] * 3, [float("nan")] * 3  # reported as non-numeric
    if name == "rect":
        return rectangle_outline(*values.tolist())
    if name == "circle":
        cx, cy, r = values.tolist()
        return ellipse_outline(cx, cy, r, r)
    theta = shape.get("theta", 0.0)
    theta_arr = numeric_array([theta])
    if theta_arr is None:
        return [float("nan")] * 3, [float("nan")] * 3
    return ellipse_outline(*values.tolist(), theta=float(theta_arr[0]))


def attribute_text(value: Any) -> str | list[str] | None:
    """A region attribute value as text: checkbox dicts give the list of checked options."""
    if isinstance(value, dict):
        return sorted(str(k) for k, v in value.items() if v)
    if isinstance(value, bool) or value is None:
        return None
    text = str(value).strip()
    return text or None


def _label_of(attrs: dict, label_attr: str | None, default: str) -> str | None | list:
    if label_attr is None:
        return default
    value = attribute_text(attrs.get(label_attr)) if isinstance(attrs, dict) else None
    if isinstance(value, list):
        return value[0] if len(value) == 1 else (None if not value else value)
    return value


def _local_name(filename: str, warnings: WarningCounter) -> str:
    if filename.startswith(("http://", "https://")):
        warnings.add(URL_NAMES, filename)
        return urllib.parse.unquote(urllib.parse.urlparse(filename).path.rsplit("/", 1)[-1])
    return filename


def _check_attribute_used(images: Iterator[ViaImage], attr: str, flag: str,
                          path: str | os.PathLike) -> None:
    """Refuse an attribute name no region uses (a typo would otherwise drop every region)."""
    found: set[str] = set()
    any_region = False
    for img in images:
        any_region = any_region or bool(img.regions)
        for r in img.regions:
            ra = r.get("region_attributes")
            if isinstance(ra, dict):
                if attr in ra:
                    return
                found.update(ra)
    if any_region:
        names = ", ".join(sorted(found)) or "none"
        raise GrapeInputError(
            f"{path}: no region has the attribute {attr!r} given by {flag} "
            f"(region attributes found: {names})"
        )


# How many distinct values a region attribute may have and still look like a class.
MAX_CLASS_VALUES = 20


def class_like_attributes(images: Iterator[ViaImage], data: Any,
                          exclude: Iterable[str] = ()) -> dict[str, list[str]]:
    """Region attributes that look like a class, with their values (sorted): those the
    project declares with options (radio / dropdown / checkbox), and text attributes with a
    few values that repeat across regions (``beet``: 1 / 2), not one value per region (an
    id, a score, a comment)."""
    values: dict[str, list[str]] = {}
    for img in images:
        for r in img.regions:
            attrs = r.get("region_attributes")
            for key, value in (attrs.items() if isinstance(attrs, dict) else ()):
                text = attribute_text(value)
                for v in ([text] if isinstance(text, str) else text or []):
                    values.setdefault(str(key), []).append(v)
    found = {}
    for key, seen in values.items():
        if key in exclude:
            continue
        distinct = sorted(set(seen))
        if declared_options(data, key) or (len(distinct) <= MAX_CLASS_VALUES
                                           and len(distinct) < len(seen)):
            found[key] = distinct
    return found


def _announce_class_attributes(images: Iterator[ViaImage], data: Any,
                               path: str | os.PathLike, category: str,
                               group_attr: str | None) -> None:
    """One line when regions carry what looks like a class but no --label-attr was given:
    every region then becomes ``category``, which merges those classes silently."""
    found = {key: vals for key, vals in class_like_attributes(
        images, data, exclude=[group_attr] if group_attr else []).items()
        if vals != [category]}  # one value that is the class anyway merges nothing
    if not found:
        return
    shown = "; ".join(f"{key!r} ({', '.join(vals[:6])}{', ...' if len(vals) > 6 else ''})"
                      for key, vals in found.items())
    logger.warning("%s: region attributes that look like a class: %s. Every region becomes "
                   "one class %r; pass --label-attr %s to take the classes from it",
                   path, shown, category, next(iter(found)))


def read_via(
    via_path: str | os.PathLike,
    images_dir: str | os.PathLike,
    *,
    label_attr: str | None = None,
    category: str = DEFAULT_CATEGORY,
    group_attr: str | None = None,
    keep_empty: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    strict_images: bool = False,
    warnings: WarningCounter | None = None,
) -> Records:
    """Read one VIA file: its categories now, its images lazily (one :class:`ImageRecord`
    each, instances as polygons), so that a caller composes it without temporary files.

    File names are relative to ``images_dir``. An image that does not decode is left out
    with its regions (a counted warning, listed in ``undecodable``), or refused with
    ``strict_images``. The structure, attribute names and categories are checked here;
    image problems surface while ``images`` is consumed.
    """
    images_root = Path(images_dir)
    if not images_root.is_dir():
        raise GrapeInputError(f"{images_root}: images folder not found")
    data = read_json(via_path)
    warnings = warnings if warnings is not None else WarningCounter()

    def scan() -> Iterator[ViaImage]:  # a fresh pass; pre-scans discard their warnings
        return iter_via_images(data, via_path, WarningCounter())

    if label_attr:
        _check_attribute_used(scan(), label_attr, "--label-attr", via_path)
    else:
        _announce_class_attributes(scan(), data, via_path, category, group_attr)
    if group_attr:
        _check_attribute_used(scan(), group_attr, "--group-attr", via_path)
    categories = _collect_categories(scan(), label_attr, category)
    if label_attr:
        categories = sorted(set(categories) | set(declared_options(data, label_attr)))
    records = Records(categories, images_root, f"VIA {Path(via_path).name}", iter(()),
                      warnings)
    records.images = _via_records(data, via_path, images_root, records, label_attr,
                                  category, group_attr, keep_empty, max_pixels, strict_images)
    return records


def _via_records(data: Any, via_path: str | os.PathLike, images_root: Path, records: Records,
                 label_attr: str | None, category: str, group_attr: str | None,
                 keep_empty: bool, max_pixels: int | None, strict_images: bool
                 ) -> Iterator[ImageRecord]:
    warnings = records.warnings
    seen: dict[str, str] = {}
    root_abs = Path(os.path.abspath(images_root))
    for img in tqdm(iter_via_images(data, via_path, warnings), desc="VIA images",
                    unit="img", leave=False, disable=None):
        name = _local_name(img.filename, warnings)
        path = resolve_image_path(name, images_root, source=via_path)
        rel = path.relative_to(root_abs).as_posix()
        if rel in seen:
            raise GrapeInputError(
                f"{via_path}: image {img.filename!r} appears twice (records "
                f"{seen[rel]!r} and {img.key!r})"
            )
        seen[rel] = img.key
        if not img.regions and not keep_empty:
            warnings.add(NO_REGIONS, img.filename)
            continue
        size = checked_image_size(path, warnings, strict_images, max_pixels, via_path)
        if size is None:
            records.undecodable.append(str(path))
            continue
        _check_byte_size(img, path, warnings)
        instances = [Instance(label, where, polygons=polygons) for label, polygons, where
                     in _instances(img, size.width, size.height, label_attr, category,
                                   group_attr, warnings)]
        yield ImageRecord(rel, path, size.height, size.width, instances, Path(via_path))


def convert_via(
    via_path: str | os.PathLike,
    images_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    label_attr: str | None = None,
    category: str = DEFAULT_CATEGORY,
    group_attr: str | None = None,
    keep_polygons: bool = False,
    keep_empty: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    overwrite: bool = False,
    strict_images: bool = False,
) -> dict:
    """Convert one VIA file into a COCO instances JSON written atomically at ``out_path``:
    :func:`read_via` into a spooled :class:`CocoBuilder` (large projects stay off RAM).

    File names in the output are relative to ``images_dir`` (register it as image root).
    Returns a summary: ``images``, ``annotations``, ``categories``, ``warnings`` counts and
    ``undecodable``. Raises GrapeInputError for anything that must stop the conversion
    (nothing is written).
    """
    refuse_existing(out_path, overwrite, [via_path])
    records = read_via(via_path, images_dir, label_attr=label_attr, category=category,
                       group_attr=group_attr, keep_empty=keep_empty, max_pixels=max_pixels,
                       strict_images=strict_images)
    warnings = records.warnings
    with CocoBuilder(records.categories, source=records.source, store=SpoolStore()
                     ) as builder:
        for rec in records.images:
            image_id = builder.add_image(rec.file_name, rec.height, rec.width)
            add_instances(builder, image_id, rec.instances, warnings, EMPTY_MASK,
                          keep_polygons=keep_polygons)
        if builder.num_images == 0:
            refuse_all_undecodable(records.undecodable, via_path)
            warnings.add(NO_IMAGES, str(via_path))
        builder.info["image_root"] = str(images_dir)
        builder.write(out_path, overwrite=overwrite)
        summary = builder.summary(warnings)
    summary["undecodable"] = records.undecodable
    warnings.log(logger, prefix=f"{via_path}: ")
    logger.info("%s: %d images, %d instances -> %s", via_path, summary["images"],
                summary["annotations"], out_path)
    return summary


def _collect_categories(images: Iterator[ViaImage], label_attr: str | None, default: str
                        ) -> list[str]:
    """Sorted class names (stable ids whatever the region order), or the single default."""
    if not label_attr:
        return [default]
    names: set[str] = set()
    for img in images:
        for r in img.regions:
            attrs = r.get("region_attributes") or {}
            if shape_outline(r.get("shape_attributes")) in (SKIPPED_LINE, SKIPPED_UNKNOWN):
                continue
            label = _label_of(attrs, label_attr, default)
            if isinstance(label, str):
                names.add(label)
    return sorted(names)


def declared_options(data: Any, attr: str) -> list[str]:
    """Option labels a VIA project declares for a region attribute (radio / dropdown /
    checkbox), so that classes nobody has drawn yet still get a stable category id."""
    if not isinstance(data, dict):
        return []
    if isinstance(data.get("attribute"), dict):  # VIA 3
        return [str(label) for a in data["attribute"].values() if isinstance(a, dict)
                and a.get("aname") == attr and a.get("type") in tuple(VIA3_ATTR_OPTION_TYPES)
                and isinstance(a.get("options"), dict) for label in a["options"].values()]
    via_attributes = data.get("_via_attributes")  # VIA 2 project
    region_attrs = via_attributes.get("region") if isinstance(via_attributes, dict) else None
    spec = region_attrs.get(attr) if isinstance(region_attrs, dict) else None
    if isinstance(spec, dict) and spec.get("type") in ("radio", "dropdown", "checkbox") \
            and isinstance(spec.get("options"), dict):
        return [str(k) for k in spec["options"]]
    return []


def _check_byte_size(img: ViaImage, path: Path, warnings: WarningCounter) -> None:
    if img.size is None:
        return
    if img.size < 0:
        warnings.add(SIZE_UNKNOWN, img.filename)
    elif img.size != path.stat().st_size:
        warnings.add(SIZE_MISMATCH, f"{img.filename}: VIA says {img.size} bytes, file has "
                                    f"{path.stat().st_size}")


def _instances(img: ViaImage, width: int, height: int, label_attr: str | None,
               default: str, group_attr: str | None, warnings: WarningCounter
               ) -> Iterator[tuple[str, list[list[float]], str]]:
    """``(label, polygons, where)`` per instance: one per region, or one per group."""
    groups: dict[str, tuple[str, list[list[float]], str]] = {}
    order: list[str] = []
    for index, region in enumerate(img.regions):
        where = f"{img.filename} region {index}"
        outline = shape_outline(region.get("shape_attributes"))
        if isinstance(outline, str):
            warnings.add(outline, where)
            continue
        attrs = region.get("region_attributes")
        attrs = attrs if isinstance(attrs, dict) else {}
        label = _label_of(attrs, label_attr, default)
        if label is None:
            warnings.add(NO_LABEL, where)
            continue
        if isinstance(label, list):
            warnings.add(MANY_LABELS, where)
            continue
        polygon = sanitize_polygon(outline[0], outline[1], width, height, warnings, where)
        if polygon is None:
            continue
        group = attribute_text(attrs.get(group_attr)) if group_attr else None
        gkey = f"group:{group}" if group is not None else f"region:{index}"
        if gkey not in groups:
            groups[gkey] = (label, [polygon], where)
            order.append(gkey)
        else:
            if groups[gkey][0] != label:
                warnings.add(MIXED_GROUP, where)
            groups[gkey][1].append(polygon)
    for gkey in order:
        yield groups[gkey]
