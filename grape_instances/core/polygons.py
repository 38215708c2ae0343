"""Polygon geometry shared by the converters: sanitising, clipping, shape outlines, and the
one mask -> polygon step (:func:`mask_to_polygons`).

Hand-drawn annotations are messy: vertices dragged past the image border, NaN from broken
exports, two-point "polygons", mismatched x / y lists. :func:`sanitize_polygon` turns one
region into a clean flat ``[x1, y1, x2, y2, ...]`` polygon inside the image, or ``None``
(skip), recording every fix or skip in a :class:`WarningCounter` instead of logging per
region. Clipping is exact (Sutherland-Hodgman against the image rectangle), so the mask of
a clipped polygon is the in-image part of the original, not a distorted copy.

Coordinates are bounded by the image before anything is clipped or rasterised
(:func:`far_outside`): a vertex more than one image size outside the image (``1e9`` from a
broken export) skips its region, so no later step spends memory on the numbers in a file
(pycocotools' polygon rasteriser allocates in proportion to the polygon's length: one vertex
at 1e9 took ``validate`` to 21.8 GB).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import cv2
import numpy as np

from .warning_counter import WarningCounter

# Warning kinds, shared so that every converter reports the same words.
CLIPPED = "coordinates outside the image (clipped to the border)"
NON_NUMERIC = "regions with NaN or non-numeric coordinates (skipped)"
TOO_FEW_POINTS = "polygons with fewer than 3 points (skipped)"
MISMATCHED_XY = "polygons with different numbers of x and y values (skipped)"
ZERO_AREA = "regions with zero area (skipped)"
OUTSIDE = "regions entirely outside the image (skipped)"
FAR_OUTSIDE = "regions with coordinates more than one image size outside the image (skipped)"

#: How far outside the image a vertex may lie, in image sizes (the larger side): vertices
#: dragged past the border and VIA ellipses cut by it stay well within; anything further is
#: a broken or mis-scaled file, and refusing it keeps memory in proportion to the image.
OUTSIDE_MARGIN = 1.0


def is_number(value: object) -> bool:
    """A finite int or float (bools and numeric strings are not coordinates)."""
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def numeric_array(values: object) -> np.ndarray | None:
    """``values`` as a float64 array, or None if it is not a flat list of finite numbers.

    Strings (even ``"12"``), None, nested lists, NaN and infinities are all refused.
    """
    if not isinstance(values, (list, tuple)):
        return None
    try:
        arr = np.asarray(values)
    except ValueError:  # ragged nesting
        return None
    if arr.ndim != 1 or arr.dtype.kind not in "iuf":
        return None
    arr = arr.astype(np.float64)
    return arr if np.isfinite(arr).all() else None


def far_outside(points: np.ndarray, width: float, height: float) -> bool:
    """True when a vertex of ``points`` (N x 2, or a flat ``x1, y1, ...`` array) lies more
    than :data:`OUTSIDE_MARGIN` image sizes outside the ``width`` x ``height`` image.

    Check this before rasterising or clipping a polygon: callers then refuse or skip it, so
    memory and time follow the image size, not the coordinates.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return False
    margin = OUTSIDE_MARGIN * max(width, height)
    return bool(pts[:, 0].min() < -margin or pts[:, 0].max() > width + margin
                or pts[:, 1].min() < -margin or pts[:, 1].max() > height + margin)


def entirely_outside(points: np.ndarray, width: float, height: float) -> bool:
    """True when every vertex (N x 2) lies beyond the same border: nothing to clip."""
    x, y = points[:, 0], points[:, 1]
    return bool((x <= 0).all() or (x >= width).all() or (y <= 0).all() or (y >= height).all())


def polygon_area(points: np.ndarray) -> float:
    """Absolute shoelace area of an N x 2 vertex array."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _clip_edge(points: np.ndarray, axis: int, limit: float, keep_below: bool) -> np.ndarray:
    """One Sutherland-Hodgman pass against the line ``coord[axis] == limit``."""
    if len(points) == 0:
        return points
    coord = points[:, axis]
    inside = coord <= limit if keep_below else coord >= limit
    out: list[np.ndarray] = []
    n = len(points)
    for i in range(n):
        cur, nxt = points[i], points[(i + 1) % n]
        cur_in, nxt_in = inside[i], inside[(i + 1) % n]
        if cur_in:
            out.append(cur)
        if cur_in != nxt_in:
            t = (limit - cur[axis]) / (nxt[axis] - cur[axis])
            out.append(cur + t * (nxt - cur))
    return np.asarray(out, dtype=np.float64).reshape(-1, 2)


def clip_polygon(points: np.ndarray, width: float, height: float) -> np.ndarray:
    """Intersection of a polygon (N x 2) with the rectangle ``[0, width] x [0, height]``."""
    for axis, limit, keep_below in ((0, 0.0, False), (0, width, True),
                                    (1, 0.0, False), (1, height, True)):
        points = _clip_edge(points, axis, limit, keep_below)
    return points


def sanitize_polygon(
    xs: object,
    ys: object,
    width: int,
    height: int,
    warnings: WarningCounter,
    where: str = "",
) -> list[float] | None:
    """Validate and clip one polygon given as separate x and y lists.

    Returns a flat ``[x1, y1, ...]`` list inside the image, or None when the region must
    be skipped (NaN, too few points, no area, entirely outside, or a vertex more than one
    image size outside: see :func:`far_outside`); either way the reason is counted in
    ``warnings`` (with ``where`` as the first example).
    """
    x = numeric_array(xs)
    y = numeric_array(ys)
    if x is None or y is None:
        warnings.add(NON_NUMERIC, where)
        return None
    if len(x) != len(y):
        warnings.add(MISMATCHED_XY, where)
        return None
    if len(x) < 3:
        warnings.add(TOO_FEW_POINTS, where)
        return None
    points = np.stack([x, y], axis=1)
    if polygon_area(points) <= 0.0:
        warnings.add(ZERO_AREA, where)
        return None
    if entirely_outside(points, width, height):
        warnings.add(OUTSIDE, where)
        return None
    if far_outside(points, width, height):
        warnings.add(FAR_OUTSIDE, where)
        return None
    outside = (x < 0) | (x > width) | (y < 0) | (y > height)
    if outside.any():
        warnings.add(CLIPPED, where, count=int(outside.sum()))
        points = clip_polygon(points, width, height)
        if len(points) < 3 or polygon_area(points) <= 0.0:
            warnings.add(OUTSIDE, where)
            return None
    return points.reshape(-1).tolist()


def rectangle_outline(x: float, y: float, w: float, h: float) -> tuple[list[float], list[float]]:
    """Corners of an axis-aligned rectangle as x and y lists."""
    return [x, x + w, x + w, x], [y, y, y + h, y + h]


def ellipse_outline(
    cx: float, cy: float, rx: float, ry: float, theta: float = 0.0
) -> tuple[list[float], list[float]]:
    """Vertices (about 2 px apart) of an ellipse rotated by ``theta`` radians.

    The rotation follows the HTML canvas (y down), as VIA 2 draws ``theta``.
    """
    rx, ry = abs(rx), abs(ry)
    n = max(24, min(1440, math.ceil(math.pi * max(rx, ry))))
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    ct, st = np.cos(t), np.sin(t)
    cos_th, sin_th = math.cos(theta), math.sin(theta)
    xs = cx + rx * ct * cos_th - ry * st * sin_th
    ys = cy + rx * ct * sin_th + ry * st * cos_th
    return xs.tolist(), ys.tolist()


def circle_through(points: Sequence[Sequence[float]]) -> tuple[float, float, float] | None:
    """Centre and radius of the circle through three points, None if they are collinear."""
    (ax, ay), (bx, by), (cx, cy) = points
    d = 2.0 * (ax * (by - cy) + bx * (cy - ay) + cx * (ay - by))
    if abs(d) < 1e-12:
        return None
    a2, b2, c2 = ax * ax + ay * ay, bx * bx + by * by, cx * cx + cy * cy
    ux = (a2 * (by - cy) + b2 * (cy - ay) + c2 * (ay - by)) / d
    uy = (a2 * (cx - bx) + b2 * (ax - cx) + c2 * (bx - ax)) / d
    return ux, uy, math.hypot(ax - ux, ay - uy)


#: Components of a mask smaller than this (px) are not worth a polygon to correct by hand
#: (predictions, edge auto-annotation); exact exports (the synthetic data) keep every one.
MIN_COMPONENT_AREA = 4

#: Pixel conventions of :func:`mask_to_polygons`: along pixel edges (VIA, pycocotools) or
#: through boundary-pixel centres (labelme).
POLYGON_CONVENTIONS = ("edges", "centres")


def mask_to_polygons(mask: np.ndarray, convention: str = "edges", tolerance: float = 0.0,
                     min_area: float = 0) -> list[np.ndarray]:
    """Outer outlines of a binary mask's components as K x 2 int32 ``(x, y)`` vertex arrays.

    The one mask -> polygon step of the project (synthetic export, predictions, edge
    auto-annotation). Tools rasterise polygons differently, so the outline must follow the
    tool that will read it:

    * ``"edges"`` (VIA; pycocotools): along pixel edges, pixel (x, y) covering
      [x, x+1] x [y, y+1];
    * ``"centres"`` (labelme, whose ``shape_to_mask`` fills the polygon *and* draws its
      outline): through the centres of the boundary pixels.

    Either way rasterising the polygons in that tool gives the mask back (holes aside: VIA
    and labelme polygons have none). Components whose area (pixels) is below ``min_area``
    are dropped; ``tolerance`` > 0 simplifies the outlines with ``cv2.approxPolyDP`` (fewer
    vertices to drag, less exact). Vertices stay integers either way.
    """
    if convention == "edges":
        outlines = _pixel_edge_outlines(mask)
    elif convention == "centres":
        outlines = _pixel_centre_outlines(mask)
    else:
        raise ValueError(f"unknown polygon convention {convention!r} "
                         f"(expected one of {POLYGON_CONVENTIONS})")
    polys = []
    for outline in outlines:
        if len(outline) < 3:
            continue
        outline = outline.astype(np.int32)
        if min_area > 0:
            area = cv2.contourArea(outline.reshape(-1, 1, 2))
            if convention == "centres":  # pixels on and inside the outline (Pick's theorem)
                area += cv2.arcLength(outline.reshape(-1, 1, 2), True) / 2 + 1
            if area < min_area:
                continue
        if tolerance > 0:
            outline = cv2.approxPolyDP(outline.reshape(-1, 1, 2), tolerance, True).reshape(-1, 2)
        if len(outline) >= 3:
            polys.append(outline)
    return polys


def _pixel_edge_outlines(mask: np.ndarray) -> list[np.ndarray]:
    """Outer outlines along pixel edges (K x 2 int arrays), as an annotator clicking on
    the image and pycocotools see pixel (x, y): the square [x, x+1] x [y, y+1].

    The edges are traced as the boundary-pixel centres of the mask upsampled twice: there
    a centre u maps to the pixel corner ceil(u / 2).
    """
    up = np.repeat(np.repeat(mask.astype(np.uint8), 2, axis=0), 2, axis=1)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    polygons = []
    for c in contours:
        p = (c[:, 0, :] + 1) // 2
        p = p[np.any(p != np.roll(p, 1, axis=0), axis=1)]  # repeated corners
        before, after = p - np.roll(p, 1, axis=0), np.roll(p, -1, axis=0) - p
        cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
        dot = (before * after).sum(1)
        p = p[(cross != 0) | (dot < 0)]  # straight-through vertices add nothing
        if len(p) >= 3:
            polygons.append(p)
    return polygons


def _pixel_centre_outlines(mask: np.ndarray) -> list[np.ndarray]:
    """Outer outlines through the centres of a mask's boundary pixels (K x 2 int arrays).

    labelme's convention: its ``shape_to_mask`` fills a polygon *and* draws its outline, so
    these outlines rasterise back to the mask (holes aside), whereas outlines along pixel
    edges come back one pixel too wide there.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1, 2) for c in contours if len(c) >= 3]
