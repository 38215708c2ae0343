"""Hand-made images, masks and depth with known geometry, for the measure / weight tests."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

from grape_instances.core.masks import mask_to_rle

#: Focal length (px) of the test scenes: at 500 mm one pixel is 1 mm.
F = 500.0
DENSITY = 1.05  # g / cm3


def ellipse_mask(shape, centre, a, b, angle_deg=0.0) -> np.ndarray:
    """Pixels whose centres lie inside the ellipse (semi-axes a along angle, b across)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]] + 0.5
    t = math.radians(angle_deg)
    u = (xx - centre[0]) * math.cos(t) + (yy - centre[1]) * math.sin(t)
    v = -(xx - centre[0]) * math.sin(t) + (yy - centre[1]) * math.cos(t)
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def write_scene(root: Path, images: dict[str, list[dict]], size=(96, 128),
                background_mm: int = 1500) -> dict:
    """Write ``root/images/<name>`` (PNG), ``root/depth/<name stem>.png`` (16-bit mm) and
    ``root/masks.json`` (COCO, RLE). ``images``: name -> bunches, each ``{centre, a, b,
    angle, z_mm, color (BGR), no_depth}``. Returns the truth per image: metric spheroid
    volume (cm3) and weight (g) of each bunch."""
    h, w = size
    coco = {"images": [], "annotations": [],
            "categories": [{"id": 1, "name": "bunch"}]}
    truth = {}
    for image_id, (name, bunches) in enumerate(images.items(), start=1):
        rgb = np.full((h, w, 3), (40, 120, 60), np.uint8)
        depth = np.full((h, w), background_mm, np.uint16)
        coco["images"].append({"id": image_id, "file_name": name, "height": h, "width": w})
        truth[name] = []
        for b in bunches:
            mask = ellipse_mask((h, w), b["centre"], b["a"], b["b"], b.get("angle", 0.0))
            rgb[mask] = b.get("color", (90, 30, 120))
            depth[mask] = 0 if b.get("no_depth") else b["z_mm"]
            coco["annotations"].append({
                "id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": 1,
                "segmentation": mask_to_rle(mask), "iscrowd": 0,
                "area": int(mask.sum()), "bbox": list(cv2.boundingRect(mask.astype(np.uint8))),
            })
            s = b["z_mm"] / F / 10  # cm per pixel
            volume = 4 / 3 * math.pi * (b["a"] * s) * (b["b"] * s) ** 2
            truth[name].append({"volume_cm3": volume, "weight_g": DENSITY * 0.6 * volume})
        path = root / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), rgb)
        dpath = root / "depth" / Path(name).with_suffix(".png")
        dpath.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(dpath), depth)
    (root / "masks.json").write_text(json.dumps(coco))
    return truth


def read_csv(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))
