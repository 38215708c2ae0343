"""How well edge-detection auto-annotation (``convert.edges.auto_annotate``) recovers the exact
masks of synthetic one-bunch images: the numbers behind ``tools/benchmark.py --edges``."""

from __future__ import annotations

import time

import numpy as np

from ..convert.edges import EdgeParams, auto_annotate, detect_background
from ..core.masks import mask_iou
from ..synthetic.render import image_rng, one_bunch_config, render_scene


def edge_iou_benchmark(n: int, background: str, seed: int = 0, size: int = 384,
                       params: EdgeParams | None = None) -> dict:
    """Mean IoU of :func:`auto_annotate` against the exact masks of ``n`` synthetic one-bunch
    images (no occluding leaf) on a ``background`` ("black" or "natural") background.

    The pipeline is told nothing about the generator; ``auto`` detection is scored too.
    """
    params = params if params is not None else EdgeParams()
    if background not in ("black", "natural"):
        raise ValueError(f"background must be black or natural, got {background!r}")
    cfg = one_bunch_config(size, background)
    ious, detected, seconds = [], 0, 0.0
    for i in range(n):
        scene = render_scene(image_rng(seed, f"edges-{background}", i), cfg)
        truth = np.any(scene.masks, axis=0) if scene.masks else np.zeros((size, size), bool)
        start = time.perf_counter()
        result = auto_annotate(scene.image, background, params)
        seconds += time.perf_counter() - start
        ious.append(mask_iou(result.mask, truth))
        detected += detect_background(scene.image, params) == background
    arr = np.array(ious)
    return {"background": background, "images": n, "size": size, "seed": seed,
            "mean_iou": float(arr.mean()), "median_iou": float(np.median(arr)),
            "min_iou": float(arr.min()), "auto_background_accuracy": detected / n,
            "seconds_per_image": seconds / n}
