"""Metric size and volume of a bunch from its mask, an aligned depth image and the camera.

Depth images are single-channel 16-bit PNGs (or TIFFs) in millimetres, aligned pixel for
pixel with the RGB image, 0 meaning no reading (the convention of the GrapesNet importer,
the synthetic Dataset-4 twin and the RGB-D models; read by
:func:`grape_instances.core.depth.read_depth`, found by
:func:`grape_instances.core.depth.find_depth`). Pixels without a reading are ignored; a
bunch with none gets no metric fields.

How the numbers are made (pinhole camera, focal lengths ``fx``, ``fy`` in pixels):

* ``median_depth_mm``: median depth of the mask's pixels with a reading. The median, not
  the mean, so that holes in the bunch showing the background, and speckle, do not pull it.
* One pixel at depth Z covers Z/fx by Z/fy mm. Every size is that of the silhouette at the
  median depth, i.e. at the front of the bunch (its visible surface), which is a few per
  cent nearer than its axis: for a sphere of radius R at distance D the underestimate of
  lengths is about 0.3 R / D, so it is nearly constant for bunches photographed from
  similar distances, and a fitted weight model absorbs it.
* ``area_cm2`` = area_px x (Z/fx) (Z/fy); ``length_cm`` / ``width_cm``: the minimum-area
  rectangle of the outline, in millimetres (anisotropic pixels handled).
* ``volume_cm3``: the silhouette as a solid of revolution about its long axis. The mask is
  resampled to square pixels, rotated so that the long axis of its minimum-area rectangle
  is horizontal (bilinear, so slices are not aliased), and each one-pixel slice x across
  the axis contributes pi (w(x) / 2)^2 dx, where w(x) is the mask's width in that slice
  (its pixel count, so gaps between berries are not filled in). A disc of radius r gives
  the sphere 4/3 pi r^3 and an ellipse the prolate spheroid 4/3 pi a b^2; a real bunch, a
  cone of berries with air between them, is overestimated by its packing fraction, which
  is again what a weight model calibrates.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import cv2
import numpy as np

from ..core.errors import GrapeInputError
from ..core.fileio import read_json
from .geometry import min_area_rect, outline_corners

METRIC_FIELDS = ("median_depth_mm", "area_cm2", "length_cm", "width_cm", "volume_cm3")


#: Focal lengths (pixels) a camera can have: below 10 px a 2048 px photo would see more
#: than 179 degrees, above 1e6 px less than 0.12; outside, the sizes overflow or vanish.
MIN_FOCAL_PX, MAX_FOCAL_PX = 10.0, 1e6
#: fx / fy of real cameras is close to 1 (square pixels; anamorphic lenses reach 2).
MAX_FOCAL_RATIO = 4.0


def _check_focal(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise GrapeInputError(f"camera: {name} = {value!r} is not a positive number")
    if not MIN_FOCAL_PX <= value <= MAX_FOCAL_PX:
        raise GrapeInputError(f"camera: {name} = {value:g} px is outside {MIN_FOCAL_PX:g} .. "
                              f"{MAX_FOCAL_PX:g} (focal lengths are in pixels, not mm)")


@dataclass(frozen=True)
class Camera:
    """Focal lengths in pixels, or a horizontal field of view (fx = fy from the width)."""

    fx: float | None = None
    fy: float | None = None
    fov_deg: float | None = None

    def __post_init__(self) -> None:
        if self.fov_deg is not None:
            if isinstance(self.fov_deg, bool) or not isinstance(self.fov_deg, (int, float)) \
                    or not 0 < self.fov_deg < 180:
                raise GrapeInputError(f"--fov-deg {self.fov_deg}: must be between 0 and 180")
        elif self.fx is None or self.fy is None:
            raise GrapeInputError("camera: give both fx and fy, or a field of view")
        else:
            for name, v in (("fx", self.fx), ("fy", self.fy)):
                _check_focal(name, v)
            ratio = self.fx / self.fy
            if not 1 / MAX_FOCAL_RATIO <= ratio <= MAX_FOCAL_RATIO:
                raise GrapeInputError(f"camera: fx / fy = {self.fx:g} / {self.fy:g} = "
                                      f"{ratio:.3g}: pixels that far from square are no "
                                      "camera's (fx and fy swapped with other values?)")

    def focal(self, width: int) -> tuple[float, float]:
        """``(fx, fy)`` for an image ``width`` pixels wide; one line when a field of view
        gives a focal length outside MIN_FOCAL_PX .. MAX_FOCAL_PX for this width."""
        if self.fov_deg is not None:
            f = (width / 2) / math.tan(math.radians(self.fov_deg) / 2)
            if not MIN_FOCAL_PX <= f <= MAX_FOCAL_PX:
                raise GrapeInputError(f"--fov-deg {self.fov_deg:g}: gives a focal length of "
                                      f"{f:.3g} px for a {width} px wide image, outside "
                                      f"{MIN_FOCAL_PX:g} .. {MAX_FOCAL_PX:g}")
            return f, f
        return float(self.fx), float(self.fy)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> Camera:
        """``{"fx": .., "fy": ..}`` (cx, cy and other keys ignored), at the top level or
        under ``camera`` / ``intrinsics``, as the synthetic Dataset-4 twin writes it."""
        data = read_json(path)
        if isinstance(data, dict):
            for key in ("camera", "intrinsics"):
                if isinstance(data.get(key), dict) and "fx" not in data:
                    data = data[key]
        if not isinstance(data, dict) or "fx" not in data:
            raise GrapeInputError(f"{path}: camera JSON must be an object with fx and fy "
                                  "(pixels)")
        fx, fy = data["fx"], data.get("fy", data["fx"])
        for name, v in (("fx", fx), ("fy", fy)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise GrapeInputError(f"{path}: {name} = {json_text(v)} is not a number")
        try:
            return cls(fx=float(fx), fy=float(fy))
        except GrapeInputError as e:
            raise GrapeInputError(f"{path}: {e}") from None


def json_text(value: object) -> str:
    """A JSON value as the file spells it (true, null, "text"), cut short."""
    import json

    return json.dumps(value)[:40]


def revolution_volume_px(mask: np.ndarray, y_scale: float = 1.0) -> float:
    """Volume, in cubic pixels (of x-pixel size), of the mask turned about its long axis.

    ``y_scale`` = (size of a pixel along y) / (along x): the mask is first stretched to square
    pixels. See the module doc for the method.
    """
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.float32)
    if y_scale != 1.0:
        h = max(1, round(crop.shape[0] * y_scale))
        crop = cv2.resize(crop, (crop.shape[1], h), interpolation=cv2.INTER_LINEAR)
    _, _, angle = min_area_rect(outline_corners(crop > 0.5))
    side = int(math.ceil(math.hypot(*crop.shape))) + 4
    canvas = np.zeros((side, side), np.float32)
    y0, x0 = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
    canvas[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
    rot = cv2.getRotationMatrix2D((side / 2, side / 2), math.degrees(angle), 1.0)
    turned = cv2.warpAffine(canvas, rot, (side, side), flags=cv2.INTER_LINEAR)
    widths = turned.sum(axis=0)
    return float(np.sum(math.pi * (widths / 2) ** 2))


def metric_features(mask: np.ndarray, depth: np.ndarray, fx: float, fy: float
                    ) -> dict[str, float] | None:
    """Median depth, area, length, width and volume in cm of one bunch; None when none of
    its pixels has a depth reading."""
    mask = mask.astype(bool)
    readings = depth[mask]
    readings = readings[readings > 0]
    if readings.size == 0:
        return None
    z = float(np.median(readings))
    sx, sy = z / fx, z / fy  # mm per pixel along x and y
    corners = outline_corners(mask) * np.array([sx, sy], np.float32)
    length_mm, width_mm, _ = min_area_rect(corners)
    volume_mm3 = revolution_volume_px(mask, sy / sx) * sx**3
    return {
        "median_depth_mm": z,
        "area_cm2": int(mask.sum()) * sx * sy / 100.0,
        "length_cm": length_mm / 10.0,
        "width_cm": width_mm / 10.0,
        "volume_cm3": volume_mm3 / 1000.0,
    }
