"""Shape features of one bunch mask, in pixels: what a 2-D photo alone can tell.

Conventions (chosen so that a W x H pixel rectangle measures exactly W by H):

* ``area_px``: mask pixels.
* ``length_px`` / ``width_px``: sides of the minimum-area rotated rectangle
  (``cv2.minAreaRect``) around the *corners* of the outline pixels, each pixel covering
  [x, x+1] x [y, y+1]; length is the longer side.
* ``perimeter_px``: length of the outer outline through the boundary pixel centres
  (``cv2.findContours`` + ``cv2.arcLength``, all pieces summed), so a W x H rectangle has
  2 (W - 1) + 2 (H - 1); gaps inside the bunch do not count.
* ``compactness``: 4 pi area / perimeter^2: about 0.9 for a pixel disc (the outline's
  diagonal steps lengthen it a little), lower for elongated or ragged bunches.
* ``hsv_h_deg``, ``hsv_s``, ``hsv_v``: mean colour of the mask (a ripeness proxy); the hue is a
  circular mean in degrees (red sits at both ends of the hue circle), S and V in 0..1.
* ``pieces``: 8-connected parts of at least :data:`MIN_PIECE_PX` pixels (leaves or other
  bunches in front split a bunch: an occlusion proxy).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..core.polygons import MIN_COMPONENT_AREA

#: Smaller specks of a mask are not counted as pieces (the same rule as polygon export).
MIN_PIECE_PX = MIN_COMPONENT_AREA


def outline_corners(mask: np.ndarray) -> np.ndarray:
    """The four corners of every outer-outline pixel (N x 2 float32, x then y): enough to
    bound the mask exactly, at a fraction of the cost of all its pixels."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    pts = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float32)
    return np.concatenate([pts, pts + (1, 0), pts + (0, 1), pts + (1, 1)])


def min_area_rect(points: np.ndarray) -> tuple[float, float, float]:
    """``(length, width, angle)`` of the minimum-area rectangle around ``points``; ``angle``
    is the direction of the long side in radians, in image coordinates (y down)."""
    box = cv2.boxPoints(cv2.minAreaRect(points.astype(np.float32)))
    a, b = box[1] - box[0], box[2] - box[1]
    la, lb = float(np.hypot(*a)), float(np.hypot(*b))
    long_side = a if la >= lb else b
    return max(la, lb), min(la, lb), math.atan2(float(long_side[1]), float(long_side[0]))


def count_pieces(mask: np.ndarray, min_px: int = MIN_PIECE_PX) -> int:
    """Visible parts of the mask (8-connected, specks under ``min_px`` ignored)."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return int((stats[1:, cv2.CC_STAT_AREA] >= min_px).sum()) if n > 1 else 0


def mean_hsv(image_bgr: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    """Mean hue (degrees, circular), saturation and value (0..1) of the masked pixels."""
    pixels = image_bgr[mask.astype(bool)].reshape(-1, 1, 3)
    hsv = cv2.cvtColor(pixels, cv2.COLOR_BGR2HSV_FULL).reshape(-1, 3).astype(np.float64)
    angle = hsv[:, 0] * (2 * math.pi / 256)  # _FULL: hue 0..255 spans the whole circle
    hue = math.degrees(math.atan2(np.sin(angle).mean(), np.cos(angle).mean())) % 360.0
    return hue, float(hsv[:, 1].mean() / 255), float(hsv[:, 2].mean() / 255)


def shape_features(mask: np.ndarray, image_bgr: np.ndarray | None = None) -> dict[str, float]:
    """All pixel features of one non-empty mask (see the module doc for the conventions)."""
    mask = mask.astype(np.uint8)
    area = int(np.count_nonzero(mask))
    if area == 0:
        raise ValueError("empty mask")
    x, y, w, h = cv2.boundingRect(mask)
    length, width, _ = min_area_rect(outline_corners(mask))
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    perimeter = float(sum(cv2.arcLength(c, True) for c in contours))
    row: dict[str, float] = {
        "box_x": x, "box_y": y, "box_w": w, "box_h": h,
        "area_px": area, "length_px": length, "width_px": width, "perimeter_px": perimeter,
        "compactness": 4 * math.pi * area / perimeter**2 if perimeter > 0 else None,
        "pieces": max(1, count_pieces(mask)),  # a bunch made only of specks is still one
    }
    if image_bgr is not None:
        row["hsv_h_deg"], row["hsv_s"], row["hsv_v"] = mean_hsv(image_bgr, mask)
    return row
