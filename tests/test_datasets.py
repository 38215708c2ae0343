"""Dataset registration: synthetic splits by fixed names, any COCO set via DATASETS.REGISTER."""

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from grape_instances.core.errors import GrapeInputError
from grape_instances.data.build import build_config
from grape_instances.data.datasets import check_datasets_exist, register_from_config
from tests.helpers import DEMO_CONFIG


def test_synthetic_and_user_datasets_register_from_config(tiny_synth):
    user_json = tiny_synth / "annotations" / "instances_val.json"
    user_images = tiny_synth / "images" / "val"
    cfg = build_config(DEMO_CONFIG, [
        "DATASETS.SYNTHETIC_ROOT", str(tiny_synth),
        "DATASETS.REGISTER", f"[['my_vineyard', '{user_json}', '{user_images}']]",
    ])
    register_from_config(cfg)
    register_from_config(cfg)  # registering the same files twice is harmless

    train = DatasetCatalog.get("grapes_synth_train")
    assert len(train) == 8
    assert all(r["annotations"] and r["file_name"].endswith(".jpg") for r in train)
    assert MetadataCatalog.get("grapes_synth_train").thing_classes == ["bunch"]

    mine = DatasetCatalog.get("my_vineyard")
    assert len(mine) == 4
    assert {r["file_name"] for r in mine} == {str(p) for p in user_images.glob("*.jpg")}
    assert MetadataCatalog.get("my_vineyard").thing_classes == ["bunch"]
    check_datasets_exist(["my_vineyard", "grapes_synth_val"])


def test_unknown_and_missing_datasets_are_user_errors(tmp_path):
    with pytest.raises(GrapeInputError, match="unknown dataset 'nobody_registered_me'"):
        check_datasets_exist(["nobody_registered_me"])
    cfg = build_config(DEMO_CONFIG, [
        "DATASETS.SYNTHETIC_ROOT", str(tmp_path / "absent"),
        "DATASETS.REGISTER", f"[['ghost_set', '{tmp_path / 'ghost.json'}', '{tmp_path}']]",
    ])
    register_from_config(cfg)
    with pytest.raises(GrapeInputError, match="ghost.json not found"):
        check_datasets_exist(["ghost_set"])


def test_register_entry_must_be_a_triple():
    cfg = build_config(DEMO_CONFIG, ["DATASETS.REGISTER", "[['only_a_name']]"])
    with pytest.raises(GrapeInputError, match="name, coco_json, image_root"):
        register_from_config(cfg)


def test_augmentations_follow_the_config():
    import detectron2.data.transforms as T

    from grape_instances.data.mappers import build_grape_augmentation

    cfg = build_config(DEMO_CONFIG, ["INPUT.VERTICAL_FLIP", "True"])
    train = build_grape_augmentation(cfg, is_train=True)
    kinds = [type(a) for a in train]
    assert T.ResizeShortestEdge in kinds
    assert {T.RandomBrightness, T.RandomContrast} <= set(kinds)
    assert sum(isinstance(a, T.RandomSaturation) for a in train) == 1
    assert sum(isinstance(a, T.RandomFlip) for a in train) == 2
    test = build_grape_augmentation(cfg, is_train=False)
    assert [type(a) for a in test] == [T.ResizeShortestEdge]


def test_scale_crop_trains_on_fixed_size_windows_of_the_test_scale():
    """The real-photo recipe: ResizeScale + a fixed-size crop drawn anywhere (no padding;
    Detectron2's FixedSizeCrop keeps to the diagonal) replace the
    shortest-edge resize in training; test time keeps the shortest-edge resize."""
    import detectron2.data.transforms as T
    import numpy as np

    from grape_instances.data.mappers import build_grape_augmentation
    from grape_instances.data.scaled_cache import FixedSizeCropAnywhere

    cfg = build_config("configs/mask_rcnn_grapes_cpu_real.yaml", [])
    train = build_grape_augmentation(cfg, is_train=True)
    kinds = [type(a) for a in train]
    assert kinds[:2] == [T.ResizeScale, FixedSizeCropAnywhere] and T.ResizeShortestEdge not in kinds
    photo = np.zeros((1365, 2048, 3), np.uint8)
    for _ in range(5):
        aug_input = T.AugInput(photo.copy())
        T.AugmentationList(train[:2])(aug_input)
        assert aug_input.image.shape[:2] == tuple(cfg.INPUT.SCALE_CROP.CROP_SIZE)
    test = build_grape_augmentation(cfg, is_train=False)
    assert [type(a) for a in test] == [T.ResizeShortestEdge]
    resized = test[0].get_transform(photo).apply_image(photo)
    assert resized.shape[:2] == (683, 1024)


def test_saturation_jitter_takes_grey_from_bgr_channels():
    """Pure blue in BGR has luma 0.114 * 255 = 29; RGB weights would give 0.299 * 255 = 76."""
    import detectron2.data.transforms as T
    import numpy as np

    from grape_instances.data.mappers import build_grape_augmentation

    cfg = build_config(DEMO_CONFIG, ["INPUT.SATURATION", "(0.0, 0.0)", "INPUT.FORMAT", "BGR"])
    saturation = [a for a in build_grape_augmentation(cfg, True)
                  if isinstance(a, T.RandomSaturation)]
    assert len(saturation) == 1
    blue = np.zeros((4, 4, 3), np.float32)
    blue[..., 0] = 255.0
    grey = saturation[0].get_transform(blue).apply_image(blue.copy())
    assert np.allclose(grey, 0.114 * 255, atol=0.5)
