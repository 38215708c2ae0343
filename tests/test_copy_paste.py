"""Copy-paste augmentation (INPUT.COPY_PASTE, data.copy_paste): a pasted bunch is a new
target with its own mask and box, bunches it covers lose those pixels and drop out below
MIN_VISIBLE, PROB 0 is the mapper of before, the output trains, bad values are one line."""

import copy

import cv2
import detectron2.data.transforms as T
import numpy as np
import pytest
import torch
from detectron2.structures import BitMasks, BoxMode, Instances, PolygonMasks

from grape_instances.core.errors import GrapeInputError
from grape_instances.data.build import build_config
from grape_instances.data.copy_paste import CopyPaste
from grape_instances.data.mappers import CopyPasteMapper, build_grape_mapper
from tests.helpers import DEMO_CONFIG, REPO, run_tool, tiny_training_opts

# the plain mask head: copy-paste was measured on it (polygon masks in the scaled cache)
REAL_CONFIG = str(REPO / "configs" / "mask_rcnn_grapes_cpu_real_plain.yaml")
TARGET_BGR = (10, 20, 30)
BUNCH_BGR = (200, 100, 50)  # the source bunch's colour
SOURCE_BG_BGR = (90, 90, 90)


def rect(x0, y0, x1, y1) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def annotation(x0, y0, x1, y1, category=0) -> dict:
    return {"segmentation": [rect(x0, y0, x1, y1)], "bbox": [x0, y0, x1 - x0, y1 - y0],
            "bbox_mode": BoxMode.XYWH_ABS, "category_id": category, "iscrowd": 0}


def photo_record(path, size_hw, background, boxes, colour=None, category=0) -> dict:
    """A PNG of ``background`` with each box of ``boxes`` filled with ``colour``, and its
    record (one rectangular bunch per box)."""
    image = np.full((*size_hw, 3), background, np.uint8)
    for x0, y0, x1, y1 in boxes:
        image[y0:y1, x0:x1] = colour if colour is not None else background
    cv2.imwrite(str(path), image)
    return {"file_name": str(path), "height": size_hw[0], "width": size_hw[1],
            "image_id": path.stem, "annotations": [annotation(*b, category) for b in boxes]}


def exact_paste(records, min_visible=0.0, max_objects=1) -> CopyPaste:
    """Bunches pasted at their own size (scale 1, no flip, no jitter): pixel for pixel."""
    return CopyPaste(records, max_objects=max_objects, scale_range=(1.0, 1.0), blur_sigma=0.0,
                     min_visible=min_visible, reference_hw=(1, 1), photometric=[],
                     flip="none", image_format="BGR")


def plain_mapper(records, min_visible=0.0, prob=1.0, max_objects=1) -> CopyPasteMapper:
    """The mapper without augmentations: the output image is the photo itself."""
    cfg = build_config(REAL_CONFIG)
    return CopyPasteMapper(cfg, True, augmentations=[], min_visible=min_visible,
                           copy_paste=exact_paste(records, min_visible, max_objects), prob=prob)


def masks_of(instances) -> np.ndarray:
    assert isinstance(instances.gt_masks, BitMasks)
    return instances.gt_masks.tensor.numpy()


def two_photos(tmp_path, size_hw, target_box, source_box=(2, 2, 22, 22)):
    """A target photo with one bunch and a source photo of the same size (so the same
    working scale) with one 20 x 20 bunch of category 1."""
    target = photo_record(tmp_path / "target.png", size_hw, TARGET_BGR, [target_box])
    source = photo_record(tmp_path / "source.png", size_hw, SOURCE_BG_BGR, [source_box],
                          BUNCH_BGR, category=1)
    return target, source


def test_a_pasted_bunch_is_a_new_instance_with_its_mask_and_box(tmp_path):
    target, source = two_photos(tmp_path, (64, 64), (30, 30, 36, 36), (5, 5, 25, 25))
    np.random.seed(0)
    out = plain_mapper([target, source])(copy.deepcopy(target))
    inst = out["instances"]
    assert len(inst) == 2
    pasted = masks_of(inst)[1]
    assert pasted.sum() == 20 * 20  # the source bunch, at its size
    ys, xs = np.nonzero(pasted)
    assert (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) == (20, 20)
    np.testing.assert_array_equal(inst.gt_boxes.tensor[1].numpy(),
                                  [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    assert inst.gt_classes.tolist() == [0, 1]  # the source's category comes with it
    image = out["image"].permute(1, 2, 0).numpy()
    assert (image[pasted] == BUNCH_BGR).all()  # the bunch's pixels, not its background
    assert (image[~pasted] == TARGET_BGR).all()  # nothing else changed (hard edge)


def test_a_covered_bunch_loses_the_covered_pixels(tmp_path):
    # 24 x 24 photo: a 20 x 20 paste anywhere inside covers most, never all, of the
    # 22 x 22 bunch
    target, source = two_photos(tmp_path, (24, 24), (1, 1, 23, 23))
    original = np.zeros((24, 24), bool)
    original[1:23, 1:23] = True
    for seed in range(5):
        np.random.seed(seed)
        out = plain_mapper([target, source])(copy.deepcopy(target))
        own, pasted = masks_of(out["instances"])
        assert pasted.sum() == 400
        assert (original & pasted).any()
        np.testing.assert_array_equal(own, original & ~pasted)
        ys, xs = np.nonzero(own)  # its box follows the visible part
        np.testing.assert_array_equal(out["instances"].gt_boxes.tensor[0].numpy(),
                                      [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


def test_a_bunch_covered_beyond_min_visible_drops_out(tmp_path):
    # the 22 x 22 bunch keeps at most 22*22 - 19*19 = 123 px (25 %) under a 20 x 20 paste
    target, source = two_photos(tmp_path, (24, 24), (1, 1, 23, 23))
    np.random.seed(0)
    out = plain_mapper([target, source], min_visible=0.5)(copy.deepcopy(target))
    assert len(out["instances"]) == 1 and out["instances"].gt_classes.tolist() == [1]
    # a 6 x 6 bunch in the middle is covered whole by any place of the paste: gone even
    # without MIN_VISIBLE
    target, source = two_photos(tmp_path, (24, 24), (9, 9, 15, 15))
    np.random.seed(0)
    out = plain_mapper([target, source], min_visible=0.0)(copy.deepcopy(target))
    assert out["instances"].gt_classes.tolist() == [1]


def test_what_the_window_cut_counts_with_what_the_paste_covers(tmp_path):
    """MIN_VISIBLE's rule: visible fraction = kept by the window x left by the paste."""
    source = photo_record(tmp_path / "source.png", (40, 40), SOURCE_BG_BGR,
                          [(0, 0, 10, 40)], BUNCH_BGR)
    own = np.zeros((40, 40), bool)
    own[0:40, 5:25] = True  # 800 px; a 10 x 40 paste covers 0 to 400 px of it
    instances = Instances((40, 40), gt_boxes=torch.tensor([[5.0, 0, 25, 40]]),
                          gt_classes=torch.tensor([0]),
                          gt_masks=BitMasks(torch.from_numpy(own[None])))
    outcomes = set()
    for seed in range(12):
        np.random.seed(seed)
        image = np.zeros((40, 40, 3), np.uint8)
        new, _ = exact_paste([source], min_visible=0.5)(
            image, copy.deepcopy(instances), np.array([0.6]), (40, 40), T.TransformList([]),
            "other.png")
        left = (own & ~masks_of(new)[-1]).sum() / own.sum()
        kept = len(new) == 2
        assert kept == (0.6 * left >= 0.5), (seed, left)
        outcomes.add(kept)
    assert outcomes == {True, False}  # both sides of the rule were met


def real_like_records(tmp_path, n=3) -> list[dict]:
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        path = tmp_path / f"p{i}.jpg"
        cv2.imwrite(str(path), rng.integers(0, 255, (160, 200, 3), dtype=np.uint8))
        boxes = [(10 + 40 * j, 20 + 10 * j, 50 + 40 * j, 90 + 10 * j) for j in range(4)]
        records.append({"file_name": str(path), "height": 160, "width": 200, "image_id": i,
                        "annotations": [annotation(*b) for b in boxes]})
    return records


REAL_TINY = ["INPUT.SCALE_CROP.TARGET_SIZE", "(128, 128)", "INPUT.SCALE_CROP.CROP_SIZE",
             "(64, 64)"]


def test_prob_zero_is_the_mapper_of_before(tmp_path):
    records = real_like_records(tmp_path)
    before = build_grape_mapper(build_config(REAL_CONFIG, REAL_TINY), True)
    cfg = build_config(REAL_CONFIG, [*REAL_TINY, "INPUT.COPY_PASTE.ENABLED", "True",
                                     "INPUT.COPY_PASTE.PROB", "0.0"])
    now = build_grape_mapper(cfg, True, records=records)
    assert isinstance(now, CopyPasteMapper)
    np.random.seed(3)
    old = [before(copy.deepcopy(records[i % 3])) for i in range(12)]
    np.random.seed(3)
    new = [now(copy.deepcopy(records[i % 3])) for i in range(12)]
    assert sum(len(o["instances"]) for o in old) > 0
    for a, b in zip(old, new, strict=True):
        assert torch.equal(a["image"], b["image"])
        ia, ib = a["instances"], b["instances"]
        assert isinstance(ib.gt_masks, PolygonMasks)
        assert torch.equal(ia.gt_boxes.tensor, ib.gt_boxes.tensor)
        assert torch.equal(ia.gt_classes, ib.gt_classes)
        for pa, pb in zip(ia.gt_masks.polygons, ib.gt_masks.polygons, strict=True):
            assert all(np.array_equal(x, y) for x, y in zip(pa, pb, strict=True))
    # the same mapper with PROB 1 pastes into every window
    np.random.seed(3)
    now.prob = 1.0
    pasted = [now(copy.deepcopy(records[i % 3])) for i in range(6)]
    assert all(isinstance(p["instances"].gt_masks, BitMasks) for p in pasted)
    assert any(not torch.equal(p["image"], o["image"])
               for p, o in zip(pasted, old[:6], strict=True))


def test_pasted_bunches_come_at_the_working_scale(tmp_path):
    """A bunch of a photo twice as large is pasted at half its pixel size: both photos are
    brought to the same working scale (INPUT.SCALE_CROP.TARGET_SIZE) before the jitter."""
    small = photo_record(tmp_path / "small.png", (100, 100), TARGET_BGR, [])
    big = photo_record(tmp_path / "big.png", (200, 200), SOURCE_BG_BGR, [(20, 20, 80, 60)],
                       BUNCH_BGR)
    cp = CopyPaste([small, big], max_objects=1, scale_range=(1.0, 1.0), blur_sigma=0.0,
                   min_visible=0.0, reference_hw=(100, 100), photometric=[], flip="none",
                   image_format="BGR")
    np.random.seed(0)
    image = np.zeros((100, 100, 3), np.uint8)
    new, count = cp(image, Instances((100, 100)), np.zeros(0), (100, 100),
                    T.TransformList([]), small["file_name"])
    assert count == 1
    box = new.gt_boxes.tensor[0].numpy()
    np.testing.assert_allclose(box[2:] - box[:2], [30, 20], atol=1)
    # the window's own resize (x 0.5 here) applies to the pasted bunch too
    np.random.seed(0)
    new, _ = cp(np.zeros((100, 100, 3), np.uint8), Instances((100, 100)), np.zeros(0),
                (200, 200), T.TransformList([T.ResizeTransform(200, 200, 100, 100)]),
                small["file_name"])
    box = new.gt_boxes.tensor[0].numpy()
    np.testing.assert_allclose(box[2:] - box[:2], [30, 20], atol=1)


@pytest.mark.parametrize("override, fragment", [
    (["INPUT.COPY_PASTE.PROB", "1.5"], "INPUT.COPY_PASTE.PROB must be in [0, 1], got 1.5"),
    (["INPUT.COPY_PASTE.MAX_OBJECTS", "0"], "INPUT.COPY_PASTE.MAX_OBJECTS must be a whole"),
    (["INPUT.COPY_PASTE.SCALE_RANGE", "(1.25, 0.8)"], "INPUT.COPY_PASTE.SCALE_RANGE must be"),
    (["INPUT.COPY_PASTE.SCALE_RANGE", "(0.0, 1.0)"], "INPUT.COPY_PASTE.SCALE_RANGE must be"),
    (["INPUT.COPY_PASTE.BLUR_SIGMA", "-1.0"], "INPUT.COPY_PASTE.BLUR_SIGMA must be >= 0"),
    (["INPUT.COPY_PASTE.ENABLED", "True", "MODEL.MASK_ON", "False"], "needs MODEL.MASK_ON"),
    (["INPUT.COPY_PASTE.ENABLED", "True", "INPUT.DEPTH.ENABLED", "True",
      "MODEL.PIXEL_MEAN", "[1.0, 1.0, 1.0, 1.0]", "MODEL.PIXEL_STD", "[1.0, 1.0, 1.0, 1.0]"],
     "does not work with INPUT.DEPTH.ENABLED"),
])
def test_bad_values_are_one_line(override, fragment):
    with pytest.raises(GrapeInputError) as e:
        build_config(REAL_CONFIG, override)
    assert fragment in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow
def test_mapper_output_trains_a_tiny_mask_rcnn(tiny_synth, tmp_path, monkeypatch):
    """Two iterations of the demo's Mask R-CNN through the one training path with copy-paste
    on; then one batch that mixes a pasted window (BitMasks) and a plain one (PolygonMasks)
    through its losses."""
    from grape_instances.engine import run_training

    calls = []
    real_call = CopyPaste.__call__

    def counting(self, *args, **kwargs):
        result = real_call(self, *args, **kwargs)
        calls.append(result is not None)
        return result

    monkeypatch.setattr(CopyPaste, "__call__", counting)
    out = tmp_path / "run"
    opts = tiny_training_opts(tiny_synth, out, max_iter=2)
    opts += ["DATASETS.TEST", "()", "INPUT.COPY_PASTE.ENABLED", "True",
             "INPUT.COPY_PASTE.PROB", "0.5", "SEED", "1"]
    cfg = build_config(DEMO_CONFIG, opts)
    trainer = run_training(cfg)
    assert trainer.iter == 2 and (out / "model_final.pth").is_file()
    assert any(calls), "no window was pasted into"

    # one batch of a pasted window (BitMasks) and a plain one (the real recipe's polygons)
    # through the trained model's losses and backward
    model = trainer.model
    model.train()
    records = real_like_records(tmp_path)
    real = build_config(REAL_CONFIG, [*REAL_TINY, "INPUT.COPY_PASTE.ENABLED", "True"])
    mapper = build_grape_mapper(real, True, records=records)
    np.random.seed(0)
    mapper.prob = 1.0
    pasted = mapper(copy.deepcopy(records[0]))
    mapper.prob = 0.0
    plain = next(p for p in (mapper(copy.deepcopy(records[1])) for _ in range(20))
                 if len(p["instances"]))
    assert isinstance(pasted["instances"].gt_masks, BitMasks)
    assert isinstance(plain["instances"].gt_masks, PolygonMasks)
    from detectron2.utils.events import EventStorage

    with EventStorage(0):
        losses = model([pasted, plain])
    total = sum(losses.values())
    assert torch.isfinite(total) and losses["loss_mask"] > 0
    total.backward()


def test_the_tool_draws_training_crops(tiny_synth, tmp_path):
    out = tmp_path / "crops"
    opts = tiny_training_opts(tiny_synth, tmp_path / "run")
    proc = run_tool("training_crops.py", "--config-file", DEMO_CONFIG, "--output", str(out),
                    "--count", "3", *opts, "INPUT.COPY_PASTE.ENABLED", "True",
                    "INPUT.COPY_PASTE.PROB", "1.0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["crop_00.png", "crop_01.png", "crop_02.png"]
    image = cv2.imread(str(out / names[0]))
    # the pasted bunches' magenta outlines are drawn
    assert ((image == (230, 60, 230)).all(axis=2)).sum() > 20
