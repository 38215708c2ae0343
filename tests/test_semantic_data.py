"""The semantic view: label maps derived from COCO instances, cached by JSON content."""

import itertools
import json
import os

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from pycocotools.coco import COCO

from grape_instances.convert.coco import CocoBuilder
from grape_instances.core.config import is_semantic_model
from grape_instances.core.errors import GrapeInputError
from grape_instances.data.build import build_config
from grape_instances.data.datasets import register_coco_dataset
from grape_instances.data.semantic import semantic_view
from grape_instances.engine.trainer import Trainer

_names = itertools.count()


def unique_name(prefix: str) -> str:
    """Detectron2's catalogs are global: every test registers fresh names."""
    return f"{prefix}_{os.getpid()}_{next(_names)}"


def read_png(path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def box(h, w, y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


@pytest.fixture
def hand_dataset(tmp_path):
    """Two 12 x 16 images: overlapping bunches + a crowd region over one; and no bunch."""
    h, w = 12, 16
    images = tmp_path / "images"
    images.mkdir()
    builder = CocoBuilder(categories=["bunch"])
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(images / name), np.full((h, w, 3), 90, np.uint8))
    a = builder.add_image("a.png", h, w)
    builder.add_image("b.png", h, w)
    builder.add_annotation(a, mask=box(h, w, 1, 6, 1, 7))
    builder.add_annotation(a, mask=box(h, w, 4, 10, 5, 12))  # overlaps the first
    builder.add_annotation(a, mask=box(h, w, 8, 12, 10, 16), iscrowd=1)  # overlaps the second
    json_file = tmp_path / "instances.json"
    builder.write(json_file)
    name = unique_name("hand")
    register_coco_dataset(name, str(json_file), str(images))
    return {"name": name, "json": json_file, "cache": tmp_path / "cache", "h": h, "w": w}


def test_label_maps_are_the_union_of_instances_with_crowd_ignored(hand_dataset):
    d = hand_dataset
    view = semantic_view(d["name"], d["cache"], ignore_value=255)
    assert view == d["name"] + "_sem"
    meta = MetadataCatalog.get(view)
    assert meta.stuff_classes == ["background", "bunch"]
    assert meta.ignore_label == 255 and meta.evaluator_type == "sem_seg"
    records = DatasetCatalog.get(view)
    assert [os.path.basename(r["file_name"]) for r in records] == ["a.png", "b.png"]

    h, w = d["h"], d["w"]
    expected = np.zeros((h, w), np.uint8)
    expected[1:6, 1:7] = 1
    expected[4:10, 5:12] = 1
    expected[8:12, 10:16] = 255  # crowd wins over the bunch below it
    got = read_png(records[0]["sem_seg_file_name"])
    assert got.dtype == np.uint8 and got.shape == (h, w)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(read_png(records[1]["sem_seg_file_name"]), 0)
    assert "annotations" not in records[0]


def test_synthetic_label_maps_equal_pycocotools_union(tiny_synth, tmp_path):
    json_file = tiny_synth / "annotations" / "instances_val.json"
    name = unique_name("synth_val")
    register_coco_dataset(name, str(json_file), str(tiny_synth / "images" / "val"))
    records = DatasetCatalog.get(semantic_view(name, tmp_path / "cache"))
    coco = COCO(str(json_file))
    assert len(records) == len(coco.getImgIds()) > 0
    for record in records:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[record["image_id"]]))
        assert anns and not any(a["iscrowd"] for a in anns)
        union = np.zeros((record["height"], record["width"]), bool)
        for ann in anns:
            union |= coco.annToMask(ann).astype(bool)
        np.testing.assert_array_equal(read_png(record["sem_seg_file_name"]), union.astype(np.uint8))


def test_cache_is_reused_for_the_same_json_and_regenerated_when_it_changes(hand_dataset):
    d = hand_dataset
    view = semantic_view(d["name"], d["cache"])
    first = DatasetCatalog.get(view)
    png = first[0]["sem_seg_file_name"]
    stamp = os.stat(png).st_mtime_ns, os.stat(png).st_ino
    again = DatasetCatalog.get(view)
    assert [r["sem_seg_file_name"] for r in again] == [r["sem_seg_file_name"] for r in first]
    assert (os.stat(png).st_mtime_ns, os.stat(png).st_ino) == stamp  # not rewritten
    assert len(list(d["cache"].iterdir())) == 1

    data = json.loads(d["json"].read_text())
    data["annotations"] = [a for a in data["annotations"] if a["iscrowd"] == 0][:1]
    d["json"].write_text(json.dumps(data))
    changed = DatasetCatalog.get(view)
    new_png = changed[0]["sem_seg_file_name"]
    assert os.path.dirname(new_png) != os.path.dirname(png)
    assert len(list(d["cache"].iterdir())) == 2
    expected = np.zeros((d["h"], d["w"]), np.uint8)
    expected[1:6, 1:7] = 1
    np.testing.assert_array_equal(read_png(new_png), expected)
    # A deleted PNG of an unchanged JSON is written again.
    os.unlink(new_png)
    np.testing.assert_array_equal(read_png(DatasetCatalog.get(view)[0]["sem_seg_file_name"]),
                                  expected)


def test_semantic_view_registration_is_idempotent_and_checked(hand_dataset, tmp_path):
    d = hand_dataset
    view = semantic_view(d["name"], d["cache"])
    assert semantic_view(d["name"], d["cache"]) == view
    # A later run with its own cache (OUTPUT_DIR/semantic_cache) follows it; another ignore
    # value would label the same pixels differently: refused.
    assert semantic_view(d["name"], tmp_path / "elsewhere") == view
    assert MetadataCatalog.get(view).semantic_cache_root == str(tmp_path / "elsewhere")
    assert DatasetCatalog.get(view)[0]["sem_seg_file_name"].startswith(str(tmp_path / "elsewhere"))
    with pytest.raises(GrapeInputError, match="already registered with ignore value"):
        semantic_view(d["name"], tmp_path / "elsewhere", ignore_value=254)
    with pytest.raises(GrapeInputError, match="unknown dataset"):
        semantic_view(unique_name("nobody"), d["cache"])
    with pytest.raises(GrapeInputError, match="uint8"):
        semantic_view(unique_name("any"), d["cache"], ignore_value=300)


def test_missing_json_is_a_user_error(hand_dataset):
    d = hand_dataset
    view = semantic_view(d["name"], d["cache"])
    os.unlink(d["json"])
    with pytest.raises(GrapeInputError, match="not found"):
        DatasetCatalog.get(view)


SEMANTIC_CONFIGS = [
    "configs/semantic/segnet_grapes_cpu_demo.yaml",
    "configs/semantic/pspnet_r50_grapes_cpu_demo.yaml",
    "configs/semantic/unet_vgg16_grapes_cpu_demo.yaml",
    "configs/semantic/fcn8s_grapes_cpu_demo.yaml",
]


def test_semantic_models_are_recognised():
    import grape_instances.modeling  # noqa: F401

    for config in SEMANTIC_CONFIGS:
        assert is_semantic_model(build_config(config)), config
    assert not is_semantic_model(build_config("configs/mask_rcnn_grapes_cpu_demo.yaml"))


def test_semantic_train_loader_yields_augmented_label_maps(tiny_synth, tmp_path):
    """Semantic models read the view's records through the project's mapper: label maps
    resized with the image, no instances."""
    cfg = build_config(SEMANTIC_CONFIGS[0], [
        "DATASETS.SYNTHETIC_ROOT", str(tiny_synth),
        "DATASETS.SEMANTIC_CACHE_DIR", str(tmp_path / "cache"),
        "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "200",
        "SOLVER.IMS_PER_BATCH", "3", "DATALOADER.NUM_WORKERS", "0",
    ])
    from grape_instances.data.datasets import register_from_config

    register_from_config(cfg)
    batch = next(iter(Trainer.build_train_loader(cfg)))
    assert len(batch) == 3
    for item in batch:
        assert "instances" not in item
        assert item["image"].shape[1:] == (96, 96)  # 128 px images resized to 96
        assert item["sem_seg"].shape == (96, 96)
        assert set(item["sem_seg"].unique().tolist()) <= {0, 1, 255}
        assert (item["sem_seg"] == 1).any()  # every synthetic image holds a bunch
