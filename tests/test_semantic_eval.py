"""Semantic metrics (SemSegEvaluator + Dice), the instance merge, bunch counting, and a
semantic model trained, evaluated and drawn through the tools."""

import itertools
import json
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Instances

from grape_instances.evaluation import (
    CountEvaluator,
    MergedInstancesEvaluator,
    SemanticEvaluator,
    instances_to_semantic,
)
from grape_instances.evaluation.semantic import dice_scores, label_map_to_scores
from tests.helpers import run_tool

_names = itertools.count()

# Hand-made ground truth of two images (255 = ignore) and a prediction for each.
GT_A = np.array([[0, 0, 1, 1],
                 [0, 1, 1, 255]], np.uint8)
PRED_A = np.array([[0, 1, 1, 0],
                   [0, 1, 1, 1]])
GT_B = np.zeros((2, 2), np.uint8)
PRED_B = np.zeros((2, 2), int)


def register_semantic_set(tmp_path, gts) -> str:
    """A semantic dataset whose records point at hand-written label PNGs."""
    name = f"hand_sem_{os.getpid()}_{next(_names)}"
    records = []
    for i, gt in enumerate(gts):
        png = tmp_path / f"gt_{name}_{i}.png"
        cv2.imwrite(str(png), gt)
        records.append({"file_name": f"img{i}.jpg", "sem_seg_file_name": str(png),
                        "height": gt.shape[0], "width": gt.shape[1], "image_id": i})
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(stuff_classes=["background", "bunch"], ignore_label=255)
    return name


def scores_of(pred: np.ndarray) -> torch.Tensor:
    return label_map_to_scores(torch.as_tensor(pred), 2)


def test_semantic_evaluator_matches_hand_computed_metrics(tmp_path):
    name = register_semantic_set(tmp_path, [GT_A, GT_B])
    out = tmp_path / "inference"
    evaluator = SemanticEvaluator(name, distributed=False, output_dir=str(out))
    evaluator.reset()
    evaluator.process([{"file_name": "img0.jpg"}], [{"sem_seg": scores_of(PRED_A)}])
    evaluator.process([{"file_name": "img1.jpg"}], [{"sem_seg": scores_of(PRED_B)}])
    res = evaluator.evaluate()["sem_seg"]
    # Pixels pooled over both images, the ignored pixel left out (7 + 4 = 11 counted):
    # bunch:      TP 3 ((0,2), (1,1), (1,2)), FP 1 ((0,1)), FN 1 ((0,3))
    # background: TP 2 + 4 = 6, FP 1 ((0,3)), FN 1 ((0,1))
    iou_bunch, iou_bg = 3 / (3 + 1 + 1), 6 / (6 + 1 + 1)
    dice_bunch, dice_bg = 2 * 3 / (2 * 3 + 1 + 1), 2 * 6 / (2 * 6 + 1 + 1)
    assert res["IoU-bunch"] == pytest.approx(100 * iou_bunch)  # 60
    assert res["IoU-background"] == pytest.approx(100 * iou_bg)  # 75
    assert res["mIoU"] == pytest.approx(100 * (iou_bunch + iou_bg) / 2)  # 67.5
    assert res["Dice-bunch"] == pytest.approx(100 * dice_bunch)  # 75
    assert res["Dice-background"] == pytest.approx(100 * dice_bg)  # 85.71
    assert res["mDice"] == pytest.approx(100 * (dice_bunch + dice_bg) / 2)
    assert res["pACC"] == pytest.approx(100 * 9 / 11)
    # GT has 7 background and 4 bunch pixels.
    assert res["fwIoU"] == pytest.approx(100 * (7 / 11 * iou_bg + 4 / 11 * iou_bunch))
    saved = json.loads((out / "sem_seg_evaluation.json").read_text())
    assert saved["Dice-bunch"] == pytest.approx(res["Dice-bunch"])
    assert (out / "sem_seg_predictions.json").is_file()


def test_dice_of_a_class_absent_everywhere_is_nan_and_left_out_of_the_mean():
    # [pred, gt] with an extra ignore row / column; class 1 never predicted nor present.
    conf = np.array([[5, 0, 2],
                     [0, 0, 0],
                     [0, 0, 0]])
    res = dice_scores(conf, ["background", "bunch"])
    assert res["Dice-background"] == pytest.approx(100.0)
    assert np.isnan(res["Dice-bunch"])
    assert res["mDice"] == pytest.approx(100.0)


def make_instances(masks, scores, classes) -> Instances:
    inst = Instances(masks[0].shape)
    inst.pred_masks = torch.as_tensor(np.stack(masks)).bool()
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    inst.pred_classes = torch.tensor(classes)
    return inst


def rect(y0, y1, x0, x1, shape=(6, 8)):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_instance_merge_is_the_union_above_the_threshold():
    masks = [rect(0, 3, 0, 3), rect(2, 5, 2, 6), rect(4, 6, 6, 8)]
    inst = make_instances(masks, [0.9, 0.3, 0.6], [0, 0, 0])
    merged = instances_to_semantic(inst, 0.5, 2)
    assert merged.dtype == torch.long and merged.shape == (6, 8)
    np.testing.assert_array_equal(merged.numpy(), (masks[0] | masks[2]).astype(int))
    # The threshold is inclusive: a score equal to it counts.
    at = instances_to_semantic(inst, 0.6, 2).numpy()
    np.testing.assert_array_equal(at, (masks[0] | masks[2]).astype(int))
    np.testing.assert_array_equal(instances_to_semantic(inst, 0.95, 2).numpy(), 0)
    np.testing.assert_array_equal(instances_to_semantic(inst, 0.0, 2).numpy(),
                                  (masks[0] | masks[1] | masks[2]).astype(int))


def test_instance_merge_higher_score_wins_between_classes():
    low, high = rect(0, 4, 0, 4), rect(2, 6, 2, 6)
    inst = make_instances([high, low], [0.8, 0.7], [1, 0])  # class 1 scores higher
    merged = instances_to_semantic(inst, 0.5, 3).numpy()
    expected = np.zeros((6, 8), int)
    expected[low] = 1
    expected[high] = 2
    np.testing.assert_array_equal(merged, expected)
    with pytest.raises(ValueError, match="no semantic class"):
        instances_to_semantic(inst, 0.5, 2)


def test_merged_instances_are_scored_like_a_semantic_model(tmp_path):
    name = register_semantic_set(tmp_path, [GT_A, GT_B])
    # PRED_A as two bunches plus a low-scoring one that the threshold drops.
    first = np.zeros((2, 4), bool)
    first[:, 1:3] = True
    second = np.zeros((2, 4), bool)
    second[1, 3] = True
    dropped = np.zeros((2, 4), bool)
    dropped[:, 0] = True
    evaluator = MergedInstancesEvaluator(name, 0.5, distributed=False)
    evaluator.reset()
    evaluator.process([{"file_name": "img0.jpg"}],
                      [{"instances": make_instances([first, second, dropped],
                                                    [0.9, 0.5, 0.49], [0, 0, 0])}])
    evaluator.process([{"file_name": "img1.jpg"}],
                      [{"instances": make_instances([np.zeros((2, 2), bool)], [0.1], [0])}])
    res = evaluator.evaluate()["sem_seg"]
    # Same maps as PRED_A / PRED_B, so the hand numbers of the test above.
    assert res["IoU-bunch"] == pytest.approx(60.0)
    assert res["mIoU"] == pytest.approx(67.5)
    assert res["Dice-bunch"] == pytest.approx(75.0)


def test_count_mae_by_hand():
    name = f"hand_count_{os.getpid()}_{next(_names)}"
    anns = lambda n, crowd=0: [{"iscrowd": 0}] * n + [{"iscrowd": 1}] * crowd  # noqa: E731
    records = [{"file_name": "a.jpg", "annotations": anns(2, crowd=1)},
               {"file_name": "b.jpg", "annotations": anns(1)},
               {"file_name": "c.jpg", "annotations": []}]
    DatasetCatalog.register(name, lambda: records)
    evaluator = CountEvaluator(name, score_threshold=0.5, distributed=False)
    evaluator.reset()
    m = [np.zeros((2, 2), bool)]

    def pred(scores):
        return {"instances": make_instances(m * len(scores), scores, [0] * len(scores))
                if scores else Instances((2, 2), scores=torch.zeros(0))}

    # a: 2 of 3 score >= 0.5 vs 2 bunches (the crowd is not counted) -> |2 - 2| = 0
    # b: 3 of 3 vs 1 -> 2;  c: none vs none -> 0
    evaluator.process([{"file_name": "a.jpg"}], [pred([0.9, 0.5, 0.2])])
    evaluator.process([{"file_name": "b.jpg"}, {"file_name": "c.jpg"}],
                      [pred([0.95, 0.8, 0.6]), pred([])])
    res = evaluator.evaluate()["count"]
    assert res["MAE"] == pytest.approx(2 / 3)
    assert res["bias"] == pytest.approx(2 / 3)
    assert res["mean_true"] == pytest.approx(1.0)
    assert res["mean_predicted"] == pytest.approx(5 / 3)


def test_count_ignores_predictions_inside_crowd_regions():
    """A crowd region is left out of the true count, so a detection inside it must be left
    out of the predicted count too (else the error is biased upward)."""
    from pycocotools import mask as mask_utils

    name = f"crowd_count_{os.getpid()}_{next(_names)}"
    crowd = np.zeros((4, 8), np.uint8)
    crowd[:, :4] = 1  # left half: a crowd of bunches
    crowd_rle = mask_utils.encode(np.asfortranarray(crowd))
    crowd_rle["counts"] = crowd_rle["counts"].decode()
    records = [{"file_name": "a.jpg", "height": 4, "width": 8, "annotations": [
        {"iscrowd": 1, "segmentation": crowd_rle}, {"iscrowd": 0}]}]
    DatasetCatalog.register(name, lambda: records)
    evaluator = CountEvaluator(name, score_threshold=0.5, distributed=False)
    evaluator.reset()
    inside, outside = np.zeros((4, 8), bool), np.zeros((4, 8), bool)
    inside[1:3, 1:3] = True  # wholly in the crowd
    outside[1:3, 5:7] = True  # the one annotated bunch
    instances = make_instances([inside, outside], [0.9, 0.9], [0, 0])
    evaluator.process([{"file_name": "a.jpg"}], [{"instances": instances}])
    res = evaluator.evaluate()["count"]
    assert res["mean_predicted"] == pytest.approx(1.0)
    assert res["MAE"] == pytest.approx(0.0)


def test_draw_leaves_background_undrawn():
    from grape_instances.inference.draw import draw_predictions

    image = np.full((64, 64, 3), 120, np.uint8)
    labels = np.zeros((64, 64), int)
    labels[40:, 40:] = 1
    meta = MetadataCatalog.get(f"draw_{os.getpid()}_{next(_names)}").set(
        stuff_classes=["background", "bunch"], stuff_colors=[[0, 0, 0], [200, 0, 200]])
    drawn = draw_predictions(image, {"sem_seg": scores_of(labels)}, meta)
    assert drawn.shape == image.shape
    np.testing.assert_array_equal(drawn[:30, :30], image[:30, :30])
    assert np.abs(drawn[48:60, 48:60].astype(int) - 120).max() > 30


TINY = ["INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96",
        "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96",
        "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0"]


@pytest.mark.slow
def test_semantic_model_trains_evaluates_and_draws_through_the_tools(tiny_synth, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny model: one thread is enough
    out = tmp_path / "segnet"
    data = ["DATASETS.SYNTHETIC_ROOT", str(tiny_synth),
            "DATASETS.SEMANTIC_CACHE_DIR", str(tmp_path / "cache"), *TINY]
    config = "configs/semantic/segnet_grapes_cpu_demo.yaml"
    run_tool("train_net.py", "--config-file", config, *data,
             "SOLVER.MAX_ITER", "3", "OUTPUT_DIR", str(out), check=True)
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert any("sem_seg/mIoU" in m for m in metrics)
    assert any("total_loss" in m for m in metrics)
    assert (out / "inference" / "sem_seg_evaluation.json").is_file()

    proc = run_tool("train_net.py", "--config-file", config, "--eval-only", *data,
                    "MODEL.WEIGHTS", str(out / "model_final.pth"),
                    "OUTPUT_DIR", str(tmp_path / "eval"), check=True)
    logged = proc.stdout + proc.stderr
    assert "copypaste: mIoU,fwIoU,mACC,pACC,mDice" in logged
    assert "Dice-bunch" in logged

    vis = tmp_path / "vis"
    run_tool("visualize.py", "--config-file", config, "--input",
             str(tiny_synth / "images" / "val"), "--output", str(vis), "--opts",
             "MODEL.WEIGHTS", str(out / "model_final.pth"), *data, check=True)
    val_images = sorted((tiny_synth / "images" / "val").glob("*.jpg"))
    for image in val_images:
        assert (vis / f"{image.stem}.png").is_file()
        labels = cv2.imread(str(vis / f"{image.stem}_labels.png"), cv2.IMREAD_UNCHANGED)
        assert labels.shape == cv2.imread(str(image)).shape[:2]
        assert set(np.unique(labels)) <= {0, 1}
    assert json.loads((vis / "coco_results.json").read_text()) == []
