"""Converter speed and memory: VIA polygons -> COCO RLE at 1024 px (``make bench`` row).

Builds N synthetic VIA 2 records (1024 x 1024 images, a few polygon bunches each; one
small JPEG copied N times, since sizes are read from headers and pixels never decoded),
converts them with :func:`grape_instances.data.via.convert_via` and reports images per
second and memory. Memory is measured with ``tracemalloc`` in a second, separate run (it
slows Python down): ``input_mb`` is the peak of parsing the VIA JSON alone (its text and
the parsed objects), ``peak_mb`` the peak of
the whole conversion, ``extra_mb`` their difference, which must not grow with N because
annotations are streamed to disk and no decoded mask is kept.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..convert.via import (
    convert_via,
    via2_dropdown,
    via2_image,
    via2_polygon_region,
    via2_project,
)
from ..core.fileio import read_json, write_json_atomic

IMAGE_SIZE = 1024
BUNCHES_PER_IMAGE = 4
VERTICES_PER_POLYGON = 80

CONVERTER_COLUMNS = [
    ("name", "converter", "s"), ("images", "images", "d"), ("seconds", "seconds", ".2f"),
    ("images_per_s", "img/s", ".0f"), ("input_mb", "parsed input (MB)", ".1f"),
    ("peak_mb", "peak (MB)", ".1f"), ("extra_mb", "peak - input (MB)", ".1f"),
]


def _bunch_polygon(rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """A wobbly ellipse inside the image, like a hand-drawn bunch outline."""
    cx, cy = rng.uniform(150, IMAGE_SIZE - 150, 2)
    rx, ry = rng.uniform(60, 140, 2)
    t = np.linspace(0, 2 * math.pi, VERTICES_PER_POLYGON, endpoint=False)
    r = 1 + 0.08 * rng.standard_normal(VERTICES_PER_POLYGON)
    return (np.round(cx + rx * r * np.cos(t)).astype(int).tolist(),
            np.round(cy + ry * r * np.sin(t)).astype(int).tolist())


def build_via_dataset(folder: Path, count: int, seed: int = 0) -> tuple[Path, Path]:
    """Write ``count`` 1024 px JPEGs and a VIA 2 project of polygon bunches for them."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    ok, jpg = cv2.imencode(".jpg", np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 90, np.uint8),
                           [cv2.IMWRITE_JPEG_QUALITY, 10])
    assert ok
    template = images / "template.jpg"
    template.write_bytes(jpg.tobytes())
    rng = np.random.default_rng(seed)
    metadata = {}
    for i in range(count):
        name = f"img_{i:06d}.jpg"
        shutil.copyfile(template, images / name)
        regions = [via2_polygon_region(np.column_stack(_bunch_polygon(rng)),
                                       {"name": "bunch", "instance": str(b + 1)})
                   for b in range(BUNCHES_PER_IMAGE)]
        key, record = via2_image(name, jpg.size, regions)
        metadata[key] = record
    template.unlink()
    via = folder / "via_project.json"
    write_json_atomic(via, via2_project(metadata, "convert benchmark", str(images) + os.sep,
                                        {"name": via2_dropdown("class", ["bunch"])}))
    return via, images


def benchmark_via(count: int, workdir: Path) -> dict:
    """One row: convert ``count`` images twice (timed, then under tracemalloc)."""
    via, images = build_via_dataset(workdir / f"n{count}", count)
    quiet = logging.getLogger("grape_instances.data.via")
    level, quiet.level = quiet.level, logging.WARNING
    try:
        start = time.perf_counter()
        convert_via(via, images, workdir / f"out_{count}.json", overwrite=True)
        seconds = time.perf_counter() - start

        tracemalloc.start()
        parsed = read_json(via)  # peak: the file's text and the parsed objects together
        input_bytes = tracemalloc.get_traced_memory()[1]
        del parsed
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        convert_via(via, images, workdir / f"out_{count}.json", overwrite=True)
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    finally:
        quiet.level = level
    mb = 1024 * 1024
    return {
        "name": f"VIA polygons -> COCO RLE ({IMAGE_SIZE} px, {BUNCHES_PER_IMAGE} bunches/img)",
        "images": count, "seconds": seconds, "images_per_s": count / seconds,
        "input_mb": input_bytes / mb, "peak_mb": peak / mb, "extra_mb": (peak - input_bytes) / mb,
    }


def run_converter_benchmark(counts: Sequence[int] = (1000, 5000)) -> list[dict]:
    """Rows with keys name, images, seconds, images_per_s, input_mb, peak_mb, extra_mb."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="grape_convert_bench_") as tmp:
        for count in counts:
            rows.append(benchmark_via(count, Path(tmp)))
            shutil.rmtree(Path(tmp) / f"n{count}")
    return rows


def simplify_benchmark(npz_files: Sequence[str | os.PathLike],
                       fractions: Sequence[float] = (0.0, 0.01, 0.015)) -> list[dict]:
    """Vertices per bunch and mask IoU against the exact outline, for polygon tolerances
    given as fractions of the bunch size (``from-predictions --simplify``), on WGISD's
    full-resolution per-bunch masks (``.npz``, H x W x N): where the default comes from."""
    from ..core.masks import mask_iou, rasterize_polygons
    from ..core.polygons import MIN_COMPONENT_AREA, mask_to_polygons

    stats: dict[float, list[tuple[int, float]]] = {f: [] for f in fractions}
    for path in npz_files:
        masks = np.load(path)["arr_0"]
        h, w, _ = masks.shape
        for i in range(masks.shape[2]):
            mask = masks[:, :, i].astype(np.uint8)
            if mask.sum() < 100:
                continue
            exact = rasterize_polygons(mask_to_polygons(mask, "edges", 0, MIN_COMPONENT_AREA), h, w)
            for fraction in fractions:
                tolerance = fraction * float(np.sqrt(mask.sum()))
                polygons = mask_to_polygons(mask, "edges", tolerance, MIN_COMPONENT_AREA)
                iou = mask_iou(rasterize_polygons(polygons, h, w), exact)
                stats[fraction].append((sum(len(p) for p in polygons), iou))
    rows = []
    for fraction, values in stats.items():
        vertices = np.array([v for v, _ in values])
        ious = np.array([i for _, i in values])
        rows.append({"simplify": fraction, "bunches": len(values),
                     "vertices_median": float(np.median(vertices)),
                     "vertices_max": int(vertices.max()),
                     "iou_mean": float(ious.mean()), "iou_min": float(ious.min())})
    return rows
