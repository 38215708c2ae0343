"""Synthetic RGB-D: grape bunches at metric distances, seen by a camera with a depth sensor.

Why: GrapesNet's Datasets 3 and 4 (RGB-D vineyard scenes, and weighed single bunches) cannot
be downloaded here, yet measuring bunches in cm, fitting a weight model and training on a
depth channel all need RGB-D images whose geometry and weights are known exactly.

The bunches are those of :mod:`.render` (z-buffered berry spheres), built in millimetres:
a variety (:data:`VARIETIES`) gives the berry radius and the berry count; the bunch is then
sized so that its *whole* berry cloud (the interior and the back, which no camera sees) has
about that many berries. Its weight is the volume of all those berries (ellipsoids: the
berries are stretched ``elong`` times along the axis) times a juice density of about
1.05 g/cm³, plus a rachis (2-5 % of the berries, plus 1-4 g). Loose and compact bunches
differ in how many interior berries are present (``fill``), so the weight is not a function
of what is visible.

Camera model (:class:`Camera`): square pixels, focal length ``f`` in pixels, principal point
(cx, cy). Each bunch is projected with weak perspective at its own distance ``Z`` (mm, camera
to the bunch axis): 1 mm is ``f / Z`` pixels over the whole bunch. The outline of a roundish
bunch lies near its axis plane, so its size in pixels is what a full pinhole projection
gives; the depth camera sees the front berries, 3-6 % nearer than the axis, as in reality.
The depth image holds, per pixel, the distance to the front-most surface: the berry
sphere's front surface, the stem at its bunch's axis, a leaf, or the background (a coral
sheet behind a single bunch, or the vine canopy behind a scene). Scenes are painted far to
near, so nearer bunches hide farther ones in colour, depth and masks alike.

Depth sensor (:func:`sensor_depth`): Gaussian noise growing with Z² (about 1.4 mm at 600 mm),
rounding to whole millimetres, and holes (0 = no reading) as RGB-D cameras leave them:
around depth edges (occlusion shadows), in blobs (specular berries, low texture), as
scattered pixels, and out of range.

This module renders in memory only; the files (and their layout, shared with the importer
:mod:`grape_instances.convert.grapesnet` and the measuring tools) are written by
:func:`grape_instances.synthetic.export.generate_rgbd_scenes`.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import cv2
import numpy as np

from ..core.errors import GrapeInputError
from .render import (
    SynthConfig,
    _annotate,
    _bunch_geometry,
    _Canvas,
    _draw_bunch,
    _draw_leaf,
    _finish,
    _natural_background,
    _occluding_leaf,
    _random_light,
    _smooth_noise,
)

#: Grams per cm³ of berry (grape juice and skin), drawn per bunch around this value.
BERRY_DENSITY = (1.03, 1.07)
#: Rachis (stems inside the bunch): this fraction of the berries' weight, plus a constant (g).
RACHIS_FRACTION = (0.02, 0.05)
RACHIS_GRAMS = (1.0, 4.0)


@dataclass(frozen=True)
class Variety:
    """A grape variety as the generator sees it: berry colour, size, count and compactness."""

    name: str
    color: str  # a key of render.VARIETY_COLORS
    berry_radius_mm: tuple[float, float]
    berries: tuple[int, int]  # berries in the whole bunch, hidden ones included
    fill: tuple[float, float]  # fraction of the interior berries present (loose .. compact)


VARIETIES: dict[str, Variety] = {v.name: v for v in (
    Variety("cabernet", "purple", (5.8, 7.2), (70, 170), (0.7, 1.0)),
    Variety("thompson_seedless", "green", (7.5, 9.0), (80, 200), (0.45, 0.95)),
    Variety("crimson", "red", (8.5, 10.5), (50, 140), (0.4, 0.9)),
    Variety("sharad_black", "purple", (9.5, 12.0), (35, 100), (0.5, 0.9)),
)}


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics in pixels (square pixels: fx = fy)."""

    width: int
    height: int
    f: float
    cx: float
    cy: float

    @classmethod
    def for_frame(cls, width: int, height: int, hfov_deg: float = 58.0) -> Camera:
        """A centred camera with this horizontal field of view (about an RGB-D sensor's)."""
        f = (width / 2) / np.tan(np.radians(hfov_deg) / 2)
        return cls(width, height, float(round(f, 3)), (width - 1) / 2, (height - 1) / 2)

    def as_dict(self) -> dict:
        """What ``camera.json`` holds."""
        return {"fx": self.f, "fy": self.f, "cx": self.cx, "cy": self.cy,
                "width": self.width, "height": self.height}


@dataclass
class RgbdConfig:
    """What an RGB-D generator draws (frame, distances, bunches per image, varieties).

    The defaults are those of the Dataset 4 twin; :func:`scene_config` gives the scenes'.
    """

    width: int = 320
    height: int = 240
    hfov_deg: float = 58.0
    distance_mm: tuple[float, float] = (400.0, 900.0)  # camera to (the nearest) bunch axis
    min_bunches: int = 1
    max_bunches: int = 1
    depth_step_mm: tuple[float, float] = (50.0, 300.0)  # scenes: depth between neighbours
    p_same_variety: float = 0.75  # scenes: a bunch has the first bunch's variety
    p_leaf_occlusion: float = 0.0
    p_wing: float = 0.35
    varieties: tuple[str, ...] = tuple(VARIETIES)
    min_area: int = 30
    depth_noise: float = 4e-6  # sigma in mm = depth_noise * Z², Z in mm
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        problems = []
        if not (32 <= self.width <= 4096 and 32 <= self.height <= 4096):
            problems.append(f"frame {self.width}x{self.height} is outside 32..4096 px")
        if not 10 <= self.hfov_deg <= 120:
            problems.append(f"hfov_deg={self.hfov_deg} is outside 10..120")
        lo, hi = self.distance_mm
        if not 150 <= lo <= hi <= 5000:
            problems.append(f"distance_mm={self.distance_mm} must satisfy 150 <= lo <= hi <= 5000")
        if not 1 <= self.min_bunches <= self.max_bunches:
            problems.append(f"need 1 <= min_bunches <= max_bunches, got "
                            f"{self.min_bunches}, {self.max_bunches}")
        unknown = [v for v in self.varieties if v not in VARIETIES]
        if unknown or not self.varieties:
            problems.append(f"varieties must be a non-empty subset of {sorted(VARIETIES)}")
        if problems:
            raise GrapeInputError("synthetic RGB-D config: " + "; ".join(problems))

    @property
    def camera(self) -> Camera:
        return Camera.for_frame(self.width, self.height, self.hfov_deg)


def scene_config(**overrides) -> RgbdConfig:
    """Defaults of the multi-bunch scenes: 2-5 bunches, the first 0.4-0.8 m away and the
    others 5-30 cm nearer or farther than a neighbour, some behind leaves."""
    base = {"min_bunches": 2, "max_bunches": 5, "distance_mm": (400.0, 800.0),
            "p_leaf_occlusion": 0.3}
    return RgbdConfig(**{**base, **overrides})


@dataclass
class RgbdScene:
    """One rendered RGB-D image with exact per-bunch masks and each bunch's truth."""

    image: np.ndarray  # H x W x 3 uint8 BGR
    depth: np.ndarray  # H x W uint16 mm, 0 = no reading (what the sensor gives)
    true_depth: np.ndarray  # H x W float32 mm, noise-free and hole-free
    masks: list[np.ndarray]  # visible part of each bunch (bool H x W)
    bunches: list[dict]  # per mask: variety, distance_mm, weight_g, berries, ...
    berry_radii_mm: list[np.ndarray]  # per mask: the radius of every berry, hidden ones too
    berry_visible: list[np.ndarray]  # per mask: whether each berry shows in the image


def _mark_visible(info: dict, label: np.ndarray, k: int) -> None:
    """Record which berries of the bunch painted as ``k`` still show in the final label map."""
    seen = info["win"][label.reshape(-1)[info["pix"]] == k]
    info["visible"] = np.zeros(info["radii"].size, bool)
    info["visible"][seen] = True


# --------------------------------------------------------------------------- bunches


def berry_weight_g(radii_mm: np.ndarray, elong: float, density: float) -> float:
    """Weight of berries given their radii: ellipsoids stretched ``elong`` times, in grams."""
    volume_cm3 = 4.0 / 3.0 * np.pi * np.asarray(radii_mm, np.float64) ** 3 * elong / 1000.0
    return float(volume_cm3.sum() * density)


@dataclass
class _BunchPlan:
    variety: Variety
    rng: np.random.Generator  # the bunch's own stream, used by _draw_bunch only
    berry_r_mm: float
    fill: float
    length_mm: float
    aspect: float
    z_mm: float
    x: float = 0.0  # top of the bunch axis, pixels
    y: float = 0.0

    def scale(self, camera: Camera) -> float:
        """Pixels per millimetre at this bunch's distance."""
        return camera.f / self.z_mm


def _plan_bunch(rng: np.random.Generator, cfg: RgbdConfig, synth: SynthConfig,
                variety: Variety) -> _BunchPlan:
    """Draw a bunch of ``variety`` and size it so that its whole cloud has the drawn count."""
    r_mm = rng.uniform(*variety.berry_radius_mm)
    target = rng.uniform(*variety.berries)
    fill = rng.uniform(*variety.fill)
    brng = np.random.default_rng(rng.integers(0, 2**63))
    length = 14.0 * r_mm
    aspect = 0.6
    for _ in range(3):  # berries grow as length³ for a given berry size
        g = _bunch_geometry(copy.deepcopy(brng), synth, length, berry_r=r_mm, fill=fill)
        length *= (target / max(g.radius.size, 1)) ** (1 / 3)
        aspect = g.aspect
    return _BunchPlan(variety, brng, float(r_mm), float(fill), float(length), aspect, 0.0)


def _draw_planned(canvas: _Canvas, depth: np.ndarray, synth: SynthConfig, light, camera: Camera,
                  plan: _BunchPlan, bunch_id: int) -> dict:
    """Paint a planned bunch in colour and depth; returns its truth (weight from all berries)."""
    s = plan.scale(camera)
    start = len(canvas.layers)
    info = _draw_bunch(plan.rng, canvas, synth, light, bunch_id, np.array([plan.x, plan.y]),
                       plan.length_mm * s, plan.variety.color, False,
                       berry_r=plan.berry_r_mm * s, fill=plan.fill)
    flat = depth.reshape(-1)
    for kind, _, idx in canvas.layers[start:]:
        if kind == "stem":
            flat[idx] = plan.z_mm
        elif kind == "bunch":  # the same pixels, in the same order, as info["pix"]
            flat[idx] = plan.z_mm - info["front"] / s
    radii_mm = info["radii"] / s
    density = plan.rng.uniform(*BERRY_DENSITY)
    berries_g = berry_weight_g(radii_mm, info["elong"], density)
    rachis_g = berries_g * plan.rng.uniform(*RACHIS_FRACTION) + plan.rng.uniform(*RACHIS_GRAMS)
    info.update(
        variety_name=plan.variety.name, distance_mm=plan.z_mm, scale=s,
        weight_g=berries_g + rachis_g, berries_g=berries_g, radii_mm=radii_mm,
        density=density, fill=plan.fill, length_mm=plan.length_mm,
    )
    return info


def _paint_leaf_depth(canvas: _Canvas, depth: np.ndarray, start: int, z_mm: float) -> None:
    """Give the leaves painted since layer ``start`` the depth ``z_mm``."""
    flat = depth.reshape(-1)
    for kind, _, idx in canvas.layers[start:]:
        if kind == "leaf":
            flat[idx] = z_mm


# --------------------------------------------------------------------------- sensor


def sensor_depth(rng: np.random.Generator, true_mm: np.ndarray, noise: float = 4e-6,
                 valid_range: tuple[float, float] = (150.0, 4000.0)) -> np.ndarray:
    """What an RGB-D camera reports for a true depth image: uint16 mm, 0 = no reading.

    Noise grows with the square of the distance (stereo / structured light); holes appear
    where the depth jumps (one side of an edge is seen by one imager only), in blobs
    (specular or textureless patches), at scattered pixels, and outside ``valid_range``.
    """
    h, w = true_mm.shape
    z = true_mm.astype(np.float32)
    out = z + rng.standard_normal((h, w), dtype=np.float32) * (noise * z * z)
    holes = np.zeros((h, w), bool)
    kernel = np.ones((3, 3), np.uint8)
    jump = cv2.dilate(z, kernel) - cv2.erode(z, kernel) > np.maximum(0.04 * z, 20.0)
    band = cv2.dilate(jump.astype(np.uint8), np.ones((1, 3), np.uint8)).astype(bool)
    holes |= band & (rng.random((h, w)) < rng.uniform(0.3, 0.7))
    blobs = _smooth_noise(rng, h, w, max(2, min(h, w) // 24), 2)
    holes |= blobs > rng.uniform(2.0, 2.6)
    holes |= rng.random((h, w)) < rng.uniform(0.002, 0.02)
    holes |= (z < valid_range[0]) | (z > valid_range[1])
    out = np.where(holes, 0.0, np.round(out))
    return np.clip(out, 0, 65535).astype(np.uint16)


# --------------------------------------------------------------------------- images


def _canopy_depth(rng: np.random.Generator, depth: np.ndarray, z_mm: float) -> None:
    """The vine canopy behind a scene: an uneven surface some decimetres behind the bunches."""
    h, w = depth.shape
    depth[:] = z_mm + 120.0 * _smooth_noise(rng, h, w, 3, 3)
    depth[:] = np.maximum(depth, z_mm - 100.0)


def render_rgbd_scene(rng: np.random.Generator, cfg: RgbdConfig) -> RgbdScene:
    """Several touching bunches at different depths in a vineyard (GrapesNet Dataset 3 style).

    Bunches hang beside earlier ones (so they touch or overlap in the image) but at another
    depth, mostly of one variety (similar colours): colour alone barely separates them,
    depth does. Painted far to near; masks are the visible parts.
    """
    camera = cfg.camera
    h, w = cfg.height, cfg.width
    synth = SynthConfig(height=h, width=w, p_wing=cfg.p_wing)
    canvas = _Canvas(h, w, False)
    depth = np.zeros((h, w), np.float32)
    n = int(rng.integers(cfg.min_bunches, cfg.max_bunches + 1))
    first = VARIETIES[str(rng.choice(list(cfg.varieties)))]
    plans: list[_BunchPlan] = []
    for i in range(n):
        same = i == 0 or rng.random() < cfg.p_same_variety
        variety = first if same else VARIETIES[str(rng.choice(list(cfg.varieties)))]
        plan = _plan_bunch(rng, cfg, synth, variety)
        if i == 0:
            plan.z_mm = float(rng.uniform(*cfg.distance_mm))
            s = plan.scale(camera)
            plan.x = rng.uniform(0.25, 0.75) * w
            plan.y = rng.uniform(0.03, 0.3) * h
        else:
            near = plans[int(rng.integers(0, i))]
            step = rng.uniform(*cfg.depth_step_mm) * rng.choice([-1.0, 1.0])
            plan.z_mm = float(np.clip(near.z_mm + step, 0.8 * cfg.distance_mm[0],
                                      1.5 * cfg.distance_mm[1]))
            s = plan.scale(camera)
            reach = 0.5 * (near.aspect * near.length_mm * near.scale(camera)
                           + plan.aspect * plan.length_mm * s)
            plan.x = near.x + rng.choice([-1.0, 1.0]) * rng.uniform(0.35, 0.8) * reach
            plan.y = near.y + rng.uniform(-0.25, 0.3) * near.length_mm * near.scale(camera)
        plan.x = float(np.clip(plan.x, 0.08 * w, 0.92 * w))
        plan.y = float(np.clip(plan.y, 0.02 * h, max(0.02 * h, h - 0.6 * plan.length_mm * s)))
        plans.append(plan)
    far = max(p.z_mm + 0.5 * p.aspect * p.length_mm for p in plans)
    _natural_background(rng, canvas)
    _canopy_depth(rng, depth, far + rng.uniform(150, 500))
    canvas.layers.clear()
    light = _random_light(rng)
    sunlit = rng.uniform(0.2, 1.0)
    infos = []
    for k, plan in enumerate(sorted(plans, key=lambda p: -p.z_mm), start=1):
        infos.append(_draw_planned(canvas, depth, synth, light, camera, plan, k))
        if rng.random() < cfg.p_leaf_occlusion:
            start = len(canvas.layers)
            _occluding_leaf(rng, canvas, infos[-1], sunlit)
            _paint_leaf_depth(canvas, depth, start, plan.z_mm - rng.uniform(40, 150))
    if rng.random() < 0.25:  # a stray leaf in front of everything
        start = len(canvas.layers)
        _draw_leaf(rng, canvas, rng.uniform(0, w), rng.uniform(0, h),
                   rng.uniform(0.1, 0.22) * min(h, w), sunlit, "leaf")
        nearest = min(p.z_mm for p in plans)
        _paint_leaf_depth(canvas, depth, start, nearest - rng.uniform(60, 200))
    image = _finish(rng, canvas, True)
    scene = _annotate(canvas, image, infos, "natural", cfg.min_area)
    truths, used = [], []
    for meta in scene.bunches:
        info = infos[meta["draw_order"] - 1]
        _mark_visible(info, canvas.label, meta["draw_order"])
        truths.append({**_truth(info), "occluded": meta["occluded"],
                       "leaf_occluded": meta["leaf_occluded"]})
        used.append(info)
    return RgbdScene(image, sensor_depth(rng, depth, cfg.depth_noise), depth, scene.masks,
                     truths, [i["radii_mm"] for i in used], [i["visible"] for i in used])


def _truth(info: dict) -> dict:
    """The JSON-ready truth of one drawn bunch."""
    return {
        "variety": info["variety_name"],
        "color": info["variety"],
        "distance_mm": round(float(info["distance_mm"]), 1),
        "weight_g": round(float(info["weight_g"]), 2),
        "berries": int(info["radii"].size),
        "berries_visible": int(info["visible"].sum()),
        "berry_radius_mm": round(float(np.mean(info["radii_mm"])), 3),
        "length_mm": round(float(info["length_mm"]), 1),
        "fill": round(float(info["fill"]), 3),
    }


def parse_frame(text: str) -> tuple[int, int]:
    """``"320x240"`` -> ``(320, 240)``: the ``--frame`` of tools/make_synthetic.py and
    tools/rgbd_ablation.py."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise GrapeInputError(f"--frame {text!r}: expected WIDTHxHEIGHT, e.g. 320x240")
    return int(m.group(1)), int(m.group(2))
