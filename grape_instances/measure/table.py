"""The three tables of tools/measure.py: per bunch, per image and per folder.

Written side by side, all or none (:func:`~grape_instances.core.fileio.atomic_outputs`):
``table.csv`` (one row per bunch), ``table_images.csv`` (one row per image),
``table_folders.csv`` (one row per folder: one vine or row) and ``table_images.json`` (the
image and folder rows, the overall totals and the warning counts). Empty cells mean "not
measured" (no depth reading, no weight model), never zero.

Totals of a metric field (``area_cm2``, ``weight_g``) sum the bunches that have it; the
``bunches_without_depth`` column says how many of the counted bunches they leave out.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from ..core.errors import GrapeInputError
from ..core.fileio import atomic_outputs
from .depth import METRIC_FIELDS

BUNCH_COLUMNS = ("image", "folder", "instance", "category", "score", "box_x", "box_y",
                 "box_w", "box_h", "area_px", "length_px", "width_px", "perimeter_px",
                 "compactness", "hsv_h_deg", "hsv_s", "hsv_v", "pieces", *METRIC_FIELDS,
                 "weight_g")
IMAGE_COLUMNS = ("image", "folder", "width", "height", "bunches", "area_px", "area_cm2",
                 "weight_g", "bunches_without_depth", "depth_file")
FOLDER_COLUMNS = ("folder", "images", "bunches", "bunches_per_image", "area_px", "area_cm2",
                  "weight_g", "bunches_without_depth")


def output_paths(out_csv: str | os.PathLike) -> dict[str, Path]:
    """``{"bunches", "images", "folders", "json"}`` paths beside ``out_csv``."""
    out = Path(out_csv)
    if out.suffix.lower() != ".csv":
        raise GrapeInputError(f"{out}: --out must be a .csv file (the per-bunch table)")
    return {"bunches": out, "images": out.with_name(f"{out.stem}_images.csv"),
            "folders": out.with_name(f"{out.stem}_folders.csv"),
            "json": out.with_name(f"{out.stem}_images.json")}


def _sum(values: Sequence[float | None], empty_is_zero: bool) -> float | None:
    present = [v for v in values if v is not None]
    if present:
        return float(sum(present))
    return 0.0 if empty_is_zero else None


def image_row(name: str, folder: str, shape: tuple[int, int], bunches: list[dict],
              depth_file: str | None, has_weight_model: bool) -> dict:
    """Count and totals of one image. No bunch at all totals 0 cm² when the image had
    depth and 0 g with a weight model; bunches none of which has the field leave it empty
    (not measured, which 0 would hide)."""
    return {
        "image": name, "folder": folder, "width": shape[1], "height": shape[0],
        "bunches": len(bunches),
        "area_px": int(sum(b["area_px"] for b in bunches)),
        "area_cm2": _sum([b.get("area_cm2") for b in bunches],
                         not bunches and depth_file is not None),
        "weight_g": _sum([b.get("weight_g") for b in bunches], not bunches and has_weight_model),
        "bunches_without_depth": sum(b.get("area_cm2") is None for b in bunches),
        "depth_file": depth_file,
    }


def folder_rows(images: list[dict]) -> list[dict]:
    """Per folder: images, bunches (and per image), and the sums of the image totals."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in images:
        groups[row["folder"]].append(row)
    return [total_row(rows, folder=folder) for folder, rows in sorted(groups.items())]


def total_row(images: list[dict], **first: str) -> dict:
    """The totals of a list of image rows (a folder, or everything)."""
    bunches = sum(r["bunches"] for r in images)
    return {
        **first, "images": len(images), "bunches": bunches,
        "bunches_per_image": bunches / len(images) if images else None,
        "area_px": sum(r["area_px"] for r in images),
        "area_cm2": _sum([r["area_cm2"] for r in images], False),
        "weight_g": _sum([r["weight_g"] for r in images], False),
        "bunches_without_depth": sum(r["bunches_without_depth"] for r in images),
    }


def format_cell(value: object) -> str:
    """Empty for None, integers as such, floats to 4 decimals without trailing zeros."""
    if value is None:
        return ""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


def _write_csv(f, columns: Sequence[str], rows: list[dict]) -> None:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([format_cell(row.get(c)) for c in columns])


def write_tables(out_csv: str | os.PathLike, bunches: list[dict], images: list[dict],
                 summary: dict, overwrite: bool = False) -> dict[str, Path]:
    """Write the four files together; returns their paths."""
    paths = output_paths(out_csv)
    folders = folder_rows(images)
    with atomic_outputs(list(paths.values()), overwrite=overwrite) as out:
        with out.open(paths["bunches"]) as f:
            _write_csv(f, BUNCH_COLUMNS, bunches)
        with out.open(paths["images"]) as f:
            _write_csv(f, IMAGE_COLUMNS, images)
        with out.open(paths["folders"]) as f:
            _write_csv(f, FOLDER_COLUMNS, folders)
        out.write_json(paths["json"], {**summary, "total": total_row(images),
                                       "folders": folders, "images": images},
                       indent=1, nan_as_null=True)
    return paths
