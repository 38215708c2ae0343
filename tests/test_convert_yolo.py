"""convert.py yolo: COCO -> Ultralytics YOLO-seg dataset (no Ultralytics needed to test it)."""

import json
import os

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from grape_instances.convert.yolo import (
    CROWD,
    MULTI_PART,
    category_ids,
    convert_yolo,
    join_parts,
    label_path,
)
from grape_instances.core.masks import mask_iou, mask_to_rle, rasterize_polygons
from tests.helpers import assert_user_error, run_tool, tree_bytes

H, W = 48, 64


def fill(ring: np.ndarray, height: int, width: int) -> np.ndarray:
    """What Ultralytics does with a label polygon (OpenCV's fillPoly, pixel centres)."""
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.round(ring).astype(np.int32)], 1)
    return mask > 0


def read_labels(path) -> list[tuple[int, np.ndarray]]:
    out = []
    for line in path.read_text().splitlines():
        values = line.split()
        out.append((int(values[0]), np.array(values[1:], float).reshape(-1, 2)))
    return out


def two_part_mask() -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[5:20, 5:20] = True
    m[25:40, 30:50] = True  # the same bunch beyond a leaf
    return m


def small_dataset(root):
    """Two photos (train / val), categories with ids 7 (grape) and 3 (leaf): a polygon, a
    two-part RLE bunch and a crowd region."""
    (root / "photos" / "sub").mkdir(parents=True)
    for name in ("a.png", "sub/b.png"):
        Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(root / "photos" / name)
    cats = [{"id": 7, "name": "bunch"}, {"id": 3, "name": "leaf"}]
    square = [[10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]]
    train = {"images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
             "annotations": [
                 {"id": 1, "image_id": 1, "category_id": 7, "segmentation": square,
                  "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
                 {"id": 2, "image_id": 1, "category_id": 3,
                  "segmentation": mask_to_rle(two_part_mask()), "bbox": [5, 5, 45, 35],
                  "area": 525, "iscrowd": 0},
                 {"id": 3, "image_id": 1, "category_id": 7, "segmentation": square,
                  "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 1}],
             "categories": cats}
    val = {"images": [{"id": 5, "file_name": "sub/b.png", "height": H, "width": W}],
           "annotations": [], "categories": cats}
    (root / "train.json").write_text(json.dumps(train))
    (root / "val.json").write_text(json.dumps(val))
    return train, val


def test_joined_parts_fill_their_union():
    a = np.array([[0, 0], [20, 0], [20, 20], [0, 20]])
    b = np.array([[40, 30], [60, 30], [60, 45], [40, 45]])
    c = np.array([[5, 35], [12, 35], [12, 44], [5, 44]])
    union = fill(a, 50, 70) | fill(b, 50, 70) | fill(c, 50, 70)
    ring = join_parts([b, a, c])
    filled = fill(ring, 50, 70)
    # OpenCV fills every part and draws the two bridges (about 22 + 16 px long) as lines
    assert not (union & ~filled).any()
    assert (filled & ~union).sum() <= 38
    # pycocotools fills exactly the union: a bridge there and back encloses nothing
    parts = [rasterize_polygons([p], 50, 70) for p in (a, b, c)]
    assert mask_iou(rasterize_polygons([ring], 50, 70), parts[0] | parts[1] | parts[2]) == 1.0
    assert np.array_equal(join_parts([a]), a)


def test_round_trip_of_a_small_coco_file(tmp_path):
    train, _ = small_dataset(tmp_path)
    before = tree_bytes(tmp_path)
    out = tmp_path / "yolo"
    summary = convert_yolo(tmp_path / "train.json", tmp_path / "photos", out,
                           val_json=tmp_path / "val.json")
    assert tree_bytes(tmp_path / "photos") == {k[len("photos/"):]: v for k, v in before.items()
                                               if k.startswith("photos/")}
    assert summary.images == {"train": 1, "val": 1}
    assert summary.instances == {"train": 2, "val": 0}
    assert summary.warnings == {CROWD: 1, MULTI_PART: 1}
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["path"] == str(out.resolve())
    assert (data["train"], data["val"]) == ("images/train", "images/val")
    assert data["names"] == {0: "leaf", 1: "bunch"}  # ascending COCO id: 3, 7
    assert category_ids(train) == [3, 7]

    photo = out / "images" / "train" / "a.png"
    assert photo.is_symlink() and os.path.samefile(photo, tmp_path / "photos" / "a.png")
    assert label_path(photo) == out / "labels" / "train" / "a.txt"
    labels = read_labels(out / "labels" / "train" / "a.txt")
    assert [cls for cls, _ in labels] == [1, 0]  # one line per instance, crowd left out
    for _, xy in labels:
        assert xy.min() >= 0 and xy.max() <= 1
    pixels = [xy * [W, H] for _, xy in labels]
    square = np.zeros((H, W), bool)
    square[10:30, 10:30] = True
    assert mask_iou(fill(pixels[0], H, W), square) > 0.95
    assert mask_iou(fill(pixels[1], H, W), two_part_mask()) > 0.95  # both parts, one line
    # the val photo keeps its sub-folder; no bunch: an empty label file (a background photo)
    assert (out / "images" / "val" / "sub" / "b.png").is_symlink()
    assert (out / "labels" / "val" / "sub" / "b.txt").read_text() == ""

    convert_yolo(tmp_path / "train.json", tmp_path / "photos", tmp_path / "copied",
                 copy_images=True)
    copied = tmp_path / "copied" / "images" / "train" / "a.png"
    assert copied.is_file() and not copied.is_symlink()
    assert yaml.safe_load((tmp_path / "copied" / "data.yaml").read_text())["val"] == "images/train"


def test_a_size_that_disagrees_with_the_photo_is_refused(tmp_path):
    from grape_instances.core.errors import GrapeInputError

    _, val = small_dataset(tmp_path)
    val["images"][0]["width"] = 2 * W
    (tmp_path / "val.json").write_text(json.dumps(val))
    with pytest.raises(GrapeInputError, match="64 x 48 px but the JSON says 128 x 48"):
        convert_yolo(tmp_path / "val.json", tmp_path / "photos", tmp_path / "yolo")
    assert not (tmp_path / "yolo").exists()


def test_bad_input_is_one_line_and_nothing_written(tmp_path):
    small_dataset(tmp_path)
    (tmp_path / "photos" / "a.png").rename(tmp_path / "photos" / "gone.png")
    (tmp_path / "broken.json").write_text('{"images": [')
    (tmp_path / "exists").mkdir()
    before = tree_bytes(tmp_path)
    cases = [
        (["--train", tmp_path / "train.json", "--out-dir", tmp_path / "o1"], "image not found"),
        (["--train", tmp_path / "broken.json", "--out-dir", tmp_path / "o2"], "broken.json"),
        (["--train", tmp_path / "val.json", "--out-dir", tmp_path / "exists"],
         "already exists"),
    ]
    for argv, fragment in cases:
        proc = run_tool("convert.py", "yolo", *map(str, argv), "--images",
                        str(tmp_path / "photos"))
        assert_user_error(proc, fragment)
    assert tree_bytes(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["photos", "train.json", "val.json", "broken.json", "exists"])
