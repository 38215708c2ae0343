"""Tiled inference: windows cover the photo, and merging the windows' detections gives every
bunch exactly once, as whole as the untiled prediction."""

from __future__ import annotations

import dataclasses
import importlib.util

import cv2
import numpy as np
import pytest
import torch
from detectron2.engine import DefaultTrainer
from detectron2.structures import BitMasks, Instances
from torch import nn

from grape_instances.core.errors import GrapeInputError
from grape_instances.data.build import build_config
from grape_instances.engine.trainer import Trainer
from grape_instances.inference import writers
from grape_instances.inference.predictor import Predictor
from grape_instances.inference.tiling import TiledModel, tile_windows
from grape_instances.inference.writers import visualize_files
from grape_instances.synthetic.render import SynthConfig, render_scene
from tests.helpers import DEMO_CONFIG, REPO

SEMANTIC_CONFIG = str(REPO / "configs" / "semantic" / "segnet_grapes_cpu_demo.yaml")


# --------------------------------------------------------------------------- windows


@pytest.mark.parametrize("height,width,tile,overlap", [
    (300, 500, 160, 0.25), (1365, 2048, 384, 0.25), (320, 320, 160, 0.0), (200, 1000, 256, 0.5),
    (161, 161, 160, 0.1),
])
def test_windows_cover_the_image_with_the_requested_overlap(height, width, tile, overlap):
    windows = tile_windows(height, width, tile, overlap)
    covered = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in windows:
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert (x1 - x0, y1 - y0) == (min(tile, width), min(tile, height))
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    stride = round(tile * (1 - overlap))
    for starts, size in (({w[0] for w in windows}, width), ({w[1] for w in windows}, height)):
        starts = sorted(starts)
        if size <= tile:
            assert starts == [0]
            continue
        assert starts[0] == 0 and starts[-1] + tile == size  # last window snapped to the border
        steps = np.diff(starts)
        assert (steps[:-1] == stride).all() and 0 < steps[-1] <= stride
    assert len(windows) == len({w[0] for w in windows}) * len({w[1] for w in windows})


def test_image_that_fits_is_one_window_and_bad_arguments_fail():
    assert tile_windows(120, 150, 160, 0.25) == [(0, 0, 150, 120)]
    assert tile_windows(160, 160, 160, 0.25) == [(0, 0, 160, 160)]
    for tile, overlap in ((0, 0.25), (160, 1.0), (160, -0.1)):
        with pytest.raises(ValueError):
            tile_windows(300, 300, tile, overlap)


# --------------------------------------------------------------------------- oracle model


class Oracle(nn.Module):
    """Returns exactly the ground-truth masks visible in the window it is given, cropped.

    The image's channels 0 and 1 hold each pixel's x and y, so a window tells where it is.
    """

    def __init__(self, masks: np.ndarray, scores: list[float] | None = None,
                 with_masks: bool = True, partial_scores: bool = False) -> None:
        super().__init__()
        self.masks = masks
        self.scores = scores or [0.5 + 0.4 * k / max(1, len(masks)) for k in range(len(masks))]
        self.with_masks = with_masks
        self.partial_scores = partial_scores  # score * visible fraction of the bunch
        self.calls: list[tuple[int, int, int, int]] = []
        self.seen: list[dict[int, float]] = []  # ground-truth id -> score, per call

    def visible(self, k: int, window: tuple[int, int, int, int]) -> bool:
        return True

    def forward(self, batched_inputs):
        outs = []
        for x in batched_inputs:
            h, w = x["image"].shape[-2:]
            assert (x["height"], x["width"]) == (h, w), "windows must come back in window px"
            x0, y0 = int(x["image"][0, 0, 0]), int(x["image"][1, 0, 0])
            self.calls.append((x0, y0, x0 + w, y0 + h))
            crop = self.masks[:, y0:y0 + h, x0:x0 + w]
            ids = [k for k in range(len(crop))
                   if crop[k].any() and self.visible(k, self.calls[-1])]
            scores = [self.scores[k] * (crop[k].sum() / self.masks[k].sum()
                                        if self.partial_scores else 1.0) for k in ids]
            self.seen.append(dict(zip(ids, scores, strict=True)))
            inst = Instances((h, w))
            masks = torch.from_numpy(crop[ids]).reshape(len(ids), h, w)
            inst.pred_boxes = BitMasks(masks).get_bounding_boxes()
            inst.scores = torch.tensor(scores, dtype=torch.float32)
            inst.pred_classes = torch.zeros(len(ids), dtype=torch.int64)
            if self.with_masks:
                inst.pred_masks = masks
            outs.append({"instances": inst})
        return outs


def coordinate_image(height: int, width: int) -> torch.Tensor:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return torch.from_numpy(np.stack([xx, yy, np.zeros_like(xx)]))


def predict(model: nn.Module, height: int, width: int, out_size=None) -> Instances:
    out_h, out_w = out_size or (height, width)
    inputs = [{"image": coordinate_image(height, width), "height": out_h, "width": out_w}]
    with torch.no_grad():
        return model.eval()(inputs)[0]["instances"]


def mask_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def assert_each_bunch_once(tiled: Instances, untiled: Instances, min_iou: float = 0.9,
                           scores: list[float] | None = None):
    """One tiled instance per untiled one, mask IoU >= min_iou, the expected score (default
    the untiled one's), box of its mask."""
    a, b = tiled.pred_masks.numpy(), untiled.pred_masks.numpy()
    assert len(a) == len(b), f"{len(a)} tiled instances for {len(b)} bunches"
    inter = np.einsum("ihw,jhw->ij", a.astype(np.float32), b.astype(np.float32))
    union = a.sum((1, 2))[:, None] + b.sum((1, 2))[None, :] - inter
    iou = inter / np.maximum(union, 1)
    match = iou.argmax(axis=1)
    assert sorted(match) == list(range(len(b))), iou.round(2)
    assert (iou.max(axis=1) >= min_iou).all(), iou.max(axis=1)
    expected = untiled.scores.numpy() if scores is None else np.asarray(scores)
    assert np.allclose(tiled.scores.numpy(), expected[match])
    for mask, box in zip(a, tiled.pred_boxes.tensor.numpy(), strict=True):
        assert np.allclose(box, mask_box(mask))


def ellipse_masks(height: int, width: int, specs) -> np.ndarray:
    """``specs``: (cx, cy, rx, ry, angle) per bunch -> bool (N, H, W)."""
    masks = np.zeros((len(specs), height, width), np.uint8)
    for k, (cx, cy, rx, ry, angle) in enumerate(specs):
        cv2.ellipse(masks[k], (int(cx), int(cy)), (int(rx), int(ry)), angle, 0, 360, 1, -1)
    return masks.astype(bool)


def border_mosaic(rng: np.random.Generator, height: int, width: int, tile: int,
                  overlap: float, count: int) -> np.ndarray:
    """``count`` disjoint ellipses (>= 3 px apart) centred on tile borders, corners and
    overlaps, so that most of them are cut by some window."""
    windows = tile_windows(height, width, tile, overlap)
    xs = sorted({w[0] for w in windows} | {w[2] for w in windows} - {0, width})
    ys = sorted({w[1] for w in windows} | {w[3] for w in windows} - {0, height})
    occupied = np.zeros((height, width), bool)
    masks = []
    for _ in range(500):
        if len(masks) == count:
            break
        cx = rng.choice(xs) + rng.integers(-8, 9) if rng.random() < 0.7 else rng.integers(width)
        cy = rng.choice(ys) + rng.integers(-8, 9) if rng.random() < 0.7 else rng.integers(height)
        spec = (cx, cy, rng.integers(10, 55), rng.integers(10, 70), rng.integers(0, 180))
        mask = ellipse_masks(height, width, [spec])[0]
        grown = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        if not (grown & occupied).any():
            masks.append(mask)
            occupied |= mask
    assert len(masks) == count
    return np.stack(masks)


# --------------------------------------------------------------------------- merging


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
@pytest.mark.parametrize("seed", range(4))
def test_mosaic_bunches_come_out_once_and_whole(seed, overlap):
    rng = np.random.default_rng(seed)
    height, width, tile = 360, 520, 160
    masks = border_mosaic(rng, height, width, tile, overlap, count=int(rng.integers(3, 7)))
    oracle = Oracle(masks, partial_scores=True)  # a cut bunch scores lower
    untiled = predict(oracle, height, width)
    tiled = predict(TiledModel(oracle, tile, overlap), height, width)
    assert len(oracle.calls) == 1 + len(tile_windows(height, width, tile, overlap))
    parts = sum(len(ids) for ids in oracle.seen[1:])
    assert parts > len(masks)  # some bunches were cut: there was something to merge
    best = [max(seen.get(k, 0.0) for seen in oracle.seen[1:]) for k in range(len(masks))]
    # Parts scoring below their bunch's best exist: the merged score must be the max.
    assert any(score < best[k] for seen in oracle.seen[1:] for k, score in seen.items())
    assert_each_bunch_once(tiled, untiled, scores=best)


@pytest.mark.parametrize("overlap", [0.0, 0.25])
def test_bunch_on_a_corner_of_four_tiles_is_one_instance(overlap):
    masks = ellipse_masks(320, 320, [(160, 160, 50, 65, 20), (40, 270, 20, 30, 0)])
    oracle = Oracle(masks)
    tiled = predict(TiledModel(oracle, 160, overlap), 320, 320)
    assert sum(0 in seen for seen in oracle.seen) >= 4  # the corner bunch was cut into 4+
    untiled = predict(oracle, 320, 320)
    assert_each_bunch_once(tiled, untiled, min_iou=1.0)


def test_bunch_larger_than_a_tile_is_one_instance():
    masks = ellipse_masks(400, 600, [(300, 200, 250, 150, 10), (30, 30, 20, 20, 0)])
    oracle = Oracle(masks)
    tiled = predict(TiledModel(oracle, 128, 0.25), 400, 600)
    assert_each_bunch_once(tiled, predict(oracle, 400, 600), min_iou=1.0)


@pytest.mark.parametrize("overlap", [0.0, 0.25])
def test_neighbouring_bunches_across_a_border_stay_apart(overlap):
    # Two bunches stacked across the border x = 160, 3 px apart in y: never one instance.
    masks = np.zeros((2, 320, 320), bool)
    masks[0, 60:130, 120:200] = True
    masks[1, 133:200, 110:210] = True
    oracle = Oracle(masks)
    tiled = predict(TiledModel(oracle, 160, overlap), 320, 320)
    assert_each_bunch_once(tiled, predict(oracle, 320, 320), min_iou=1.0)


def test_bunches_separated_by_the_model_in_one_window_stay_apart():
    # Window 1 (x 0-160) sees two bunches; window 2 (x 120-280) sees one sloppy detection
    # covering both in the overlap. It may join one of them, never chain the two together.
    masks = np.zeros((3, 160, 280), bool)
    masks[0, 20:60, 125:155] = True
    masks[1, 70:110, 125:155] = True
    masks[2] = masks[0] | masks[1]

    class Sloppy(Oracle):
        def visible(self, k, window):
            return (k == 2) == (window[0] == 120)

    model = Sloppy(masks, scores=[0.9, 0.8, 0.7])
    tiled = predict(TiledModel(model, 160, 0.25), 160, 280)
    assert tile_windows(160, 280, 160, 0.25) == [(0, 0, 160, 160), (120, 0, 280, 160)]
    assert tiled.scores.tolist() == pytest.approx([0.9, 0.8])
    assert torch.equal(tiled.pred_masks[1], torch.from_numpy(masks[1]))


def test_synthetic_bunches_come_out_once():
    cfg = dataclasses.replace(SynthConfig(), height=320, width=480, min_bunches=4, max_bunches=6)
    masks = []
    for seed in range(3):
        scene = render_scene(np.random.default_rng(seed), cfg)
        # A bunch split by a leaf into pieces seen by different windows is two bunches to
        # any tiler: keep the connected ones.
        masks += [[m for m in scene.masks if cv2.connectedComponents(m.astype(np.uint8))[0] == 2]]
    for bunch_masks in masks:
        gt = np.stack(bunch_masks)
        oracle = Oracle(gt)
        tiled = predict(TiledModel(oracle, 128, 0.25), 320, 480)
        assert_each_bunch_once(tiled, predict(oracle, 320, 480), min_iou=1.0)


def test_output_is_rescaled_to_the_requested_size():
    masks = ellipse_masks(300, 400, [(160, 150, 60, 40, 30), (330, 60, 40, 50, 0)])
    oracle = Oracle(masks)
    tiled = predict(TiledModel(oracle, 160, 0.25), 300, 400, out_size=(600, 800))
    assert tiled.image_size == (600, 800) and tiled.pred_masks.shape == (2, 600, 800)
    expected = np.stack([cv2.resize(m.astype(np.uint8), (800, 600),
                                    interpolation=cv2.INTER_NEAREST) for m in masks]).astype(bool)
    reference = Instances((600, 800), pred_masks=torch.from_numpy(expected),
                          scores=torch.tensor(oracle.scores))
    assert_each_bunch_once(tiled, reference, min_iou=0.95)


def test_image_that_fits_goes_straight_to_the_model():
    masks = ellipse_masks(150, 200, [(100, 70, 30, 20, 0)])
    oracle = Oracle(masks)
    predict(TiledModel(oracle, 256, 0.25), 150, 200)
    assert oracle.calls == [(0, 0, 200, 150)]


def test_box_only_model_merges_boxes():
    masks = ellipse_masks(320, 320, [(160, 160, 50, 65, 20), (250, 60, 30, 30, 0)])
    oracle = Oracle(masks, with_masks=False)
    tiled = predict(TiledModel(oracle, 160, 0.25), 320, 320)
    assert not tiled.has("pred_masks")
    assert sorted(map(tuple, tiled.pred_boxes.tensor.tolist())) == sorted(
        tuple(map(float, mask_box(m))) for m in masks)


def test_max_detections_keeps_the_best():
    masks = ellipse_masks(320, 320, [(80, 80, 30, 30, 0), (240, 80, 30, 30, 0),
                                     (160, 240, 30, 30, 0)])
    oracle = Oracle(masks, scores=[0.3, 0.9, 0.6])
    tiled = predict(TiledModel(oracle, 160, 0.25, max_detections=2), 320, 320)
    assert tiled.scores.tolist() == pytest.approx([0.9, 0.6])


# --------------------------------------------------------------------------- wiring


def test_trainer_test_wraps_instance_models_only(monkeypatch):
    monkeypatch.setattr(DefaultTrainer, "test",
                        classmethod(lambda cls, cfg, model, evaluators=None: model))
    model = nn.Linear(1, 1)
    tiled = build_config(DEMO_CONFIG, ["TEST.TILE_SIZE", "160", "TEST.TILE_OVERLAP", "0.3"])
    evaluated = Trainer.test(tiled, model)
    assert isinstance(evaluated, TiledModel) and evaluated.model is model
    assert (evaluated.tile, evaluated.overlap) == (160, 0.3)
    assert Trainer.test(build_config(DEMO_CONFIG), model) is model
    assert Trainer.test(build_config(SEMANTIC_CONFIG, ["TEST.TILE_SIZE", "160"]), model) is model
    with pytest.raises(GrapeInputError, match="TILE_OVERLAP"):
        Trainer.test(build_config(DEMO_CONFIG, ["TEST.TILE_SIZE", "160",
                                                "TEST.TILE_OVERLAP", "1.5"]), model)


def test_visualize_tile_flags_set_the_config(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("visualize_tool", REPO / "tools" / "visualize.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    seen = {}

    def fake_visualize_files(cfg, inputs, output, **kwargs):
        seen["cfg"] = cfg
        return {"overlays": [], "label_maps": [], "results": "r.json", "num_detections": 0}

    # visualize.py imports its engine lazily (a fast --help): patch it where it lives
    monkeypatch.setattr(writers, "visualize_files", fake_visualize_files)
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    base = ["--config-file", DEMO_CONFIG, "--input", str(image), "--output", str(tmp_path)]
    tool.main(base + ["--tile", "384", "--tile-overlap", "0.4"])
    assert (seen["cfg"].TEST.TILE_SIZE, seen["cfg"].TEST.TILE_OVERLAP) == (384, 0.4)
    tool.main(base)
    assert (seen["cfg"].TEST.TILE_SIZE, seen["cfg"].TEST.TILE_OVERLAP) == (0, 0.25)


def test_predictor_tiles_with_a_real_model(tmp_path):
    cfg = build_config(DEMO_CONFIG, [
        "MODEL.WEIGHTS", "", "TEST.TILE_SIZE", "160", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
        "INPUT.MIN_SIZE_TEST", "300", "INPUT.MAX_SIZE_TEST", "500",
    ])
    torch.manual_seed(0)
    predictor = Predictor(cfg, allow_random_weights=True)
    assert isinstance(predictor.model, TiledModel) and not predictor.model.training
    windows = []
    predictor.model.model.register_forward_pre_hook(
        lambda module, args: windows.extend(tuple(x["image"].shape[-2:]) for x in args[0]))
    image = np.random.default_rng(0).integers(0, 255, (300, 500, 3), dtype=np.uint8)
    instances = predictor(image)["instances"]
    assert len(windows) == len(tile_windows(300, 500, 160, 0.25)) == 12
    assert set(windows) == {(160, 160)}
    assert instances.image_size == (300, 500)
    assert 0 < len(instances) <= cfg.TEST.DETECTIONS_PER_IMAGE
    assert instances.pred_masks.shape[1:] == (300, 500)
    assert (instances.scores[:-1] >= instances.scores[1:]).all()
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), image)
    summary = visualize_files(cfg, [path], tmp_path / "vis", allow_random_weights=True)
    assert summary["num_detections"] == len(instances)
    assert cv2.imread(summary["overlays"][0]).shape[:2] == (300, 500)
