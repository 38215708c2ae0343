"""Drawing predictions: Detectron2's Visualizer over a model's outputs (or masks read from a
file), and overlays whose bunches carry the ``instance`` id of the measurement table, so rows
match pictures.

Ids are written at each bunch's most
interior point (the maximum of the distance transform), where the label stays on the bunch
even for a crescent-shaped or split mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from detectron2.structures import BitMasks, Instances
from detectron2.utils.visualizer import ColorMode, Visualizer

from ..data.semantic import BACKGROUND


def draw_predictions(image_bgr: np.ndarray, outputs: dict, metadata) -> np.ndarray:
    """Overlay masks, boxes and scores (or a semantic map, background left undrawn) on the
    image; returns BGR."""
    vis = Visualizer(image_bgr[:, :, ::-1], metadata, instance_mode=ColorMode.IMAGE)
    if "instances" in outputs:
        drawn = vis.draw_instance_predictions(outputs["instances"].to("cpu"))
    elif "sem_seg" in outputs:
        labels = outputs["sem_seg"].argmax(dim=0).to("cpu")
        if metadata.stuff_classes[0] == BACKGROUND:
            labels[labels == 0] = len(metadata.stuff_classes)  # the Visualizer skips these
        drawn = vis.draw_sem_seg(labels)
    else:
        raise ValueError(f"nothing to draw in outputs with keys {sorted(outputs)}")
    return drawn.get_image()[:, :, ::-1]



def masks_as_instances(masks: Sequence[np.ndarray], scores: Sequence[float | None],
                       shape: tuple[int, int], classes: Sequence[int] | None = None
                       ) -> Instances:
    """Masks read from a file as the Instances a model would return, for drawing;
    ``classes`` are indices into the drawing metadata's ``thing_classes`` (default 0).
    An image without any bunch gives empty Instances."""
    inst = Instances(shape)
    stacked = (torch.from_numpy(np.stack(masks)) if masks
               else torch.zeros((0, *shape), dtype=torch.bool))
    inst.pred_masks = stacked
    inst.pred_boxes = BitMasks(stacked).get_bounding_boxes()
    inst.pred_classes = torch.as_tensor(list(classes) if classes is not None
                                        else [0] * len(masks), dtype=torch.int64)
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
