"""Fragments and double counts (issue 15): the containment rule at inference and the false
positives by kind, on hand-made masks."""

import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances
from pycocotools import mask as mask_utils

from grape_instances.evaluation.fp_kinds import (
    KINDS,
    FalsePositiveKindsEvaluator,
    classify_false_positives,
    count_kinds,
)
from grape_instances.evaluation.instance import match_greedy
from grape_instances.inference.containment import ContainmentFilter, drop_contained

H, W = 60, 100


def box_mask(x0, y0, x1, y1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def instances(masks, scores, classes=None) -> Instances:
    masks = np.stack(masks)
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if len(ys) else [0] * 4)
    inst = Instances((H, W))
    inst.pred_masks = torch.as_tensor(masks)
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    inst.pred_classes = torch.tensor(classes or [0] * len(scores))
    return inst


def rle(m: np.ndarray) -> dict:
    return mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))


def test_a_piece_inside_a_higher_scoring_bunch_is_dropped():
    bunch = box_mask(10, 10, 40, 50)
    piece = box_mask(15, 15, 30, 30)  # wholly inside the bunch
    straddling = box_mask(30, 10, 60, 50)  # a third inside: another bunch beside it
    other_class_piece = box_mask(20, 20, 25, 25)
    inst = instances([piece, bunch, straddling, other_class_piece], [0.8, 0.9, 0.7, 0.6],
                     [0, 0, 0, 1])
    kept = drop_contained(inst, 0.8)
    assert kept.scores.tolist() == pytest.approx([0.9, 0.7, 0.6])
    # a higher-scoring piece is not dropped for lying inside a lower-scoring mask
    inst = instances([piece, bunch], [0.95, 0.9])
    assert len(drop_contained(inst, 0.8)) == 2
    # the threshold is the fraction of the lower-scoring mask inside the kept one
    half_in = box_mask(30, 10, 50, 50)  # half of it inside the bunch
    assert len(drop_contained(instances([bunch, half_in], [0.9, 0.8]), 0.5)) == 1
    assert len(drop_contained(instances([bunch, half_in], [0.9, 0.8]), 0.6)) == 2
    assert drop_contained(inst, 0.0) is inst  # off


def test_containment_filter_wraps_a_model_at_inference_only():
    bunch, piece = box_mask(10, 10, 40, 50), box_mask(15, 15, 30, 30)

    class Model(torch.nn.Module):
        def forward(self, batched_inputs):
            return [{"instances": instances([bunch, piece], [0.9, 0.8])}]

    wrapped = ContainmentFilter(Model(), 0.8).eval()
    assert len(wrapped([{}])[0]["instances"]) == 1


def test_false_positives_by_kind():
    a = box_mask(0, 0, 20, 40)  # two bunches side by side, and one apart
    b = box_mask(22, 0, 42, 40)
    c = box_mask(70, 10, 90, 50)
    gts = [a, b, c]
    preds = {
        "tp_a": (a, 0.99),
        "duplicate": (box_mask(0, 2, 20, 40), 0.9),  # a again
        "fragment": (box_mask(72, 12, 80, 25), 0.8),  # a piece of c (c itself not found)
        "merge": (box_mask(0, 0, 42, 40), 0.7),  # a and b as one
        "background": (box_mask(50, 45, 60, 55), 0.6),
        "loose": (box_mask(11, 20, 34, 45), 0.55),  # on a and b, mostly off both
    }
    kinds = classify_false_positives(
        [rle(m) for m, _ in preds.values()], [s for _, s in preds.values()], [0] * len(preds),
        [rle(m) for m in gts], [0, 0, 0], [False] * 3, 0.5)
    assert kinds == ["duplicate", "fragment", "merge", "background", "loose"]
    assert count_kinds(kinds) == {**{k: 1 for k in KINDS}, "total": 5}
    # as many false positives as the F1 matching counts
    ious = np.asarray(mask_utils.iou([rle(m) for m, _ in preds.values()],
                                     [rle(m) for m in gts], [0, 0, 0]))
    tp, fp, fn, ignored = match_greedy(ious, np.array([s for _, s in preds.values()]),
                                       np.zeros(6, int), np.zeros(3, int),
                                       np.zeros(3, bool), 0.5)
    assert (tp, fp, fn, ignored) == (1, 5, 2, 0)


def test_fp_kinds_evaluator(monkeypatch):
    a, c = box_mask(0, 0, 20, 40), box_mask(70, 10, 90, 50)
    record = {"file_name": "x.jpg", "height": H, "width": W, "annotations": [
        {"segmentation": {"size": [H, W], "counts": rle(m)["counts"].decode()},
         "category_id": 0, "iscrowd": 0} for m in (a, c)]}
    from grape_instances.evaluation import instance as instance_module

    monkeypatch.setattr(instance_module.DatasetCatalog, "get", lambda name: [record])
    ev = FalsePositiveKindsEvaluator("fake", score_thresh=0.5, distributed=False)
    out = instances([a, box_mask(72, 12, 80, 25), box_mask(2, 2, 10, 10)], [0.9, 0.8, 0.3])
    ev.process([{"file_name": "x.jpg"}], [{"instances": out}])
    assert ev.evaluate()["fp_kinds"] == {"fragment": 1, "duplicate": 0, "merge": 0,
                                         "background": 0, "loose": 0, "total": 1}


def test_evaluation_scores_what_the_rule_keeps(monkeypatch):
    from detectron2.engine import DefaultTrainer

    from grape_instances.data.build import build_config
    from grape_instances.engine.trainer import Trainer

    seen = []
    monkeypatch.setattr(DefaultTrainer, "test", classmethod(
        lambda cls, cfg, model, evaluators=None: seen.append(model)))
    model = torch.nn.Identity()
    assert build_config("configs/mask_rcnn_grapes_cpu_real.yaml").TEST.CONTAINMENT_THRESH == 0.0
    # the recipe's choice (README); its test-time flip wraps Mask R-CNN only, not this fake
    one_pass = ["TEST.AUG.ENABLED", "False"]
    cfg = build_config("configs/mask_rcnn_grapes_cpu_real.yaml", one_pass)
    Trainer.test(cfg, model)
    assert seen[-1] is model
    on = build_config("configs/mask_rcnn_grapes_cpu_real.yaml",
                      [*one_pass, "TEST.CONTAINMENT_THRESH", "0.8"])
    Trainer.test(on, model)
    assert isinstance(seen[-1], ContainmentFilter) and seen[-1].thresh == 0.8


def test_predictor_applies_the_rule_around_its_tiles(monkeypatch):
    """A model (a fake one here) gives a bunch and a piece inside it: the Predictor drops the
    piece; with tiles, the rule wraps the tiled model (it sees the merged tiles)."""
    import detectron2.engine.defaults

    from grape_instances.data.build import build_config
    from grape_instances.inference.predictor import Predictor
    from grape_instances.inference.tiling import TiledModel
    from tests.helpers import DEMO_CONFIG

    class Model(torch.nn.Module):
        def forward(self, batched_inputs):
            return [{"instances": instances([box_mask(10, 10, 40, 50), box_mask(15, 15, 30, 30)],
                                            [0.9, 0.8])} for _ in batched_inputs]

    monkeypatch.setattr(detectron2.engine.defaults, "build_model", lambda cfg: Model())
    image = np.zeros((H, W, 3), np.uint8)

    def predictor(*opts) -> Predictor:
        return Predictor(build_config(DEMO_CONFIG, ["MODEL.WEIGHTS", "", *opts]),
                         allow_random_weights=True)

    assert len(predictor()(image)["instances"]) == 2
    assert len(predictor("TEST.CONTAINMENT_THRESH", "0.8")(image)["instances"]) == 1
    tiled = predictor("TEST.CONTAINMENT_THRESH", "0.8", "TEST.TILE_SIZE", "160")
    assert isinstance(tiled.model, ContainmentFilter) and isinstance(tiled.model.model, TiledModel)
    assert not tiled.model.training


def test_exported_runtime_applies_the_rule(tmp_path, monkeypatch):
    """An exported graph (a fake backend here) gives a bunch and a piece inside it: the
    exported runtime drops the piece as the eager model does."""
    import json

    from grape_instances.data.build import build_config
    from grape_instances.inference import runtime as runtime_module
    from tests.helpers import DEMO_CONFIG

    class Backend:
        def __init__(self, path, threads):
            pass

        def run(self, image):
            boxes = np.array([[10, 10, 60, 60], [20, 20, 40, 40]], np.float32)
            return (boxes, np.array([0.9, 0.8], np.float32), np.array([0, 0]),
                    np.ones((2, 1, 28, 28), np.float32))

    monkeypatch.setitem(runtime_module.BACKENDS, "torchscript", Backend)
    cfg = build_config(DEMO_CONFIG, ["MODEL.WEIGHTS", ""])
    (tmp_path / "model.ts").write_bytes(b"")
    (tmp_path / runtime_module.EXPORT_INFO).write_text(json.dumps({
        "model_signature": runtime_module.model_signature(cfg),
        "score_thresh": cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
        "files": {"torchscript": "model.ts"}}))
    image = {"image": torch.zeros(3, 96, 128), "height": 96, "width": 128}

    def detections(*opts) -> int:
        rt = runtime_module.exported_runtime(build_config(DEMO_CONFIG, ["MODEL.WEIGHTS", "",
                                                                        *opts]),
                                             "torchscript", tmp_path)
        return len(rt.run([image])[0]["instances"])

    assert detections() == 2
    assert detections("TEST.CONTAINMENT_THRESH", "0.8") == 1
