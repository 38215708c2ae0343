"""Bunch counting error of instance models: how far the number of confident detections per
image is from the number of annotated bunches (yield estimation counts bunches)."""

from __future__ import annotations

import itertools
import logging

import numpy as np
from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

logger = logging.getLogger(__name__)


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


class CountEvaluator(DatasetEvaluator):
    """Per image |#instances scoring >= threshold - #annotated bunches|, averaged.

    Crowd annotations are not counted: a crowd region holds an unknown number of bunches.
    Results: ``{"count": {"MAE", "bias", "mean_predicted", "mean_true"}}``.
    """

    def __init__(self, dataset_name: str, score_threshold: float = 0.5,
                 distributed: bool = True) -> None:
        self.score_threshold = score_threshold
        self._distributed = distributed
        self._true_counts = {
            r["file_name"]: sum(1 for a in r.get("annotations", []) if not a.get("iscrowd", 0))
            for r in DatasetCatalog.get(dataset_name)
        }
        self.reset()

    def reset(self) -> None:
        self._pairs: list[tuple[int, int]] = []

    def process(self, inputs, outputs) -> None:
        for inp, out in zip(inputs, outputs, strict=True):
            predicted = int((out["instances"].scores >= self.score_threshold).sum())
            self._pairs.append((predicted, self._true_counts[inp["file_name"]]))

    def evaluate(self):
        pairs = self._pairs
        if self._distributed:
            comm.synchronize()
            pairs = list(itertools.chain(*comm.all_gather(pairs)))
            if not comm.is_main_process():
                return None
        result = count_errors([p for p, _ in pairs], [t for _, t in pairs])
        logger.info("bunch count at score >= %.2f over %d images: %s", self.score_threshold,
                    len(pairs), result)
        return {"count": result}
