"""Instance precision / recall / F1 (Santos et al. 2020): hand-computed squares.

Squares are ``(top, left, height, width)`` in pixels; mask IoUs are worked out in comments.
"""

import itertools
import math
import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Instances

from grape_instances.core.masks import mask_to_rle
from grape_instances.data.build import build_config
from grape_instances.data.datasets import register_from_config, synthetic_dataset_name
from grape_instances.engine.trainer import Trainer
from grape_instances.evaluation import InstanceF1Evaluator
from grape_instances.evaluation.instance import precision_recall_f1
from tests.helpers import DEMO_CONFIG

_names = itertools.count()
SIZE = (40, 40)


def box_mask(top, left, height, width, size=SIZE) -> np.ndarray:
    mask = np.zeros(size, bool)
    mask[top:top + height, left:left + width] = True
    return mask


def polygon(top, left, height, width) -> list[list[float]]:
    """The same square as a COCO polygon (pycocotools fills exactly those pixels)."""
    bottom, right = top + height, left + width
    return [[left, top, right, top, right, bottom, left, bottom]]


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (crowd annotations): run lengths in column-major order."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def ann(segmentation, category_id=0, iscrowd=0) -> dict:
    return {"segmentation": segmentation, "category_id": category_id, "iscrowd": iscrowd}


def register(images: dict[str, list[dict]], thing_classes=("bunch",), id_map=None) -> str:
    """A dataset of ``SIZE`` images: file name -> annotations; returns its unique name."""
    name = f"hand_instances_{os.getpid()}_{next(_names)}"
    records = [{"file_name": f, "image_id": i, "height": SIZE[0], "width": SIZE[1],
                "annotations": anns} for i, (f, anns) in enumerate(images.items())]
    DatasetCatalog.register(name, lambda: records)
    meta = MetadataCatalog.get(name)
    meta.set(thing_classes=list(thing_classes))
    if id_map:
        meta.set(thing_dataset_id_to_contiguous_id=id_map)
    return name


def predictions(*preds) -> Instances:
    """Instances from ``(mask, score)`` or ``(mask, score, class)`` tuples."""
    masks = np.stack([p[0] for p in preds]) if preds else np.zeros((0, *SIZE), bool)
    return Instances(
        SIZE,
        pred_masks=torch.as_tensor(masks),
        scores=torch.tensor([float(p[1]) for p in preds]),
        pred_classes=torch.tensor([p[2] if len(p) > 2 else 0 for p in preds], dtype=torch.long),
    )


def evaluate(name, outputs: dict[str, Instances], score_thresh=0.5):
    evaluator = InstanceF1Evaluator(name, score_thresh)
    evaluator.reset()
    for file_name, instances in outputs.items():
        evaluator.process([{"file_name": file_name}], [{"instances": instances}])
    return evaluator.evaluate()["instance"]


def counts(res, key) -> tuple[int, int, int]:
    return res[f"TP@{key}"], res[f"FP@{key}"], res[f"FN@{key}"]


# Three 10 x 10 bunches (100 px each) on a 40 x 40 image, as RLE, polygons and RLE again.
G0, G1, G2 = (0, 0, 10, 10), (0, 20, 10, 10), (20, 0, 10, 10)
THREE_BUNCHES = [ann(mask_to_rle(box_mask(*G0))), ann(polygon(*G1)),
                 ann(mask_to_rle(box_mask(*G2)))]
THREE_PREDICTIONS = predictions(
    (box_mask(*G0), 0.9),  # = G0: IoU 1
    (box_mask(0, 22, 10, 10), 0.8),  # G1 moved 2 px: 80 / (100 + 100 - 80) = 0.667
    (box_mask(20, 5, 10, 10), 0.7),  # G2 moved 5 px: 50 / 150 = 0.333
    (box_mask(30, 30, 10, 10), 0.6),  # on no bunch
    (box_mask(*G2), 0.3),  # = G2, but below the score threshold
)


def test_tp_fp_fn_at_each_iou_threshold():
    name = register({"a.jpg": THREE_BUNCHES})
    res = evaluate(name, {"a.jpg": THREE_PREDICTIONS}, score_thresh=0.5)
    # IoU >= 0.3: G0, G1, G2 found, the stray square is an FP.
    assert counts(res, 30) == (3, 1, 0)
    # 0.5: the 0.333 match fails: FP, and G2 is missed.
    assert counts(res, 50) == (2, 2, 1)
    # 0.8: only the exact G0 match is left.
    assert counts(res, 80) == (1, 3, 2)
    assert res["P@30"] == pytest.approx(75.0) and res["R@30"] == pytest.approx(100.0)
    assert res["F1@30"] == pytest.approx(100 * 6 / 7)  # 2 TP / (2 TP + FP + FN)
    assert (res["P@50"], res["R@50"]) == pytest.approx((50.0, 200 / 3))
    assert res["F1@50"] == pytest.approx(100 * 4 / 7)
    assert (res["P@80"], res["R@80"], res["F1@80"]) == pytest.approx((25.0, 100 / 3, 100 * 2 / 7))


def test_predictions_below_the_score_threshold_are_not_counted():
    name = register({"a.jpg": THREE_BUNCHES})
    res = evaluate(name, {"a.jpg": THREE_PREDICTIONS}, score_thresh=0.2)
    # The 0.3-score copy of G2 now counts. At 0.3 G2 already went to the 0.7 prediction
    # (IoU 0.333), so the copy is an FP; at 0.5 and 0.8 G2 is free and the copy finds it.
    assert counts(res, 30) == (3, 2, 0)
    assert counts(res, 50) == (3, 2, 0)
    assert counts(res, 80) == (2, 3, 1)


def test_greedy_matching_gives_the_bunch_to_the_higher_score():
    # Two adjacent bunches G0 (cols 0-9) and G1 (cols 10-19) on rows 0-9.
    name = register({"b.jpg": [ann(polygon(0, 0, 10, 10)), ann(polygon(0, 10, 10, 10))]})
    wide = box_mask(0, 2, 10, 15)  # cols 2-16, 150 px: IoU with G0 80 / 170 = 0.471,
    # with G1 70 / 180 = 0.389
    # Listed lowest score first: the order of the model's output does not matter.
    res = evaluate(name, {"b.jpg": predictions((box_mask(0, 0, 10, 10), 0.8), (wide, 0.9))})
    # 0.3: the wide 0.9 prediction takes G0 (its best match); the exact G0 copy (0.8) is
    # left with G1 (IoU 0) and is an FP although the pairing wide-G1, copy-G0 would give
    # 2 TP: matching is greedy by score, not by IoU.
    assert counts(res, 30) == (1, 1, 1)
    # 0.5 and 0.8: the wide prediction matches nothing, so the copy gets G0.
    assert counts(res, 50) == (1, 1, 1)
    assert counts(res, 80) == (1, 1, 1)

    # The same copy twice: the second is an FP, not a second TP of one bunch.
    copy = box_mask(0, 0, 10, 10)
    res = evaluate(name, {"b.jpg": predictions((copy, 0.9), (copy, 0.8))})
    assert counts(res, 50) == (1, 1, 1)


def test_predictions_inside_crowd_regions_are_ignored():
    crowd = box_mask(20, 0, 20, 40)  # rows 20-39: 800 px, an unknown number of bunches
    name = register({"c.jpg": [ann(polygon(*G0)), ann(uncompressed_rle(crowd), iscrowd=1)]})
    res = evaluate(name, {"c.jpg": predictions(
        (box_mask(*G0), 0.9),  # TP
        # Wholly inside the crowd: intersection over prediction 1 (its IoU is 100 / 800 =
        # 0.125, so it would be an FP if the crowd were scored by IoU): ignored.
        (box_mask(25, 5, 10, 10), 0.8),
        # Rows 16-25: 6 of its 10 rows inside the crowd, intersection over prediction 0.6:
        # ignored at 0.3 and 0.5, FP at 0.8.
        (box_mask(16, 20, 10, 10), 0.7),
    )})
    assert counts(res, 30) == (1, 0, 0)  # and the crowd is never a missed bunch
    assert counts(res, 50) == (1, 0, 0)
    assert counts(res, 80) == (1, 1, 0)
    assert res["P@50"] == 100.0 and res["P@80"] == 50.0


def test_images_without_predictions_or_bunches():
    name = register({"bunches.jpg": [ann(polygon(*G0)), ann(polygon(*G1))], "empty.jpg": []})
    res = evaluate(name, {"bunches.jpg": predictions(),
                          "empty.jpg": predictions((box_mask(*G0), 0.9))})
    # Both bunches missed, the prediction on the empty image is an FP.
    assert counts(res, 50) == (0, 1, 2)
    assert (res["P@50"], res["R@50"], res["F1@50"]) == (0.0, 0.0, 0.0)

    # No prediction at all: P is 0, not NaN (documented in precision_recall_f1).
    res = evaluate(name, {"bunches.jpg": predictions(), "empty.jpg": predictions()})
    assert counts(res, 30) == (0, 0, 2)
    assert not any(math.isnan(v) for v in res.values())
    assert (res["P@30"], res["R@30"], res["F1@30"]) == (0.0, 0.0, 0.0)

    # Predictions but no bunch in the split: R is 0, not NaN.
    only_empty = register({"empty.jpg": []})
    res = evaluate(only_empty, {"empty.jpg": predictions((box_mask(*G0), 0.9))})
    assert counts(res, 80) == (0, 1, 0) and res["R@80"] == 0.0


def test_precision_recall_f1_formulas():
    assert precision_recall_f1(3, 1, 2) == pytest.approx((0.75, 0.6, 2 * 0.75 * 0.6 / 1.35))
    assert precision_recall_f1(0, 0, 0) == (0.0, 0.0, 0.0)


def test_a_class_mismatch_is_not_a_match():
    # COCO ids 1 and 2; dataset records already hold the contiguous ids 0 and 1.
    name = register(
        {"d.jpg": [ann(polygon(*G0), category_id=0), ann(polygon(*G1), category_id=1)]},
        thing_classes=("bunch", "berry"), id_map={1: 0, 2: 1},
    )
    res = evaluate(name, {"d.jpg": predictions(
        (box_mask(*G0), 0.9, 1),  # exactly on the class-0 bunch, but says class 1: FP
        (box_mask(*G1), 0.8, 1),  # class 1 on the class-1 bunch: TP
    )})
    assert counts(res, 50) == (1, 1, 1)
    res = evaluate(name, {"d.jpg": predictions((box_mask(*G0), 0.9, 0),
                                              (box_mask(*G1), 0.8, 1))})
    assert counts(res, 80) == (2, 0, 0)

    # A crowd region only excuses predictions of its own class.
    crowd = register({"e.jpg": [ann(polygon(20, 0, 20, 40), category_id=1, iscrowd=1)]},
                     thing_classes=("bunch", "berry"))
    res = evaluate(crowd, {"e.jpg": predictions((box_mask(25, 5, 10, 10), 0.9, 0),
                                                (box_mask(25, 25, 10, 10), 0.8, 1))})
    assert counts(res, 50) == (0, 1, 0)


def test_an_iou_equal_to_the_threshold_is_a_match():
    name = register({"f.jpg": [ann(polygon(*G0))]})
    tall = box_mask(0, 0, 20, 10)  # G0 and the 10 rows below it: IoU 100 / 200 = 0.5 exactly
    res = evaluate(name, {"f.jpg": predictions((tall, 0.9))})
    assert counts(res, 50) == (1, 0, 0) and counts(res, 80) == (0, 1, 1)


def test_config_keys_and_wiring_into_instance_models(tiny_synth, tmp_path):
    opts = ["DATASETS.SYNTHETIC_ROOT", str(tiny_synth),
            "DATASETS.SEMANTIC_CACHE_DIR", str(tmp_path / "cache")]
    cfg = build_config(DEMO_CONFIG, opts)
    assert cfg.TEST.F1_SCORE_THRESH == 0.5
    assert tuple(cfg.TEST.F1_IOU_THRESHOLDS) == (0.3, 0.5, 0.8)
    register_from_config(cfg)
    val = synthetic_dataset_name("val")
    evaluators = Trainer.build_evaluator(cfg, val, str(tmp_path / "inference"))._evaluators
    found = [e for e in evaluators if isinstance(e, InstanceF1Evaluator)]
    assert len(found) == 1 and found[0].iou_thresholds == (0.3, 0.5, 0.8)
    boxes_only = build_config(DEMO_CONFIG, [*opts, "MODEL.MASK_ON", "False"])
    evaluators = Trainer.build_evaluator(boxes_only, val, str(tmp_path / "inference"))._evaluators
    assert not any(isinstance(e, InstanceF1Evaluator) for e in evaluators)
