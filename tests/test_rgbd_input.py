"""RGB-D input: depth as a fourth channel of Mask R-CNN and the semantic baselines.

The mapper stacks the depth image and moves it with the photo (nearest-neighbour, aligned
with the masks), photometric jitter leaves it alone, the stems take 4 channels, RGB weights
load into their first 3 channels, and mistakes are one line.
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import detectron2.data.transforms as T
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from pycocotools import mask as mask_utils

import grape_instances.modeling  # noqa: F401  (registers the semantic baselines)
from grape_instances.checkpoint import GrapeCheckpointer
from grape_instances.core.config import add_grape_config
from grape_instances.core.depth import UndecodableDepthError, read_depth
from grape_instances.core.errors import GrapeInputError
from grape_instances.data.build import build_config
from grape_instances.data.datasets import register_coco_dataset
from grape_instances.data.depth import check_depth_config, check_depth_files, transform_depth
from grape_instances.data.mappers import RGBDMapper, build_grape_mapper
from grape_instances.data.semantic import semantic_view
from grape_instances.inference.predictor import Predictor
from grape_instances.inference.writers import visualize_files
from grape_instances.modeling.rgbd import RGBDCheckpointer
from grape_instances.modeling.vgg import (
    VGG16Encoder,
    load_torchvision_vgg16,
    torchvision_vgg16_key_map,
)
from tests.helpers import DEMO_CONFIG, REPO, run_tool, tiny_training_opts

RGBD_CONFIG = str(REPO / "configs" / "mask_rcnn_grapes_rgbd_cpu_demo.yaml")
UNET_CONFIG = str(REPO / "configs" / "semantic" / "unet_vgg16_grapes_cpu_demo.yaml")
RGBD_NORMALISATION = [
    "MODEL.PIXEL_MEAN", "[103.53, 116.28, 123.675, 1000.0]",
    "MODEL.PIXEL_STD", "[57.375, 57.12, 58.395, 500.0]",
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def depth_cfg(*opts: str):
    cfg = add_grape_config(get_cfg())
    cfg.merge_from_list([
        "INPUT.DEPTH.ENABLED", "True", *RGBD_NORMALISATION, "INPUT.MASK_FORMAT", "bitmask",
        "INPUT.RANDOM_FLIP", "none", "MODEL.DEVICE", "cpu", "MODEL.MASK_ON", "True", *opts,
    ])
    return cfg


def write_png16(path: Path, depth: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), depth.astype(np.uint16))
    return path


def rgbd_record(tmp_path: Path, image: np.ndarray, depth: np.ndarray, mask=None) -> dict:
    """A Detectron2 record of one BGR photo + depth PNG (+ one bunch with an RLE mask)."""
    h, w = image.shape[:2]
    cv2.imwrite(str(tmp_path / "photo.png"), image)
    record = {
        "file_name": str(tmp_path / "photo.png"), "height": h, "width": w, "image_id": 1,
        "depth_file_name": str(write_png16(tmp_path / "depth" / "photo.png", depth)),
        "annotations": [],
    }
    if mask is not None:
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        ys, xs = np.nonzero(mask)
        record["annotations"].append({
            "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1],
            "bbox_mode": 1, "category_id": 0, "iscrowd": 0,
            "segmentation": {"size": [h, w], "counts": rle["counts"].decode()},
        })
    return record


def gradient_scene(h: int = 24, w: int = 32):
    """B = 7 * column, G = 5 * row; depth = 500 + 20 * column + 3 * row, with holes (0)."""
    rows, cols = np.mgrid[:h, :w]
    image = np.stack([7 * cols, 5 * rows, np.full_like(cols, 100)], axis=2).astype(np.uint8)
    depth = (500 + 20 * cols + 3 * rows).astype(np.float32)
    depth[(rows + 2 * cols) % 7 == 0] = 0
    return image, depth


def bunch_scene(h: int = 40, w: int = 60, seed: int = 0):
    """A bunch (rectangle) at 800 mm before a 2000 mm background, ~10 % holes everywhere."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), bool)
    mask[10:29, 15:44] = True
    depth = np.where(mask, 800.0, 2000.0).astype(np.float32)
    depth[rng.random((h, w)) < 0.1] = 0
    return image, depth, mask


def test_flip_moves_depth_with_the_pixels(tmp_path):
    image, depth = gradient_scene()
    record = rgbd_record(tmp_path, image, depth)
    mapper = RGBDMapper(depth_cfg(), True, augmentations=[T.RandomFlip(prob=1.0)],
                        max_depth_mm=5000)
    out = mapper(record)["image"]
    assert out.shape == (4, 24, 32) and out.dtype == torch.float32
    blue, green, stacked = out[0], out[1], out[3]
    assert torch.equal(blue[:, 0], torch.full((24,), 7.0 * 31))  # the photo was flipped ...
    expected = 500 + 20 * (blue / 7) + 3 * (green / 5)  # ... and depth moved with its pixels
    valid = stacked > 0
    assert torch.allclose(stacked[valid], expected[valid])
    assert np.array_equal(stacked.numpy(), depth[:, ::-1])
    assert (~valid).sum() == (depth == 0).sum()


@pytest.mark.parametrize("short_side", [52, 27], ids=["upscale", "downscale"])
def test_resize_is_nearest_and_stays_aligned_with_the_masks(tmp_path, short_side):
    image, depth, mask = bunch_scene()
    record = rgbd_record(tmp_path, image, depth, mask)
    cfg = depth_cfg("INPUT.MIN_SIZE_TRAIN", f"({short_side},)", "INPUT.MAX_SIZE_TRAIN", "1000")
    out = build_grape_mapper(cfg, is_train=True)(record)
    h, w = short_side, int(short_side * 1.5 + 0.5)  # Detectron2 rounds halves up
    assert out["image"].shape == (4, h, w)
    resized = out["image"][3].numpy()
    # Nearest: every value is a real reading or a hole, none blended (a linear resize would
    # put readings between 0 and 800 or 800 and 2000 along every hole and edge).
    assert set(np.unique(resized)) == {0.0, 800.0, 2000.0}
    assert 0.05 < (resized == 0).mean() < 0.15
    # Exactly aligned with the resized mask Detectron2 made for the same bunch.
    gt = out["instances"].gt_masks.tensor[0].numpy()
    assert gt.shape == (h, w) and gt.any()
    assert set(np.unique(resized[gt])) <= {0.0, 800.0}
    assert set(np.unique(resized[~gt])) <= {0.0, 2000.0}


def test_photometric_jitter_leaves_depth_untouched(tmp_path):
    image, depth, _ = bunch_scene()
    record = rgbd_record(tmp_path, image, depth)
    cfg = depth_cfg(
        "INPUT.MIN_SIZE_TRAIN", "(40,)", "INPUT.MAX_SIZE_TRAIN", "1000",
        "INPUT.BRIGHTNESS", "(0.5, 0.5)", "INPUT.CONTRAST", "(1.5, 1.5)",
        "INPUT.SATURATION", "(0.2, 0.2)", "INPUT.DEPTH.MAX_MM", "1500",
    )
    mapper = build_grape_mapper(cfg, is_train=True)
    out = mapper(record)["image"]
    kinds = {type(t).__name__ for t in mapper.augmentations.last_transforms.transforms}
    assert "BlendTransform" in kinds  # the jitter ran ...
    assert not torch.equal(out[:3], torch.from_numpy(image).permute(2, 0, 1).float())
    # ... on colour only; depth is as read, clipped to INPUT.DEPTH.MAX_MM.
    assert np.array_equal(out[3].numpy(), np.minimum(depth, 1500.0))


def test_padding_and_crops_keep_depth_a_reading_or_a_hole():
    depth = np.full((10, 12), 900.0, np.float32)
    tfms = T.TransformList([T.CropTransform(2, 1, 8, 6), T.PadTransform(1, 2, 3, 4, 8, 6)])
    out = transform_depth(tfms, depth)
    assert out.shape == (6 + 2 + 4, 8 + 1 + 3)
    assert (out[2:8, 1:9] == 900).all() and out.sum() == 900 * 48  # padding is "no reading"


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


def test_bad_configs_are_one_line_errors():
    with pytest.raises(GrapeInputError) as e:
        check_depth_config(depth_cfg("MODEL.PIXEL_MEAN", "[103.53, 116.28, 123.675]"))
    assert "PIXEL_MEAN" in one_line(e) and "got 3 and 4" in one_line(e)
    with pytest.raises(GrapeInputError) as e:
        check_depth_config(depth_cfg("INPUT.DEPTH.ENABLED", "False"))
    assert "INPUT.DEPTH.ENABLED" in one_line(e)
    with pytest.raises(GrapeInputError) as e:  # through build_config, as every tool reads it
        # (tools print GrapeInputError as one "error:" line: errors.exit_on_user_error)
        build_config(RGBD_CONFIG, ["MODEL.PIXEL_STD", "[57.375, 57.12, 58.395]"])
    assert "PIXEL_STD" in one_line(e)


def test_bad_depth_files_are_one_line_errors(tmp_path):
    image, depth, _ = bunch_scene()
    record = rgbd_record(tmp_path, image, depth)
    with pytest.raises(GrapeInputError) as e:
        read_depth(record["depth_file_name"], (40, 61))
    assert "61x40" in one_line(e) and "60x40" in one_line(e)
    eight_bit = tmp_path / "eight.png"
    cv2.imwrite(str(eight_bit), np.zeros((4, 4), np.uint8))
    with pytest.raises(GrapeInputError) as e:
        read_depth(eight_bit)
    assert "eight.png" in one_line(e) and "16-bit" in one_line(e)

    with pytest.raises(GrapeInputError) as e:  # checked before training starts
        check_depth_files([{**record, "depth_file_name": str(tmp_path / "gone.png")}], ["d"])
    assert "gone.png" in one_line(e) and "not found" in one_line(e)
    with pytest.raises(GrapeInputError) as e:
        check_depth_files([{**record, "width": 61}], ["d"])
    assert "photo.png" in one_line(e) and "60x40" in one_line(e)
    with pytest.raises(GrapeInputError) as e:
        check_depth_files([{k: v for k, v in record.items() if k != "depth_file_name"}], ["d"])
    assert "no depth_file" in one_line(e)

    mapper = build_grape_mapper(depth_cfg(), is_train=True)
    with pytest.raises(GrapeInputError) as e:
        mapper({k: v for k, v in record.items() if k != "depth_file_name"})
    assert "photo.png" in one_line(e)
    # A depth file gone mid-training skips the image, as an undecodable photo does.
    gone = {**record, "depth_file_name": str(tmp_path / "gone.png")}
    warnings: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = warnings.append  # on the mapper's logger: propagation may be off
    mapper_logger = logging.getLogger("grape_instances.data.mappers")
    mapper_logger.addHandler(handler)
    try:
        assert mapper(gone) is None
        assert mapper(gone) is None
    finally:
        mapper_logger.removeHandler(handler)
    assert [r.getMessage() for r in warnings].count(
        f"{tmp_path / 'gone.png'}: depth image not found; its image {record['file_name']} "
        "is skipped, another image is used in its place") == 1
    with pytest.raises(UndecodableDepthError):
        read_depth(tmp_path / "gone.png")


@pytest.fixture(scope="module")
def rgbd_synth(tiny_synth, tmp_path_factory) -> Path:
    """``tiny_synth`` as an RGB-D dataset in the generator's layout (image root = the folder,
    ``images/<split>``, ``depth/<split>``, COCO ``depth_file``): bunches at 700, 850, ... mm
    before a 2000 mm background, 5 % holes."""
    root = tmp_path_factory.mktemp("rgbd") / "grapes_rgbd"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        coco = json.loads((tiny_synth / "annotations" / f"instances_{split}.json").read_text())
        (root / "images" / split).mkdir(parents=True)
        for image in coco["images"]:
            shutil.copy(tiny_synth / "images" / split / image["file_name"],
                        root / "images" / split)
            depth = np.full((image["height"], image["width"]), 2000.0)
            anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
            for k, ann in enumerate(anns):
                depth[mask_utils.decode(ann["segmentation"]).astype(bool)] = 700 + 150 * k
            depth[rng.random(depth.shape) < 0.05] = 0
            stem = Path(image["file_name"]).stem
            write_png16(root / "depth" / split / f"{stem}.png", depth)
            image["depth_file"] = f"depth/{split}/{stem}.png"
            image["file_name"] = f"images/{split}/{image['file_name']}"
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    return root


def register_opts(root: Path) -> list[str]:
    entries = [[f"rgbd_{s}", str(root / "annotations" / f"instances_{s}.json"), str(root)]
               for s in ("train", "val")]
    return ["DATASETS.REGISTER", json.dumps(entries),
            "DATASETS.TRAIN", "('rgbd_train',)", "DATASETS.TEST", "('rgbd_val',)"]


def test_registration_keeps_the_depth_file(rgbd_synth, tiny_synth, tmp_path):
    register_coco_dataset("rgbd_reg_test", rgbd_synth / "annotations" / "instances_val.json",
                          rgbd_synth)
    records = DatasetCatalog.get("rgbd_reg_test")
    assert len(records) == 4
    for record in records:
        stem = Path(record["file_name"]).stem
        assert record["depth_file_name"] == str(rgbd_synth / "depth" / "val" / f"{stem}.png")
        assert Path(record["depth_file_name"]).is_file()
    sem = DatasetCatalog.get(semantic_view("rgbd_reg_test", tmp_path / "sem"))
    assert [r["depth_file_name"] for r in sem] == [r["depth_file_name"] for r in records]
    register_coco_dataset("rgb_reg_test", tiny_synth / "annotations" / "instances_val.json",
                          tiny_synth / "images" / "val")
    assert not any("depth_file_name" in r for r in DatasetCatalog.get("rgb_reg_test"))


def stem_key(state: dict) -> str:
    (key,) = [k for k in state if k.endswith("stem.conv1.weight")]
    return key


def test_rgb_weights_load_into_a_4_channel_stem(tmp_path):
    torch.manual_seed(0)
    rgb_model = build_model(build_config(DEMO_CONFIG, ["MODEL.DEVICE", "cpu"]))
    rgbd_model = build_model(build_config(RGBD_CONFIG, ["MODEL.DEVICE", "cpu"]))
    rgb, rgbd = rgb_model.state_dict(), rgbd_model.state_dict()
    key = stem_key(rgb)
    assert rgb[key].shape == (64, 3, 7, 7) and rgbd[key].shape == (64, 4, 7, 7)
    torch.save({"model": rgb}, tmp_path / "rgb.pth")

    GrapeCheckpointer(rgbd_model).load(str(tmp_path / "rgb.pth"))  # what training loads with
    loaded = rgbd_model.state_dict()
    assert torch.equal(loaded[key][:, :3], rgb[key])
    assert torch.allclose(loaded[key][:, 3], rgb[key].mean(dim=1))
    for name, value in rgb.items():
        if name != key:
            assert torch.equal(loaded[name], value), name

    # Model-zoo style (.pkl, backbone names without the model's prefix, matched by
    # Detectron2's name heuristics, which drop shape mismatches): widened as well.
    backbone = {k.removeprefix("backbone.bottom_up."): v.numpy() * 2
                for k, v in rgb.items() if k.startswith("backbone.bottom_up.")}
    with open(tmp_path / "zoo.pkl", "wb") as f:
        pickle.dump({"model": backbone, "__author__": "test", "matching_heuristics": True}, f)
    RGBDCheckpointer(rgbd_model).load(str(tmp_path / "zoo.pkl"))
    loaded = rgbd_model.state_dict()
    assert torch.equal(loaded[key][:, :3], 2 * rgb[key])
    assert torch.allclose(loaded[key][:, 3], 2 * rgb[key].mean(dim=1))
    res2 = "backbone.bottom_up.res2.0.conv1.weight"
    assert torch.equal(loaded[res2], 2 * rgb[res2])


def test_torchvision_vgg_weights_load_into_a_4_channel_encoder():
    torch.manual_seed(0)
    rgb_encoder = VGG16Encoder(norm="")
    to_torchvision = {ours: tv for tv, ours in torchvision_vgg16_key_map(False).items()}
    state = {to_torchvision[k]: v for k, v in rgb_encoder.state_dict().items()}
    encoder = VGG16Encoder(in_channels=4, norm="")
    load_torchvision_vgg16(encoder, state, input_format="BGR")
    weight = encoder.conv1_1.weight.detach()
    bgr = state["features.0.weight"].flip(1)  # torchvision's RGB filters in BGR order
    assert weight.shape == (64, 4, 3, 3)
    assert torch.equal(weight[:, :3], bgr)
    assert torch.allclose(weight[:, 3], bgr.mean(dim=1))
    assert torch.equal(encoder.conv5_3.weight, rgb_encoder.conv5_3.weight)


def test_depth_reaches_a_semantic_baseline_through_the_predictor(tmp_path):
    cfg = build_config(UNET_CONFIG, ["INPUT.DEPTH.ENABLED", "True", *RGBD_NORMALISATION,
                                     "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64"])
    torch.manual_seed(0)
    predictor = Predictor(cfg, allow_random_weights=True)
    assert predictor.model.backbone.conv1_1.weight.shape[1] == 4
    image, depth, _ = bunch_scene(64, 64)
    near = predictor(image, depth)["sem_seg"]
    far = predictor(image, depth + 500)["sem_seg"]
    assert near.shape == (2, 64, 64) and not torch.allclose(near, far)
    with pytest.raises(GrapeInputError) as e:
        predictor(image)
    assert "--depth" in one_line(e)


@pytest.mark.slow
def test_rgbd_mask_rcnn_and_unet_train_and_predict(rgbd_synth, tmp_path):
    """The RGB-D demo config (4-channel Mask R-CNN) and an RGB-D UNet train a few iterations
    on RGB-D data with tools/train_net.py; the Mask R-CNN then draws with --depth."""
    out = tmp_path / "maskrcnn"
    proc = run_tool("train_net.py", "--config-file", RGBD_CONFIG,
                    *tiny_training_opts(rgbd_synth, out, max_iter=3), *register_opts(rgbd_synth))
    assert proc.returncode == 0, proc.stderr[-4000:]
    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    assert state[stem_key(state)].shape[1] == 4
    assert "Start inference on 4 batches" in proc.stdout + proc.stderr

    unet = tmp_path / "unet"
    proc = run_tool("train_net.py", "--config-file", UNET_CONFIG,
                    *tiny_training_opts(rgbd_synth, unet, max_iter=3), *register_opts(rgbd_synth),
                    "INPUT.DEPTH.ENABLED", "True", *RGBD_NORMALISATION)
    assert proc.returncode == 0, proc.stderr[-4000:]
    state = torch.load(unet / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    assert state["backbone.conv1_1.weight"].shape[1] == 4
    assert json.loads((unet / "metrics.json").read_text().splitlines()[-1])  # evaluated

    cfg = build_config(RGBD_CONFIG, ["MODEL.WEIGHTS", str(out / "model_final.pth"),
                                     "MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "96",
                                     "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
    images = sorted((rgbd_synth / "images" / "val").glob("*.jpg"))
    summary = visualize_files(cfg, images, tmp_path / "vis",
                              depth_dir=rgbd_synth / "depth" / "val")
    assert len(summary["overlays"]) == 4 and not summary["skipped"]
    with pytest.raises(GrapeInputError) as e:
        visualize_files(cfg, images, tmp_path / "vis2")
    assert "--depth" in one_line(e)



def test_predictor_widens_an_rgb_checkpoint_into_the_4_channel_stem(tmp_path):
    """Predictor loads MODEL.WEIGHTS through the project's checkpointer: an RGB checkpoint
    fills the RGB-D stem's first 3 channels (Detectron2's would skip it as a shape mismatch
    and predict with a random stem)."""
    torch.manual_seed(0)
    rgb = build_model(build_config(DEMO_CONFIG, ["MODEL.DEVICE", "cpu"])).state_dict()
    torch.save({"model": rgb}, tmp_path / "rgb.pth")
    cfg = build_config(RGBD_CONFIG, ["MODEL.DEVICE", "cpu",
                                     "MODEL.WEIGHTS", str(tmp_path / "rgb.pth")])
    torch.manual_seed(1)  # a random stem would differ from the checkpoint's
    loaded = Predictor(cfg).model.state_dict()
    key = stem_key(rgb)
    assert loaded[key].shape == (64, 4, 7, 7)
    assert torch.equal(loaded[key][:, :3], rgb[key])
    assert torch.allclose(loaded[key][:, 3], rgb[key].mean(dim=1))
    head = "roi_heads.mask_head.predictor.weight"
    assert torch.equal(loaded[head], rgb[head])


def truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


@pytest.fixture
def grape_warnings():
    """Warnings of the ``grape_instances`` loggers (setup_logger may stop propagation)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    log = logging.getLogger("grape_instances")
    log.addHandler(handler)
    yield records
    log.removeHandler(handler)


def test_evaluation_leaves_out_an_image_whose_depth_file_is_truncated(
    rgbd_synth, tmp_path, grape_warnings
):
    """A truncated depth PNG passes the header check; the evaluation list must leave its
    image out (with one warning naming the depth file), not let the mapper skip it and
    Detectron2 score another image in its place."""
    from grape_instances.data.build import drop_undecodable_images, load_dataset_dicts
    from grape_instances.data.datasets import register_from_config

    root = tmp_path / "grapes_rgbd"
    shutil.copytree(rgbd_synth, root)
    cut = sorted((root / "depth" / "val").glob("*.png"))[1]
    truncate(cut)
    check_depth_files(  # the header is intact: only a decode finds the damage
        [r for r in load_coco_val(root) if r["depth_file_name"] == str(cut)], ["val"])
    opts = [*register_opts(root), "MODEL.DEVICE", "cpu"]
    cfg = build_config(RGBD_CONFIG, opts)
    register_from_config(cfg)
    for _ in range(2):  # periodic evaluation: one warning per file, not per evaluation
        dicts = load_dataset_dicts(["rgbd_val"], False, cfg)
        assert len(dicts) == 3 and str(cut) not in [d["depth_file_name"] for d in dicts]
    messages = [r.getMessage() for r in grape_warnings if str(cut) in r.getMessage()]
    assert len(messages) == 1 and "left out of the evaluation" in messages[0], messages
    # An RGB model of the same data does not read depth: nothing is left out.
    rgb_cfg = build_config(RGBD_CONFIG, [*opts, "INPUT.DEPTH.ENABLED", "False",
                                         "MODEL.PIXEL_MEAN", "[103.53, 116.28, 123.675]",
                                         "MODEL.PIXEL_STD", "[57.375, 57.12, 58.395]"])
    assert len(load_dataset_dicts(["rgbd_val"], False, rgb_cfg)) == 4
    assert len(drop_undecodable_images(load_coco_val(root), ["val"], depth=False)) == 4


def load_coco_val(root: Path) -> list[dict]:
    from grape_instances.data.datasets import load_coco_records

    return load_coco_records(str(root / "annotations" / "instances_val.json"), str(root))


def test_demo_config_reads_what_make_synthetic_writes(tmp_path, monkeypatch):
    """The RGB-D demo config registers the folder tools/make_synthetic.py --rgbd-scenes
    writes by default, with depth files that load (paths relative to the working dir)."""
    from grape_instances.data.datasets import register_from_config

    monkeypatch.chdir(tmp_path)
    proc = subprocess.run(  # run_tool runs in the repository: this must not write there
        [sys.executable, str(REPO / "tools" / "make_synthetic.py"), "--rgbd-scenes",
         "--train", "2", "--val", "1", "--frame", "64x48"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = build_config(RGBD_CONFIG, ["MODEL.DEVICE", "cpu"])
    register_from_config(cfg)
    for name, n in ((cfg.DATASETS.TRAIN[0], 2), (cfg.DATASETS.TEST[0], 1)):
        records = DatasetCatalog.get(name)
        assert len(records) == n
        for record in records:
            assert Path(record["file_name"]).is_file()
            assert read_depth(record["depth_file_name"], (48, 64)).max() > 0
