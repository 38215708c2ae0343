"""Overlays whose bunches carry the ``instance`` id of the table, so rows match pictures.

The masks are drawn by the project's own :func:`grape_instances.predict.draw_predictions`
(Detectron2's Visualizer); this module only writes ``#id`` on each bunch, at its most
interior point (the maximum of the distance transform), where the label stays on the bunch
even for a crescent-shaped or split mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from detectron2.structures import BitMasks, Instances

from ..predict import draw_predictions


def masks_as_instances(masks: Sequence[np.ndarray], scores: Sequence[float | None],
                       shape: tuple[int, int]) -> Instances:
    """Masks read from a file as the Instances a model would return, for drawing."""
    inst = Instances(shape)
    stacked = torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, *shape), bool)
    inst.pred_masks = stacked
    inst.pred_boxes = BitMasks(stacked).get_bounding_boxes()
    inst.pred_classes = torch.zeros(len(masks), dtype=torch.int64)
    if masks and all(s is not None for s in scores):
        inst.scores = torch.tensor([float(s) for s in scores])
    return inst


def label_point(mask: np.ndarray) -> tuple[int, int]:
    """The mask pixel farthest from its border (x, y)."""
    dist = cv2.distanceTransform(np.pad(mask.astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def draw_ids(image_bgr: np.ndarray, masks: Sequence[np.ndarray], ids: Sequence[int]
             ) -> np.ndarray:
    """``#id`` in white on black outline at each bunch's interior point (a copy)."""
    out = image_bgr.copy()
    scale = max(0.35, min(out.shape[:2]) / 700)
    thick = max(1, round(scale * 2))
    for mask, bunch_id in zip(masks, ids, strict=True):
        text = f"#{bunch_id}"
        (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        x, y = label_point(mask)
        org = (int(np.clip(x - w // 2, 0, max(0, out.shape[1] - w))),
               int(np.clip(y + h // 2, h, out.shape[0] - 1)))
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2,
                    cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick,
                    cv2.LINE_AA)
    return out


def draw_bunches(image_bgr: np.ndarray, outputs: dict, metadata, masks: Sequence[np.ndarray],
                 ids: Sequence[int]) -> np.ndarray:
    """The project's overlay of ``outputs`` with every bunch's id written on it."""
    return draw_ids(draw_predictions(image_bgr, outputs, metadata), masks, ids)
