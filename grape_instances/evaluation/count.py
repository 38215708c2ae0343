"""Bunch counting error of instance models: how far the number of confident detections per
image is from the number of annotated bunches (yield estimation counts bunches)."""

from __future__ import annotations

import itertools
import logging

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from pycocotools import mask as mask_utils

from ..core.masks import segmentation_to_rle
from .instance import masks_to_rles

logger = logging.getLogger(__name__)


def count_label(classes) -> str:
    """What is counted, in the dataset's own words: "bunch count" for the project's one
    class, "beet, weed count" for someone else's."""
    names = [str(c) for c in classes or []] or ["bunch"]
    return f"{', '.join(names)} count"


def count_errors(predicted: list[int], true: list[int]) -> dict[str, float]:
    """``MAE`` (mean |predicted - true| per image), ``bias`` (mean predicted - true) and the
    mean counts; NaN when there are no images."""
    pred, gt = np.asarray(predicted, float), np.asarray(true, float)
    if not len(pred):
        return {k: float("nan") for k in ("MAE", "bias", "mean_predicted", "mean_true")}
    return {
        "MAE": float(np.abs(pred - gt).mean()),
        "bias": float((pred - gt).mean()),
        "mean_predicted": float(pred.mean()),
        "mean_true": float(gt.mean()),
    }


def outside_crowd(instances, crowd_rles: list[dict], max_inside: float = 0.5) -> np.ndarray:
    """Which predictions lie (by mask, or by box for box models) mostly outside the crowd
    regions: a detection inside one is as uncountable as the crowd itself."""
    keep = np.ones(len(instances), bool)
    if not crowd_rles or not len(instances):
        return keep
    if instances.has("pred_masks"):
        dets, crowds = masks_to_rles(instances.pred_masks), crowd_rles
    else:
        boxes = instances.pred_boxes.tensor.numpy().astype(float)
        dets = np.c_[boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]  # COCO x, y, w, h
        crowds = mask_utils.toBbox(crowd_rles)
    inside = mask_utils.iou(dets, crowds, [1] * len(crowd_rles))  # fraction of each det
    return ~(np.asarray(inside).max(axis=1) >= max_inside)


class CountEvaluator(DatasetEvaluator):
    """Per image |#instances scoring >= threshold - #annotated bunches|, averaged.

    Crowd annotations are not counted, since a crowd region holds an unknown number of
    bunches, and neither are predictions lying mostly inside one: counting those while
    leaving the region out of the truth would bias the error upward.
    Results: ``{"count": {"MAE", "bias", "mean_predicted", "mean_true"}}``.
    """

    def __init__(self, dataset_name: str, score_threshold: float = 0.5,
                 distributed: bool = True) -> None:
        self.score_threshold = score_threshold
        self._distributed = distributed
        self._true_counts: dict[str, int] = {}
        self._crowds: dict[str, list[dict]] = {}
        self._label = count_label(MetadataCatalog.get(dataset_name).get("thing_classes"))
        for r in DatasetCatalog.get(dataset_name):
            anns = r.get("annotations", [])
            self._true_counts[r["file_name"]] = sum(1 for a in anns if not a.get("iscrowd", 0))
            crowd = [segmentation_to_rle(a["segmentation"], r["height"], r["width"])
                     for a in anns if a.get("iscrowd", 0) and a.get("segmentation")]
            if crowd:
                self._crowds[r["file_name"]] = crowd
        self.reset()

    def reset(self) -> None:
        self._pairs: list[tuple[int, int]] = []

    def process(self, inputs, outputs) -> None:
        for inp, out in zip(inputs, outputs, strict=True):
            instances = out["instances"]
            instances = instances[instances.scores >= self.score_threshold].to("cpu")
            crowd = self._crowds.get(inp["file_name"], [])
            predicted = int(outside_crowd(instances, crowd).sum())
            self._pairs.append((predicted, self._true_counts[inp["file_name"]]))

    def evaluate(self):
        pairs = self._pairs
        if self._distributed:
            comm.synchronize()
            pairs = list(itertools.chain(*comm.all_gather(pairs)))
            if not comm.is_main_process():
                return None
        result = count_errors([p for p, _ in pairs], [t for _, t in pairs])
        logger.info("%s at score >= %.2f over %d images: %s", self._label,
                    self.score_threshold, len(pairs), result)
        return {"count": result}
