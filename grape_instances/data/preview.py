"""Pictures of what the model is taught: training images exactly as the training mapper
makes them (scaled cache, crop, flips, jitter, cut bunches dropped, copy-paste), with each
target instance's outline drawn (``tools/training_crops.py``)."""

from __future__ import annotations

import os
import time

import cv2
import numpy as np
from detectron2.data import detection_utils as utils
from detectron2.structures import BitMasks, polygons_to_bitmask
from detectron2.utils.env import seed_all_rng

from ..core.config import is_semantic_model
from ..core.errors import GrapeInputError
from ..core.fileio import atomic_open, replacing_folder
from .build import load_dataset_dicts
from .datasets import register_from_config
from .mappers import build_grape_mapper
from .scaled_cache import training_records_for_config

#: Outline colours (BGR): the image's own bunches, and bunches pasted by copy-paste.
OWN_COLOUR = (80, 220, 80)
PASTED_COLOUR = (230, 60, 230)


def instance_masks(instances) -> list[np.ndarray]:
    """H x W bool masks of a mapped image's target instances (polygons rasterised)."""
    if not len(instances) or not instances.has("gt_masks"):
        return []
    masks = instances.gt_masks
    if isinstance(masks, BitMasks):
        return list(masks.tensor.numpy().astype(bool))
    h, w = instances.image_size
    return [polygons_to_bitmask(p, h, w) for p in masks.polygons]


def draw_targets(image_bgr: np.ndarray, instances, pasted: int = 0) -> np.ndarray:
    """``image_bgr`` with each instance's mask outline and box; the last ``pasted`` ones
    (copy-paste's) in their own colour."""
    out = np.ascontiguousarray(image_bgr).copy()
    masks = instance_masks(instances)
    boxes = instances.gt_boxes.tensor.numpy() if len(instances) else np.zeros((0, 4))
    first_pasted = len(instances) - pasted
    for i, box in enumerate(boxes):
        colour = PASTED_COLOUR if i >= first_pasted else OWN_COLOUR
        if i < len(masks):
            contours, _ = cv2.findContours(masks[i].astype(np.uint8), cv2.RETR_EXTERNAL,
                                           cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(out, contours, -1, colour, 2)
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), colour, 1)
    return out


def training_mapper(cfg):
    """(the training mapper of ``cfg``, the training records it maps), as the Trainer's
    loader builds them (scaled cache included)."""
    if is_semantic_model(cfg):
        raise GrapeInputError("training crops are drawn for instance models only "
                              f"(MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE})")
    register_from_config(cfg)
    records = training_records_for_config(
        cfg, load_dataset_dicts(cfg.DATASETS.TRAIN, True, cfg))
    return build_grape_mapper(cfg, is_train=True, records=records), records


def save_training_crops(cfg, output_dir: str | os.PathLike, count: int = 8, seed: int = 0
                        ) -> list[str]:
    """Map ``count`` training images of ``cfg`` (its DATASETS.TRAIN, random records, NumPy
    seeded with ``seed``) with the training mapper and write each, outlines drawn, as
    ``crop_NN.png`` into ``output_dir`` (replaced whole). Returns the files' names."""
    if count < 1:
        raise GrapeInputError(f"--count must be >= 1, got {count}")
    mapper, records = training_mapper(cfg)
    seed_all_rng(seed)
    written = []
    with replacing_folder(output_dir) as tmp:
        tries = 0
        while len(written) < count and tries < 4 * count:
            tries += 1
            mapped = mapper(records[np.random.randint(len(records))])
            if mapped is None:  # undecodable: the mapper warned
                continue
            image = mapped["image"].permute(1, 2, 0).numpy()
            bgr = utils.convert_image_to_rgb(image, cfg.INPUT.FORMAT)[:, :, ::-1]
            drawn = draw_targets(bgr, mapped["instances"], getattr(mapper, "last_pasted", 0))
            name = f"crop_{len(written):02d}.png"
            ok, data = cv2.imencode(".png", drawn)
            if not ok:
                raise GrapeInputError(f"{name}: cannot encode the picture")
            with atomic_open(os.path.join(tmp, name), "wb") as f:
                f.write(data.tobytes())
            written.append(name)
    return written


def time_mapper(cfg, count: int = 48, seed: int = 0, warmup: int = 4) -> dict:
    """CPU milliseconds of this process per training image the mapper makes (what a loader
    worker spends on it: decode, augment, masks, copy-paste), over ``count`` random records
    after ``warmup`` untimed ones; mean and median. Run it with OMP_NUM_THREADS=1, as loader
    workers run (Detectron2 sets their torch threads to 1)."""
    if count < 1:
        raise GrapeInputError(f"--time must be >= 1, got {count}")
    mapper, records = training_mapper(cfg)
    seed_all_rng(seed)
    times = []
    for i in range(warmup + count):
        record = records[np.random.randint(len(records))]
        t0 = time.process_time()
        mapper(record)
        if i >= warmup:
            times.append((time.process_time() - t0) * 1e3)
    return {"images": count, "cpu_ms_mean": float(np.mean(times)),
            "cpu_ms_median": float(np.median(times))}
