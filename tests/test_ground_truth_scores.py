"""The evaluators' ceiling: the ground truth of the tiny synthetic val split, fed back as
predictions with score 1 through the evaluators training uses, scores perfectly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.structures import Boxes, BoxMode, Instances

from grape_instances.core.masks import segmentation_to_mask
from grape_instances.data.build import build_config
from grape_instances.data.datasets import register_from_config, synthetic_dataset_name
from grape_instances.engine.trainer import LoadedImagesCOCOEvaluator, Trainer
from tests.helpers import DEMO_CONFIG


def ground_truth_as_predictions(record: dict) -> Instances:
    """The record's bunches as Instances: exact masks and boxes, score 1 (Detectron2's COCO
    loader has already made the category ids contiguous, as predicted classes are)."""
    h, w = record["height"], record["width"]
    anns = [a for a in record["annotations"] if not a.get("iscrowd", 0)]
    masks = [segmentation_to_mask(a["segmentation"], h, w) > 0 for a in anns]
    boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
    classes = [a["category_id"] for a in anns]
    return Instances(
        (h, w),
        pred_masks=torch.as_tensor(np.stack(masks)) if masks else torch.zeros((0, h, w), bool),
        pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)),
        scores=torch.ones(len(anns)),
        pred_classes=torch.tensor(classes, dtype=torch.long),
    )


def evaluate_ground_truth(cfg, name: str, output_dir: str, drop_first: bool = False) -> dict:
    evaluator = Trainer.build_evaluator(cfg, name, output_dir)
    evaluator.reset()
    for i, record in enumerate(DatasetCatalog.get(name)):
        instances = ground_truth_as_predictions(record)
        if drop_first and i == 0:
            instances = instances[1:]
        inputs = {k: record[k] for k in ("file_name", "image_id", "height", "width")}
        evaluator.process([inputs], [{"instances": instances}])
    return evaluator.evaluate()


@pytest.fixture(scope="module")
def val_setup(tiny_synth, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gt_eval")
    cfg = build_config(DEMO_CONFIG, ["DATASETS.SYNTHETIC_ROOT", str(tiny_synth),
                                     "DATASETS.SEMANTIC_CACHE_DIR", str(tmp / "cache")])
    register_from_config(cfg)
    return cfg, synthetic_dataset_name("val"), tmp


def test_ground_truth_scores_100(val_setup):
    cfg, name, tmp = val_setup
    evaluators = Trainer.build_evaluator(cfg, name, str(tmp / "a"))._evaluators
    assert isinstance(evaluators[0], LoadedImagesCOCOEvaluator)
    results = evaluate_ground_truth(cfg, name, str(tmp / "a"))
    assert results["segm"]["AP"] == pytest.approx(100.0)
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert results["count"]["MAE"] == 0.0
    assert results["sem_seg"]["IoU-bunch"] == pytest.approx(100.0)
    assert results["instance"]["F1@80"] == pytest.approx(100.0)


def test_one_missed_bunch_is_below_100(val_setup):
    """The same path with one bunch left out: the scores do drop (the test above can fail)."""
    cfg, name, tmp = val_setup
    results = evaluate_ground_truth(cfg, name, str(tmp / "b"), drop_first=True)
    n_images = len(DatasetCatalog.get(name))
    assert results["segm"]["AP"] < 100.0 and results["bbox"]["AP"] < 100.0
    assert results["count"]["MAE"] == pytest.approx(1 / n_images)
    assert results["instance"]["F1@80"] < 100.0
