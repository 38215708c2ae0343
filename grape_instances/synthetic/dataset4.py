"""A synthetic twin of GrapesNet Dataset 4: one weighed grape bunch per RGB-D image.

Why: Dataset 4 (single bunches on a coral sheet, RGB + aligned depth, each bunch weighed)
is what a weight model is fitted on, and it is not available here. The twin has the same
make-up with a weight that is known exactly and is *not* a function of what the camera sees:
it comes from all the bunch's berries, the hidden interior and back included (about half of
them), with varieties of different berry size and count, loose and compact bunches, and a
rachis (see :mod:`.rgbd`). The camera distance varies (400-900 mm by default), so a bunch's
area in pixels says little about its size until depth turns it into cm².

This module renders in memory only; :func:`grape_instances.synthetic.export.generate_dataset4`
writes the dataset (``images/bunch_NNNNN.jpg``, ``depth/bunch_NNNNN.png`` in 16-bit mm,
``annotations/instances.json``, ``weights.csv``, ``camera.json``).
"""

from __future__ import annotations

import numpy as np

from .render import (
    SynthConfig,
    _annotate,
    _Canvas,
    _finish,
    _random_light,
    _smooth_noise,
)
from .rgbd import (
    VARIETIES,
    Camera,
    RgbdConfig,
    RgbdScene,
    _draw_planned,
    _mark_visible,
    _plan_bunch,
    _truth,
    sensor_depth,
)

#: Coral background sheet of GrapesNet Dataset 4 (BGR, 0..1).
CORAL = np.array([0.31, 0.50, 0.98], np.float32)


def _coral_background(rng: np.random.Generator, canvas: _Canvas, depth: np.ndarray,
                      camera: Camera, z_mm: float) -> None:
    """GrapesNet Dataset 4's coral sheet: a flat, slightly tilted and unevenly lit plane."""
    h, w = canvas.h, canvas.w
    tone = CORAL * rng.uniform(0.85, 1.0) * rng.uniform(0.95, 1.05, 3).astype(np.float32)
    tex = 1.0 + 0.04 * _smooth_noise(rng, h, w, 4, 3) + 0.015 * _smooth_noise(rng, h, w, 32, 1)
    canvas.img[:] = np.clip(tone[None, None, :] * tex[..., None], 0, 1)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gx, gy = rng.uniform(-0.06, 0.06, 2)  # tilt: mm of depth per mm across the sheet
    depth[:] = z_mm + (gx * (xx - camera.cx) + gy * (yy - camera.cy)) * z_mm / camera.f


def render_dataset4_bunch(rng: np.random.Generator, cfg: RgbdConfig) -> RgbdScene:
    """One weighed bunch on a coral sheet (GrapesNet Dataset 4), RGB + depth + truth."""
    camera = cfg.camera
    synth = SynthConfig(height=cfg.height, width=cfg.width, p_wing=cfg.p_wing)
    canvas = _Canvas(cfg.height, cfg.width, False)
    depth = np.zeros((cfg.height, cfg.width), np.float32)
    variety = VARIETIES[str(rng.choice(list(cfg.varieties)))]
    plan = _plan_bunch(rng, cfg, synth, variety)
    plan.z_mm = float(rng.uniform(*cfg.distance_mm))
    s = plan.scale(camera)
    length_px, width_px = plan.length_mm * s, plan.aspect * plan.length_mm * s
    plan.x = camera.cx + rng.uniform(-0.5, 0.5) * max(cfg.width - width_px * 1.3, 0)
    room = cfg.height - 1.05 * length_px
    plan.y = 0.04 * cfg.height + rng.uniform(0, 1) * max(room - 0.04 * cfg.height, 0)
    back = 0.5 * plan.aspect * plan.length_mm  # the sheet is behind the bunch's back
    _coral_background(rng, canvas, depth, camera, plan.z_mm + back + rng.uniform(10, 200))
    canvas.layers.clear()
    light = _random_light(rng)
    info = _draw_planned(canvas, depth, synth, light, camera, plan, 1)
    image = _finish(rng, canvas, False)
    scene = _annotate(canvas, image, [info], "coral", 1)
    _mark_visible(info, canvas.label, 1)
    return RgbdScene(image, sensor_depth(rng, depth, cfg.depth_noise), depth, scene.masks,
                     [_truth(info)], [info["radii_mm"]], [info["visible"]])
