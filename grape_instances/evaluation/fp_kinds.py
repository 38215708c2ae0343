"""False positives by kind: why a prediction that counts did not match a bunch (issue 15).

After the one-to-one greedy matching of the instance P / R / F1 (evaluation.instance: by
descending score, mask IoU >= the threshold, predictions scoring >= F1_SCORE_THRESH), each
false positive gets the first kind that fits, in this order:

- ``duplicate``: its mask IoU with a bunch already matched by a higher-scoring prediction
  reaches the threshold: the bunch was found, and found again;
- ``fragment``: at least ``fragment_inside`` (0.5) of its area lies inside one bunch: a
  piece of a bunch reported as a bunch;
- ``merge``: at least two bunches each have ``merge_cover`` (0.25) or more of their area
  inside it: one mask spanning several bunches;
- ``background``: less than ``fragment_inside`` of its area lies on bunches at all;
- ``loose``: the rest: mostly on bunches, but neither inside one nor spanning two (for
  example one bunch outlined too generously to reach the IoU threshold).

Crowd regions are left out as the F1 matching leaves them out (a prediction inside one is
neither TP nor FP).
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter

import numpy as np
import torch
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from pycocotools import mask as mask_utils

from .instance import InstanceF1Evaluator, greedy_assignment, masks_to_rles

logger = logging.getLogger(__name__)

KINDS = ("fragment", "duplicate", "merge", "background", "loose")


def classify_false_positives(pred_rles: list[dict], scores, pred_classes, gt_rles: list[dict],
                             gt_classes, gt_crowd, iou_threshold: float = 0.5,
                             fragment_inside: float = 0.5,
                             merge_cover: float = 0.25) -> list[str]:
    """The kind (see the module docstring) of each false positive among the predictions
    (RLEs of one image, all of them counted: filter by score first), in prediction order."""
    scores = np.asarray(scores, np.float64)
    pred_classes = np.asarray(pred_classes, np.int64)
    gt_classes = np.asarray(gt_classes, np.int64)
    gt_crowd = np.asarray(gt_crowd, bool)
    n, m = len(pred_rles), len(gt_rles)
    if n == 0:
        return []
    if m == 0:
        return ["background"] * n
    ious = np.asarray(mask_utils.iou(pred_rles, gt_rles, [int(c) for c in gt_crowd]))
    assigned = greedy_assignment(ious, scores, pred_classes, gt_classes, gt_crowd,
                                 iou_threshold)
    plain = ~gt_crowd
    pred_areas = mask_utils.area(pred_rles).astype(np.float64)
    gt_areas = mask_utils.area(gt_rles).astype(np.float64)
    # fraction of each prediction inside each bunch: IoU against a "crowd" is |p & g| / |p|
    inside = np.asarray(mask_utils.iou(pred_rles, gt_rles, [1] * m)).reshape(n, m)
    inter = inside * pred_areas[:, None]
    cover = inter / np.maximum(gt_areas[None, :], 1)
    plain_rles = [r for r, c in zip(gt_rles, gt_crowd, strict=True) if not c]
    union = mask_utils.merge(plain_rles) if plain_rles else None
    on_bunches = (np.asarray(mask_utils.iou(pred_rles, [union], [1])).reshape(n)
                  if union is not None else np.zeros(n))
    matched = np.zeros(m, bool)
    matched[assigned[assigned >= 0]] = True
    kinds = []
    for i in range(n):
        if assigned[i] != -1:
            continue
        same = (gt_classes == pred_classes[i]) & plain
        if (same & matched).any() and ious[i, same & matched].max() >= iou_threshold:
            kinds.append("duplicate")
        elif (same.any() and inside[i, same].max() >= fragment_inside):
            kinds.append("fragment")
        elif (cover[i, same] >= merge_cover).sum() >= 2:
            kinds.append("merge")
        elif on_bunches[i] < fragment_inside:
            kinds.append("background")
        else:
            kinds.append("loose")
    return kinds


def count_kinds(kinds) -> dict[str, int]:
    """``{kind: count}`` over :data:`KINDS` (zeros included) and ``total``."""
    counts = Counter(kinds)
    out = {k: int(counts.get(k, 0)) for k in KINDS}
    out["total"] = sum(out.values())
    return out


class FalsePositiveKindsEvaluator(DatasetEvaluator):
    """The false positives of the instance P / R / F1 at one IoU threshold (0.5), by kind:
    ``{"fp_kinds": {"fragment", "duplicate", "merge", "background", "loose", "total"}}``;
    ``total`` equals the F1 evaluator's FP at that threshold (same ground truth, same
    matching)."""

    def __init__(self, dataset_name: str, score_thresh: float, iou_threshold: float = 0.5,
                 distributed: bool = True) -> None:
        self._truth = InstanceF1Evaluator(dataset_name, score_thresh, (iou_threshold,), False)
        self.dataset_name = dataset_name
        self.score_thresh = float(score_thresh)
        self.iou_threshold = float(iou_threshold)
        self._distributed = distributed
        self.reset()

    def reset(self) -> None:
        self._kinds: list[str] = []

    def image_kinds(self, file_name: str, instances) -> list[str]:
        gt_rles, gt_classes, gt_crowd = self._truth._ground_truth(file_name)
        kept = instances[instances.scores >= self.score_thresh]
        if not len(kept):
            return []
        return classify_false_positives(
            masks_to_rles(kept.pred_masks), kept.scores.to("cpu", torch.float64).numpy(),
            kept.pred_classes.to("cpu").numpy(), gt_rles, gt_classes, gt_crowd,
            self.iou_threshold,
        )

    def process(self, inputs, outputs) -> None:
        for inp, out in zip(inputs, outputs, strict=True):
            self._kinds.extend(self.image_kinds(inp["file_name"], out["instances"]))

    def evaluate(self):
        kinds = self._kinds
        if self._distributed:
            comm.synchronize()
            kinds = list(itertools.chain(*comm.gather(kinds, dst=0)))
            if not comm.is_main_process():
                return {}
        counts = count_kinds(kinds)
        logger.info("false positives of %s at mask IoU %.2f, score >= %.2f, by kind: %s",
                    self.dataset_name, self.iou_threshold, self.score_thresh, counts)
        return {"fp_kinds": counts}
