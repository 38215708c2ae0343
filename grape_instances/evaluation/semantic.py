"""Semantic metrics for every model: Detectron2's SemSegEvaluator plus Dice, and instance
models scored the same way once their instances are merged into one label map.

Results (``results["sem_seg"]``) keep SemSegEvaluator's keys (``mIoU``, ``fwIoU``, ``mACC``,
``pACC``, ``IoU-<class>``, ``ACC-<class>``, boundary IoU) and add ``Dice-<class>`` (Dice =
F1 = 2 TP / (2 TP + FP + FN), pixels of the whole split pooled) and ``mDice``, all x 100.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import SemSegEvaluator
from detectron2.structures import Instances
from torch.nn import functional as F

from ..core.fileio import write_json_atomic

logger = logging.getLogger(__name__)


def dice_scores(conf_matrix: np.ndarray, class_names: list[str]) -> dict[str, float]:
    """``Dice-<class>`` and ``mDice`` (x 100) from SemSegEvaluator's confusion matrix.

    The matrix is ``[pred, gt]`` with one extra last row / column for ignored pixels, which
    are left out; a class absent from both prediction and ground truth gets NaN and is left
    out of the mean, as SemSegEvaluator does for IoU.
    """
    counts = conf_matrix[:-1, :-1].astype(float)
    tp = counts.diagonal()
    gt = counts.sum(axis=0)
    pred = counts.sum(axis=1)
    denom = gt + pred
    dice = np.full(len(class_names), np.nan)
    valid = denom > 0
    dice[valid] = 2 * tp[valid] / denom[valid]
    res = {f"Dice-{name}": 100 * float(d) for name, d in zip(class_names, dice, strict=True)}
    res["mDice"] = 100 * float(dice[valid].mean()) if valid.any() else float("nan")
    return res


class SemanticEvaluator(SemSegEvaluator):
    """SemSegEvaluator (mIoU, fwIoU, mACC, pACC, per-class IoU) with Dice per class.

    Reads the ground truth of a semantic view (``grape_instances.data.semantic``). With an
    ``output_dir`` it writes ``sem_seg_predictions.json`` (Detectron2's RLE format) and
    ``sem_seg_evaluation.json`` atomically.
    """

    def evaluate(self):
        output_dir, self._output_dir = self._output_dir, None  # written below, atomically
        try:
            results = super().evaluate()
        finally:
            self._output_dir = output_dir
        if results is None:  # not the main process
            return None
        metrics = results["sem_seg"]
        metrics.update(dice_scores(self._conf_matrix, list(self._class_names)))
        if output_dir:
            os.makedirs(output_dir, exist_ok=True)
            write_json_atomic(os.path.join(output_dir, "sem_seg_predictions.json"),
                              self._predictions)
            write_json_atomic(os.path.join(output_dir, "sem_seg_evaluation.json"), metrics,
                              indent=2, nan_as_null=True)  # IoU of an absent class: NaN
        logger.info("Dice of %s: %s", self._dataset_name, ", ".join(
            f"{k} {v:.2f}" for k, v in metrics.items() if "Dice" in k))
        return results


def instances_to_semantic(
    instances: Instances, score_threshold: float, num_classes: int,
    merge_classes: bool = False,
) -> torch.Tensor:
    """Merge predicted instance masks into one H x W label map (long).

    Instances scoring at least ``score_threshold`` paint ``pred_class + 1`` (1 for every
    class with ``merge_classes``, as in a merged semantic view) over their mask, in order of
    increasing score, so where masks of different classes overlap the higher-scoring one
    wins; everything else is 0 (background).
    """
    if not instances.has("pred_masks"):
        raise ValueError("instances have no pred_masks: a mask model is needed (MODEL.MASK_ON)")
    height, width = instances.image_size
    keep = instances.scores >= score_threshold
    masks = instances.pred_masks[keep].bool()
    labels = instances.pred_classes[keep].long() + 1
    if merge_classes:
        labels = torch.ones_like(labels)
    if len(labels) and int(labels.max()) >= num_classes:
        raise ValueError(f"predicted class {int(labels.max()) - 1} has no semantic class among "
                         f"{num_classes}")
    label_map = torch.zeros((height, width), dtype=torch.long, device=masks.device)
    for i in instances.scores[keep].argsort(stable=True).tolist():
        label_map[masks[i]] = labels[i]
    return label_map


def label_map_to_scores(label_map: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One-hot C x H x W scores whose argmax is ``label_map`` (the ``sem_seg`` contract)."""
    return F.one_hot(label_map, num_classes).permute(2, 0, 1).float()


class MergedInstancesEvaluator(SemanticEvaluator):
    """Scores an instance model's ``instances`` as a semantic map (see instances_to_semantic)."""

    def __init__(self, dataset_name: str, score_threshold: float = 0.5, **kwargs) -> None:
        super().__init__(dataset_name, **kwargs)
        self.score_threshold = score_threshold
        # A merged semantic view (grape_instances.data.semantic) scores every class as one.
        self.merge_classes = bool(MetadataCatalog.get(dataset_name).get("merge_classes", False))

    def process(self, inputs, outputs):
        merged = [
            {"sem_seg": label_map_to_scores(
                instances_to_semantic(o["instances"].to(self._cpu_device), self.score_threshold,
                                      self._num_classes, self.merge_classes),
                self._num_classes,
            )}
            for o in outputs
        ]
        super().process(inputs, merged)

    def evaluate(self):
        logger.info("merging instances scoring >= %.2f into semantic maps", self.score_threshold)
        return super().evaluate()
