"""The scaled training cache (data.scaled_cache) and the crop fixes of the real-photo recipe:
cached polygons are the full-resolution masks, the cache follows its sources, crops clip
polygons and reach every corner, and cut bunches are not taught (INPUT.SCALE_CROP.MIN_VISIBLE).
"""

import os
import time
from pathlib import Path

import cv2
import detectron2.data.transforms as T
import numpy as np
import pytest
from detectron2.structures import BoxMode
from PIL import Image
from pycocotools import mask as mask_utils

from grape_instances.core.masks import mask_to_rle
from grape_instances.data.build import build_config
from grape_instances.data.mappers import SkipUndecodableMapper, visible_fractions
from grape_instances.data.scaled_cache import (
    FixedSizeCropAnywhere,
    PolygonCropTransform,
    cache_size,
    mask_to_polygons,
    scaled_training_records,
)
from tests.helpers import REAL_DATA as REAL

PHOTOS = ["CDY_2017", "SYH_2017-04-27_1236"]
TARGET, MAX_SCALE = (1024, 1024), 1.25


def rasterise(polygons, height, width) -> np.ndarray:
    flat = [np.asarray(p, np.float64).ravel().tolist() for p in polygons]
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(flat, height, width))) > 0


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def record_from_masks(image_path, masks: np.ndarray) -> dict:
    """A Detectron2 record with one RLE annotation per H x W x N mask channel (WGISD npz)."""
    height, width = masks.shape[:2]
    annotations = []
    for i in range(masks.shape[2]):
        rle = mask_to_rle(masks[:, :, i])
        box = mask_utils.toBbox({**rle, "counts": rle["counts"].encode()}).tolist()
        annotations.append({"segmentation": rle, "bbox": box, "bbox_mode": BoxMode.XYWH_ABS,
                            "category_id": 0, "iscrowd": 0})
    return {"file_name": str(image_path), "height": height, "width": width, "image_id": 0,
            "annotations": annotations}


@pytest.mark.shared("real-data/wgisd-train")
@pytest.mark.parametrize("stem", PHOTOS)
def test_cached_masks_and_boxes_are_the_full_resolution_ones(tmp_path, stem):
    masks = np.load(REAL / "data" / f"{stem}.npz")["arr_0"]
    record = record_from_masks(REAL / "data" / f"{stem}.jpg", masks)
    (cached,) = scaled_training_records([record], tmp_path, TARGET, MAX_SCALE)
    height, width = record["height"], record["width"]
    assert (cached["height"], cached["width"]) == cache_size(height, width, TARGET, MAX_SCALE)
    assert cached["width"] == 1280  # 1024 x 1.25: the jitter never upsamples the copy
    with Image.open(cached["file_name"]) as img:
        assert img.size == (cached["width"], cached["height"])
    sx, sy = cached["width"] / width, cached["height"] / height
    assert len(cached["annotations"]) == masks.shape[2]
    for i, (ann, full) in enumerate(zip(cached["annotations"], record["annotations"],
                                        strict=True)):
        mask = masks[:, :, i]
        # the same shape: the polygons, back at full resolution, are the mask (per bunch)
        back = [np.asarray(p).reshape(-1, 2) / (sx, sy) for p in ann["segmentation"]]
        assert iou(rasterise(back, height, width), mask) >= 0.98, i
        # the same box, scaled
        np.testing.assert_allclose(np.asarray(ann["bbox"]) / (sx, sy, sx, sy), full["bbox"],
                                   atol=1e-3)
    # at the working scale the rasterised polygons are the area-resampled masks (grid effects
    # at a bunch's 1-px edge aside)
    ious = []
    for i, ann in enumerate(cached["annotations"]):
        shrunk = cv2.resize(masks[:, :, i].astype(np.float32), (cached["width"],
                            cached["height"]), interpolation=cv2.INTER_AREA) >= 0.5
        ious.append(iou(rasterise(ann["segmentation"], cached["height"], cached["width"]),
                        shrunk))
    assert np.mean(ious) >= 0.98 and min(ious) >= 0.95, ious


def write_photo(path: Path, size=(120, 80)) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), np.uint8)).save(path)


def blob_record(path: Path) -> dict:
    mask = np.zeros((80, 120, 1), np.uint8)
    mask[10:50, 20:60, 0] = 1
    mask[30:40, 30:50, 0] = 0  # a hole: filled in the cached polygon
    return record_from_masks(path, mask)


def test_cache_is_reused_and_rebuilt_when_the_photo_changes(tmp_path):
    photo = tmp_path / "photo.jpg"
    write_photo(photo)
    cache = tmp_path / "cache"
    record = blob_record(photo)
    (first,) = scaled_training_records([record], cache, (40, 40), 1.0)
    assert (first["height"], first["width"]) == (27, 40)  # fitted into 40 x 40
    assert first["source_file_name"] == str(photo)
    built = os.stat(first["file_name"]).st_mtime_ns
    (again,) = scaled_training_records([record], cache, (40, 40), 1.0)
    assert again["file_name"] == first["file_name"]
    assert os.stat(again["file_name"]).st_mtime_ns == built  # reused, not written again
    time.sleep(0.01)
    write_photo(photo, size=(120, 80))
    os.utime(photo, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new mtime
    (rebuilt,) = scaled_training_records([record], cache, (40, 40), 1.0)
    assert rebuilt["file_name"] != first["file_name"]
    changed = dict(record, annotations=[dict(record["annotations"][0], category_id=1)])
    (other,) = scaled_training_records([changed], cache, (40, 40), 1.0)
    assert other["file_name"] != rebuilt["file_name"]


def test_undecodable_photo_keeps_its_record(tmp_path):
    photo = tmp_path / "cut.jpg"
    write_photo(tmp_path / "whole.jpg")
    photo.write_bytes((tmp_path / "whole.jpg").read_bytes()[:200])
    record = blob_record(photo)
    (out,) = scaled_training_records([record], tmp_path / "cache", (40, 40), 1.0)
    assert out is record


def test_polygon_crop_clips_like_the_rasterised_mask():
    mask = np.zeros((60, 60), np.uint8)
    mask[5:55, 10:20] = 1  # a U: concave, cut into two pieces by the window below
    mask[45:55, 10:50] = 1
    mask[5:55, 40:50] = 1
    polygons = [np.asarray(p).reshape(-1, 2) for p in mask_to_polygons(mask)]
    crop = PolygonCropTransform(5, 0, 50, 30, 60, 60)
    clipped = crop.apply_polygons(polygons)
    assert iou(rasterise(clipped, 30, 50), mask[0:30, 5:55].astype(bool)) >= 0.99
    assert crop.apply_polygons([np.array([[0, 40], [4, 40], [4, 50]], float)]) == []


def test_crops_reach_every_corner():
    aug = FixedSizeCropAnywhere((10, 10), pad=False)
    image = np.zeros((100, 100, 3), np.uint8)
    np.random.seed(0)
    offsets = np.array([[t.x0, t.y0] for t in (aug.get_transform(image).transforms[0]
                                               for _ in range(200))])
    # Detectron2's FixedSizeCrop draws one number for both axes: x0 == y0 always
    assert (offsets[:, 0] != offsets[:, 1]).mean() > 0.9
    assert ((offsets[:, 0] > 60) & (offsets[:, 1] < 30)).any()  # the top-right corner


def test_bunches_the_window_cuts_are_not_taught():
    polygons = [
        [20, 20, 40, 20, 40, 40, 20, 40],  # wholly inside the window
        [60, 20, 120, 20, 120, 40, 60, 40],  # a third inside
        [10, 60, 110, 60, 110, 70, 10, 70],  # 70 % inside
    ]
    annotations = [{"segmentation": [p], "bbox": [min(p[::2]), min(p[1::2]),
                    max(p[::2]) - min(p[::2]), max(p[1::2]) - min(p[1::2])],
                    "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 0}
                   for p in polygons]
    record = {"file_name": "x.jpg", "height": 100, "width": 200, "annotations": annotations}
    # the photo halved, then a 40 x 40 window at its top left
    transforms = T.TransformList([T.ResizeTransform(100, 200, 50, 100),
                                  PolygonCropTransform(0, 0, 40, 40, 100, 50)])
    fractions = visible_fractions(annotations, transforms, 100, 200, (40, 40))
    np.testing.assert_allclose(fractions, [1.0, 1 / 3, 0.7], atol=1e-6)

    cfg = build_config("configs/mask_rcnn_grapes_cpu_real_plain.yaml")
    assert cfg.INPUT.SCALE_CROP.MIN_VISIBLE == 0.5 and cfg.INPUT.MASK_FORMAT == "polygon"
    mapper = SkipUndecodableMapper(cfg, True, augmentations=[], min_visible=0.5)
    for min_visible, expected in ((0.5, 2), (0.0, 3)):
        mapper.min_visible = min_visible
        mapped = dict(record, annotations=[dict(a) for a in annotations])
        mapper._transform_annotations(mapped, transforms, (40, 40))
        assert len(mapped["instances"]) == expected, min_visible
