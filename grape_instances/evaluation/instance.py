"""Instance precision / recall / F1 of Santos et al. 2020 (the WGISD paper, Table 3).

COCO AP averages over score thresholds; a yield estimate instead keeps the detections above
one score threshold, so the paper reports how many of those are bunches (precision) and how
many bunches they find (recall) at mask IoU 0.3, 0.5 and 0.8.

Matching, per image and category, one-to-one and greedy by descending score: a prediction
takes the still unmatched non-crowd bunch it overlaps most if that mask IoU reaches the
threshold (TP); otherwise, when a crowd region of its category covers at least that fraction
of the prediction, it is ignored (the region holds an unknown number of bunches); otherwise
it is an FP. Bunches left unmatched are FN. TP / FP / FN are summed over the split (micro).

Results: ``{"instance": {"P@50", "R@50", "F1@50", "TP@50", "FP@50", "FN@50", ...}}``, one
group per IoU threshold, P / R / F1 x 100 like COCO AP.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import Instances
from detectron2.utils import comm
from pycocotools import mask as mask_utils

from ..core.masks import segmentation_to_rle
from ..core.tables import markdown_table

logger = logging.getLogger(__name__)

# Columns of the per-image count rows (one row per IoU threshold).
_TP, _FP, _FN, _IGNORED = range(4)


def threshold_key(iou_threshold: float) -> str:
    """``0.5`` -> ``"50"``, the suffix of the result keys (``F1@50``)."""
    return f"{round(100 * iou_threshold):d}"


def masks_to_rles(masks: Any) -> list[dict]:
    """Encode predicted N x H x W masks one at a time, so that no full-resolution array of
    all of them is made on the CPU (photos are 2048 x 1365 with up to 100 predictions)."""
    if hasattr(masks, "tensor"):  # BitMasks
        masks = masks.tensor
    rles = []
    for mask in masks:
        binary = mask > 0.5 if mask.is_floating_point() else mask.bool()
        rles.append(mask_utils.encode(np.asfortranarray(binary.to("cpu", torch.uint8).numpy())))
    return rles


def greedy_assignment(
    ious: np.ndarray, scores: np.ndarray, pred_classes: np.ndarray, gt_classes: np.ndarray,
    gt_crowd: np.ndarray, iou_threshold: float,
) -> np.ndarray:
    """Per prediction: the index of the bunch it matched, -1 for a false positive, -2 for a
    prediction ignored inside a crowd region (see :func:`match_greedy`)."""
    matched = np.zeros(len(gt_classes), bool)
    out = np.full(len(scores), -1, np.int64)
    for i in np.argsort(-scores, kind="stable"):
        same_class = gt_classes == pred_classes[i]
        candidates = np.flatnonzero(same_class & ~gt_crowd & ~matched)
        if len(candidates):
            best = candidates[np.argmax(ious[i, candidates])]
            if ious[i, best] >= iou_threshold:
                matched[best] = True
                out[i] = best
                continue
        crowds = np.flatnonzero(same_class & gt_crowd)
        if len(crowds) and ious[i, crowds].max() >= iou_threshold:
            out[i] = -2
    return out


def match_greedy(
    ious: np.ndarray, scores: np.ndarray, pred_classes: np.ndarray, gt_classes: np.ndarray,
    gt_crowd: np.ndarray, iou_threshold: float,
) -> tuple[int, int, int, int]:
    """``(TP, FP, FN, ignored)`` of one image at one IoU threshold.

    ``ious[i, j]`` is the mask IoU of prediction ``i`` and ground truth ``j``, or, for a crowd
    ``j``, the fraction of prediction ``i`` inside it (pycocotools' ``iscrowd`` flag).
    Predictions are taken by descending score (ties in input order).
    """
    assigned = greedy_assignment(ious, scores, pred_classes, gt_classes, gt_crowd,
                                 iou_threshold)
    tp = int((assigned >= 0).sum())
    fp = int((assigned == -1).sum())
    ignored = int((assigned == -2).sum())
    fn = int((~gt_crowd).sum()) - tp
    return tp, fp, fn, ignored


def precision_recall_f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """P, R and F1 in [0, 1]. An empty denominator gives 0, not NaN: no prediction finds
    nothing (P = 0), no bunch cannot be found (R = 0), and a NaN would poison metrics.json,
    the EvalHook and averages over seeds; the TP / FP / FN counts tell the cases apart."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


class InstanceF1Evaluator(DatasetEvaluator):
    """Instance P / R / F1 (x 100) of predictions scoring >= ``score_thresh`` at each IoU
    threshold; see the module docstring for the matching.

    Ground truth comes from ``DatasetCatalog.get(dataset_name)``, whose ``category_id`` are
    already contiguous (Detectron2's COCO loader maps them through the metadata's
    ``thing_dataset_id_to_contiguous_id``), the same ids as ``pred_classes``.
    """

    def __init__(self, dataset_name: str, score_thresh: float,
                 iou_thresholds: Sequence[float] = (0.3, 0.5, 0.8),
                 distributed: bool = True) -> None:
        self.dataset_name = dataset_name
        self.score_thresh = float(score_thresh)
        self.iou_thresholds = tuple(float(t) for t in iou_thresholds)
        if not self.iou_thresholds:
            raise ValueError("InstanceF1Evaluator needs at least one IoU threshold")
        self._distributed = distributed
        self._records = {r["file_name"]: r for r in DatasetCatalog.get(dataset_name)}
        self.reset()

    def reset(self) -> None:
        self._counts: list[np.ndarray] = []  # per image: len(iou_thresholds) x 4

    def _ground_truth(self, file_name: str) -> tuple[list[dict], np.ndarray, np.ndarray]:
        """RLEs, categories and crowd flags of one image's annotations."""
        if file_name not in self._records:
            raise KeyError(f"{file_name}: not an image of dataset {self.dataset_name!r}")
        record = self._records[file_name]
        annotations = record.get("annotations", [])
        for ann in annotations:
            if "segmentation" not in ann:
                raise ValueError(f"{file_name}: an annotation has no segmentation; instance "
                                 f"F1 needs masks")
        rles = [segmentation_to_rle(a["segmentation"], record["height"], record["width"])
                for a in annotations]
        classes = np.array([a["category_id"] for a in annotations], dtype=np.int64)
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in annotations], dtype=bool)
        return rles, classes, crowd

    def image_counts(self, file_name: str, instances: Instances) -> np.ndarray:
        """TP / FP / FN / ignored of one image, one row per IoU threshold."""
        gt_rles, gt_classes, gt_crowd = self._ground_truth(file_name)
        keep = instances.scores >= self.score_thresh
        kept = instances[keep]
        scores = kept.scores.to("cpu", torch.float64).numpy()
        pred_classes = kept.pred_classes.to("cpu").numpy().astype(np.int64)
        pred_rles = masks_to_rles(kept.pred_masks) if len(kept) else []
        if pred_rles and gt_rles:
            ious = np.asarray(mask_utils.iou(pred_rles, gt_rles, [int(c) for c in gt_crowd]))
        else:
            ious = np.zeros((len(pred_rles), len(gt_rles)))
        return np.array([
            match_greedy(ious, scores, pred_classes, gt_classes, gt_crowd, t)
            for t in self.iou_thresholds
        ], dtype=np.int64)

    def process(self, inputs, outputs) -> None:
        for inp, out in zip(inputs, outputs, strict=True):
            self._counts.append(self.image_counts(inp["file_name"], out["instances"]))

    def evaluate(self):
        counts = self._counts
        if self._distributed:
            comm.synchronize()
            counts = list(itertools.chain(*comm.gather(counts, dst=0)))
            if not comm.is_main_process():
                return {}
        totals = (np.sum(counts, axis=0) if counts
                  else np.zeros((len(self.iou_thresholds), 4), np.int64))
        metrics: dict[str, float | int] = {}
        rows = []
        for t, row in zip(self.iou_thresholds, totals, strict=True):
            key = threshold_key(t)
            tp, fp, fn = (int(row[c]) for c in (_TP, _FP, _FN))
            p, r, f1 = (100 * v for v in precision_recall_f1(tp, fp, fn))
            metrics.update({f"P@{key}": p, f"R@{key}": r, f"F1@{key}": f1,
                            f"TP@{key}": tp, f"FP@{key}": fp, f"FN@{key}": fn})
            rows.append([*(f"{v:.2f}" for v in (t, p, r, f1)), tp, fp, fn, int(row[_IGNORED])])
        table = markdown_table(["IoU", "P", "R", "F1", "TP", "FP", "FN", "ignored"], rows,
                               ["right"] * 8)
        logger.info("instance P / R / F1 of %s (%d images, score >= %.2f):\n%s",
                    self.dataset_name, len(counts), self.score_thresh, table)
        return {"instance": metrics}
