"""Drop a predicted mask that lies mostly inside a higher-scoring one (``TEST.CONTAINMENT_THRESH``).

Mask R-CNN's box NMS keeps a small box inside a big one (their box IoU is low), so a bunch
found whole can also be reported as its pieces: on WGISD photos most false positives are such
fragments lying inside one true bunch, and each one adds to the count. This rule removes, in
descending score order, every mask whose area lies at least ``thresh`` inside a kept
higher-scoring mask of the same class. It runs after the model (and after tiled merging) in
the predictor, in evaluation and on exported models (all built by ``wrap.inference_model``),
so AP, P / R / F1 and counts all score what it keeps.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _box_window(box: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    x1, y1 = min(int(np.ceil(box[2])), width), min(int(np.ceil(box[3])), height)
    return x0, y0, max(x1, x0), max(y1, y0)


def contained_keep(masks: torch.Tensor, boxes: np.ndarray, scores: np.ndarray,
                   classes: np.ndarray, thresh: float) -> np.ndarray:
    """Which of N masks to keep: in descending score order, a mask with at least ``thresh``
    of its area inside an already kept mask of the same class is dropped.

    ``masks`` is N x H x W (bool, or float probabilities thresholded at 0.5), ``boxes`` N x 4
    XYXY boxes that hold each mask (Mask R-CNN pastes masks inside their boxes), used only to
    limit the pixels compared. An empty mask is kept (nothing of it lies inside another).
    """
    n = len(scores)
    keep = np.ones(n, bool)
    if n < 2 or thresh <= 0:
        return keep
    height, width = masks.shape[-2:]
    binary = masks > 0.5 if masks.is_floating_point() else masks.bool()
    windows = [_box_window(b, height, width) for b in np.asarray(boxes, np.float64)]
    areas = np.array([int(binary[i, y0:y1, x0:x1].sum()) for i, (x0, y0, x1, y1)
                      in enumerate(windows)])
    kept: list[int] = []
    for i in np.argsort(-np.asarray(scores), kind="stable"):
        ax0, ay0, ax1, ay1 = windows[i]
        for j in kept:
            if classes[j] != classes[i] or areas[i] == 0:
                continue
            bx0, by0, bx1, by1 = windows[j]
            x0, y0, x1, y1 = max(ax0, bx0), max(ay0, by0), min(ax1, bx1), min(ay1, by1)
            if x1 <= x0 or y1 <= y0:
                continue
            inter = int((binary[i, y0:y1, x0:x1] & binary[j, y0:y1, x0:x1]).sum())
            if inter >= thresh * areas[i]:
                keep[i] = False
                break
        if keep[i]:
            kept.append(int(i))
    return keep


def drop_contained(instances, thresh: float):
    """``instances`` (Detectron2 Instances with ``pred_masks``) without the masks lying at
    least ``thresh`` inside a higher-scoring one; unchanged when ``thresh`` is 0 or there are
    no masks."""
    if thresh <= 0 or len(instances) < 2 or not instances.has("pred_masks"):
        return instances
    keep = contained_keep(
        instances.pred_masks,
        instances.pred_boxes.tensor.detach().cpu().numpy(),
        instances.scores.detach().cpu().numpy(),
        instances.pred_classes.detach().cpu().numpy(),
        thresh,
    )
    if keep.all():
        return instances
    return instances[torch.as_tensor(keep, device=instances.scores.device)]


class ContainmentFilter(nn.Module):
    """A model wrapper: the wrapped model's outputs with :func:`drop_contained` applied to
    each image's ``instances`` (at inference; training passes straight through). It starts in
    the wrapped model's mode: a wrapper made around an eval-mode model (the Predictor's, an
    exported graph) filters at once, not only after an ``eval()`` call."""

    def __init__(self, model: nn.Module, thresh: float) -> None:
        super().__init__()
        self.model = model
        self.thresh = float(thresh)
        self.train(model.training)

    @classmethod
    def wrap(cls, cfg, model: nn.Module) -> nn.Module:
        """``model`` wrapped when ``TEST.CONTAINMENT_THRESH`` > 0, else ``model`` itself."""
        thresh = float(cfg.TEST.CONTAINMENT_THRESH)
        return cls(model, thresh) if thresh > 0 else model

    def forward(self, batched_inputs):
        outputs = self.model(batched_inputs)
        if self.training:
            return outputs
        for out in outputs:
            if "instances" in out:
                out["instances"] = drop_contained(out["instances"], self.thresh)
        return outputs
