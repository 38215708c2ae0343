"""Procedural vineyard photographs of grape bunches with exact per-bunch instance masks.

Why: GrapesNet cannot be downloaded on the project's machines, yet training, evaluation and
the VIA / labelme converters all need realistic images whose masks can be trusted. Every
pixel is painted back to front (background, bunch stems and berries, occluding leaves) and
a label map is painted with the *same* pixel sets in the same order, so each mask is exactly
the visible berries of one bunch: the stem, later bunches and leaves in front are excluded.

Berries are spheres rendered with a z-buffer (so neighbouring berries intersect like real,
tightly packed ones) and shaded per pixel (ambient + diffuse + specular, bloom, crevice
darkening, translucency for green grapes). Backgrounds follow GrapesNet's two kinds: plain
black (bunches photographed on black cloth) and natural (foliage, leaves, cordon, wires,
posts, sky gaps, soil). The difficulty is fixed by :class:`SynthConfig`, never tuned to a
model. Every image draws from its own ``numpy.random.Generator`` seeded by
``(seed, split, index)``, so outputs are byte-identical per seed and independent of the
sizes of other splits.

Rendering only, in memory: :mod:`.export` writes the images and their COCO, VIA 2 and
labelme files.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..core.errors import GrapeInputError

# Base berry colours in BGR, 0..1; the powdery "bloom" wax dulls dark grapes blue-grey.
VARIETY_COLORS = {
    "green": (0.30, 0.70, 0.60),
    "red": (0.22, 0.16, 0.62),
    "purple": (0.26, 0.11, 0.20),
}
BLOOM_COLOR = np.array([0.66, 0.56, 0.52], np.float32)
BLOOM_RANGE = {"green": (0.02, 0.12), "red": (0.10, 0.30), "purple": (0.25, 0.55)}

# Flat colours of the debug rendering (uint8 BGR): bunch k (draw order, 1-based) is
# (k, DEBUG_BUNCH_G, DEBUG_BUNCH_R); nothing else uses those two channel values.
DEBUG_BUNCH_G, DEBUG_BUNCH_R = 200, 100
DEBUG_STEM = (0, 0, 255)
DEBUG_LEAF = (0, 255, 0)


def scene_config_problems(cfg, min_side: int, probabilities: tuple[str, ...]) -> list[str]:
    """What is wrong with a scene config's frame size, bunch range and probabilities (the
    checks every generator's config shares), one phrase per problem."""
    problems = []
    if cfg.height < min_side or cfg.width < min_side:
        problems.append(f"image size {cfg.height}x{cfg.width} is below {min_side} px")
    if not 0 <= cfg.min_bunches <= cfg.max_bunches:
        problems.append(f"need 0 <= min_bunches <= max_bunches, got "
                        f"{cfg.min_bunches}, {cfg.max_bunches}")
    for name in probabilities:
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            problems.append(f"{name}={getattr(cfg, name)} is not a probability")
    return problems


@dataclass
class SynthConfig:
    """What the generator draws; the defaults are the fixed difficulty of the embedded set."""

    height: int = 256
    width: int = 256
    min_bunches: int = 1
    max_bunches: int = 4
    p_natural: float = 0.75  # natural vs black background (val needs >= 60 %, with margin)
    p_leaf_occlusion: float = 0.4  # per bunch: a leaf is placed over part of it
    p_cluster: float = 0.5  # per bunch after the first: hang it beside an earlier one (overlap)
    p_wing: float = 0.35  # per bunch: a shoulder (side cluster) on the bunch
    bunch_length: tuple[float, float] = (0.30, 0.62)  # fraction of min(H, W), one bunch
    crowd_shrink: float = 0.12  # bunch size shrinks by this fraction per extra bunch
    berry_radius: tuple[float, float] = (0.042, 0.072)  # fraction of the bunch length
    varieties: tuple[str, ...] = ("green", "red", "purple")
    min_area: int = 30  # visible bunches smaller than this (pixels) are dropped
    jpeg_quality: int = 95
    # Paint flat id colours instead of shading (same geometry, same random draws): lets the
    # tests check that every mask is exactly where its bunch's berries show in the image.
    debug_id_colors: bool = False

    def __post_init__(self) -> None:
        problems = scene_config_problems(
            self, 32, ("p_natural", "p_leaf_occlusion", "p_cluster", "p_wing"))
        unknown = [v for v in self.varieties if v not in VARIETY_COLORS]
        if unknown or not self.varieties:
            problems.append(f"varieties must be a non-empty subset of {sorted(VARIETY_COLORS)}")
        if problems:
            raise GrapeInputError("synthetic config: " + "; ".join(problems))


@dataclass
class Scene:
    """One rendered image and its exact instance annotation."""

    image: np.ndarray  # H x W x 3 uint8, BGR
    masks: list[np.ndarray]  # one bool H x W per visible bunch
    background: str  # "black" | "natural"
    bunches: list[dict]  # per mask: variety, occluded, leaf_occluded, shape, draw_order
    label_map: np.ndarray = field(repr=False)  # int32 H x W: k = masks[k - 1], 0 = nothing


# --------------------------------------------------------------------------- canvas


class _Canvas:
    """Colour image and label map painted together, so masks follow the painter exactly."""

    def __init__(self, h: int, w: int, debug: bool) -> None:
        self.h, self.w, self.debug = h, w, debug
        self.img = np.zeros((h, w, 3), np.float32)
        self.label = np.zeros((h, w), np.int32)
        self.layers: list[tuple[str, int, np.ndarray]] = []  # (kind, bunch id, flat pixels)

    def paint(self, idx: np.ndarray, colors: np.ndarray, kind: str, bunch: int = 0,
              debug_color: tuple[int, int, int] | None = None) -> None:
        """Paint flat pixel indices ``idx`` with ``colors`` and record the label."""
        if idx.size == 0:
            return
        if self.debug and debug_color is not None:
            colors = np.array(debug_color, np.float32) / 255.0
        self.img.reshape(-1, 3)[idx] = colors
        self.label.reshape(-1)[idx] = bunch
        self.layers.append((kind, bunch, idx))


def _mask_pixels(mask: np.ndarray, y0: int, x0: int, w: int) -> np.ndarray:
    """Flat image indices of the true pixels of a crop placed at (y0, x0)."""
    ys, xs = np.nonzero(mask)
    return (ys + y0) * w + xs + x0


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int, octaves: int = 3):
    """Zero-mean, unit-std fractal value noise (upsampled random grids)."""
    total = np.zeros((h, w), np.float32)
    amp = 1.0
    for o in range(octaves):
        c = cells * 2**o
        grid = rng.standard_normal((c + 1, c + 1), dtype=np.float32)
        total += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        amp *= 0.5
    return (total - total.mean()) / (total.std() + 1e-6)


def _linear_gradient(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A ramp in -1..1 along a random direction (sunlight falling off across the frame)."""
    a = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    g = np.cos(a) * (xx / w - 0.5) + np.sin(a) * (yy / h - 0.5)
    return (g / (np.abs(g).max() + 1e-6)).astype(np.float32)


# --------------------------------------------------------------------------- leaves


def _leaf_outline(rng: np.random.Generator, cx: float, cy: float, size: float,
                  angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Palmate five-lobed vine leaf with a petiolar sinus and serrated margin.

    Returns the outline (N x 2 float) and the five lobe tips (for veins); the petiole
    attaches at (cx, cy).
    """
    n = 160
    phi = np.linspace(-np.pi, np.pi, n, endpoint=False)
    lobe_depth = rng.uniform(0.08, 0.28)
    r = 1.0 - lobe_depth * (0.5 - 0.5 * np.cos(5 * phi))
    r *= 1.0 - rng.uniform(0.45, 0.7) * np.exp(-(((np.abs(phi) - np.pi) / 0.32) ** 2))
    r *= 1.0 + 0.12 * np.cos(phi)  # middle lobe longest
    teeth = rng.integers(28, 44)
    r *= 1.0 + 0.045 * ((phi * teeth / (2 * np.pi)) % 1.0)
    squash = rng.uniform(0.6, 1.0)  # seen at an angle
    lx, ly = r * np.cos(phi) * size, r * np.sin(phi) * size * squash
    tips_phi = np.array([0.0, 0.4, -0.4, 0.8, -0.8]) * np.pi
    tr = 0.9 * (1.0 + 0.12 * np.cos(tips_phi)) * size
    tx, ty = tr * np.cos(tips_phi), tr * np.sin(tips_phi) * squash
    ca, sa = np.cos(angle), np.sin(angle)

    def place(x, y):
        return np.stack([cx + ca * x - sa * y, cy + sa * x + ca * y], axis=1)

    return place(lx, ly), place(tx, ty)


def _leaf_color(rng: np.random.Generator, sunlit: float) -> np.ndarray:
    """Vine-leaf green between deep shade and sunlit yellow-green (BGR)."""
    shade = np.array([0.07, 0.22, 0.12], np.float32)
    sun = np.array([0.22, 0.62, 0.45], np.float32)
    c = shade + (sun - shade) * sunlit
    return c * rng.uniform(0.9, 1.1, 3).astype(np.float32)


def _draw_leaf(rng: np.random.Generator, canvas: _Canvas, cx: float, cy: float, size: float,
               sunlit: float, kind: str, textured: bool = True) -> None:
    """Paint a shaded leaf with veins; ``kind`` 'leaf' marks an occluder in front of bunches.

    ``textured=False`` skips the fine leaf texture of leaves that are blurred anyway.
    """
    outline, tips = _leaf_outline(rng, cx, cy, size, rng.uniform(0, 2 * np.pi))
    base = _leaf_color(rng, sunlit)
    tilt_light = rng.uniform(-0.35, 0.35)
    x0, y0 = np.floor(outline.min(0)).astype(int)
    x1, y1 = np.ceil(outline.max(0)).astype(int) + 1
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x1, canvas.w), min(y1, canvas.h)
    if cx1 <= cx0 or cy1 <= cy0:
        return
    ch, cw = cy1 - cy0, cx1 - cx0
    poly = np.round(outline - [cx0, cy0]).astype(np.int32)
    mask = np.zeros((ch, cw), np.uint8)
    cv2.fillPoly(mask, [poly], 1)
    veins = np.zeros((ch, cw), np.uint8)
    centre = np.round([cx - cx0, cy - cy0]).astype(int)
    vein_w = max(1, int(round(size / 40)))
    for t in np.round(tips - [cx0, cy0]).astype(int):
        cv2.line(veins, tuple(int(v) for v in centre), tuple(int(v) for v in t), 1, vein_w)
    # The texture is drawn from the generator at full crop size whatever the leaf's
    # visibility, so the debug rendering consumes exactly the same random numbers.
    yy, xx = np.mgrid[0:ch, 0:cw].astype(np.float32)
    ramp = ((xx - cw / 2) * np.cos(tilt_light) + (yy - ch / 2) * np.sin(tilt_light)) / max(ch, cw)
    shade = 1.0 + 0.5 * ramp
    if textured:
        shade += 0.12 * cv2.GaussianBlur(rng.standard_normal((ch, cw), dtype=np.float32),
                                         (0, 0), 1.2)
    sel = mask.astype(bool)
    if not sel.any():
        return
    col = base[None, :] * shade[sel][:, None]
    col += 0.10 * veins[sel][:, None].astype(np.float32) * (0.5 + sunlit)
    canvas.paint(_mask_pixels(sel, cy0, cx0, canvas.w), np.clip(col, 0, 1), kind,
                 debug_color=DEBUG_LEAF if kind == "leaf" else None)


# --------------------------------------------------------------------------- background


def _natural_background(rng: np.random.Generator, canvas: _Canvas) -> None:
    """Vine canopy: foliage texture, blurred leaves, sky gaps, soil, posts, cordon and wires."""
    h, w = canvas.h, canvas.w
    s = min(h, w) / 256.0
    light = rng.uniform(0.5, 1.2)
    dark = np.array([0.04, 0.13, 0.07], np.float32) * light
    mid = np.array([0.16, 0.44, 0.30], np.float32) * light
    n = _smooth_noise(rng, h, w, 3, 4)
    t = np.clip(0.5 + 0.35 * n, 0, 1)[..., None]
    canvas.img[:] = dark + (mid - dark) * t
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    if rng.random() < 0.55:  # sky through gaps in the canopy, mostly near the top
        gap = _smooth_noise(rng, h, w, 4, 3) + 2.2 * (0.45 - yy) * rng.uniform(1.0, 2.5)
        soft = np.clip((gap - rng.uniform(0.6, 1.4)) * 2.0, 0, 1)[..., None]
        sky = np.array([0.97, 0.90, 0.80], np.float32) * rng.uniform(0.85, 1.05)
        canvas.img[:] = canvas.img * (1 - soft) + sky * soft
    if rng.random() < 0.3:  # soil or grass strip at the bottom
        horizon = rng.uniform(0.72, 0.95) + 0.03 * _smooth_noise(rng, 1, w, 2, 2)[0]
        soil = (yy > horizon[None, :])[..., None]
        soil_col = np.array([0.22, 0.33, 0.42], np.float32) * rng.uniform(0.6, 1.1)
        tex = 1.0 + 0.15 * _smooth_noise(rng, h, w, 16, 2)[..., None]
        canvas.img[:] = np.where(soil, soil_col * tex, canvas.img)
    for _ in range(int(rng.integers(12, 30))):  # out-of-focus leaves
        _draw_leaf(rng, canvas, rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h,
                   rng.uniform(0.08, 0.24) * min(h, w), rng.uniform(0.0, 0.8), "background",
                   textured=False)
    sigma = rng.uniform(1.0, 2.8) * s
    canvas.img[:] = cv2.GaussianBlur(canvas.img, (0, 0), sigma)
    if rng.random() < 0.3:  # trellis post
        px, pw = rng.uniform(0.05, 0.95) * w, rng.uniform(0.03, 0.07) * w
        xs = np.arange(w, dtype=np.float32)
        inside = np.abs(xs - px) < pw / 2
        across = np.clip(1 - np.abs(xs - px) / (pw / 2 + 1e-6), 0, 1) ** 0.5
        wood = np.array([0.30, 0.38, 0.45], np.float32) * rng.uniform(0.6, 1.2)
        grain = 1.0 + 0.12 * _smooth_noise(rng, h, w, 24, 1)[..., None]
        col = wood * (0.55 + 0.45 * across)[None, :, None] * grain
        canvas.img[:] = np.where(inside[None, :, None], col, canvas.img)
    if rng.random() < 0.5:  # cordon: the woody arm the bunches hang from
        y = rng.uniform(0.02, 0.3) * h
        xs = np.linspace(-0.05 * w, 1.05 * w, 24)
        ys = y + np.cumsum(rng.normal(0, 0.012 * h, xs.size))
        thick = max(2, int(round(rng.uniform(0.02, 0.045) * min(h, w))))
        bark = np.array([0.16, 0.24, 0.32], np.float32) * rng.uniform(0.6, 1.1)
        pts = np.round(np.stack([xs, ys], 1)).astype(np.int32)
        m = np.zeros((h, w), np.uint8)
        cv2.polylines(m, [pts], False, 1, thick)
        core = np.zeros((h, w), np.uint8)
        cv2.polylines(core, [pts - [0, thick // 4]], False, 1, max(1, thick // 3))
        tex = 1.0 + 0.2 * _smooth_noise(rng, h, w, 32, 1)
        col = bark[None, None, :] * (tex * (0.7 + 0.5 * core))[..., None]
        canvas.img[:] = np.where(m[..., None].astype(bool), col, canvas.img)
    for _ in range(int(rng.choice([0, 1, 2, 3], p=[0.15, 0.35, 0.3, 0.2]))):  # wires
        xs = np.linspace(0, w - 1, 32)
        y0, y1 = rng.uniform(0.05, 0.95, 2) * h
        sag = rng.uniform(0.0, 0.05) * h
        ys = y0 + (y1 - y0) * xs / w + sag * (1 - ((xs / w) * 2 - 1) ** 2)
        pts = np.round(np.stack([xs, ys], 1)).astype(np.int32)
        grey = rng.uniform(0.45, 0.8)
        cv2.polylines(canvas.img, [pts], False, (grey * 0.9, grey * 0.92, grey), max(1, int(s)),
                      cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 5))):  # sharp leaves at bunch depth, behind them
        _draw_leaf(rng, canvas, rng.uniform(0, 1) * w, rng.uniform(0, 1) * h,
                   rng.uniform(0.12, 0.3) * min(h, w), rng.uniform(0.2, 1.0), "background")


def _black_background(rng: np.random.Generator, canvas: _Canvas) -> None:
    """Black cloth, as in GrapesNet's laboratory subset: near-black with faint texture."""
    level = rng.uniform(0.0, 0.05)
    tex = _smooth_noise(rng, canvas.h, canvas.w, 6, 3)
    canvas.img[:] = np.clip(level + 0.012 * tex, 0, 1)[..., None] * np.array(
        [1.0, 1.0, 1.05], np.float32)


# --------------------------------------------------------------------------- bunches


@dataclass
class _Light:
    direction: np.ndarray  # unit vector towards the light (x right, y down, z to camera)
    ambient: float
    color: np.ndarray  # BGR multiplier


def _random_light(rng: np.random.Generator) -> _Light:
    v = np.array([rng.uniform(-0.7, 0.7), rng.uniform(-0.9, 0.1), rng.uniform(0.45, 1.0)])
    tint = np.array([rng.uniform(0.88, 1.05), 1.0, rng.uniform(0.95, 1.12)], np.float32)
    return _Light(v / np.linalg.norm(v), float(rng.uniform(0.22, 0.45)), tint)


def _profile(shape: str, t: np.ndarray) -> np.ndarray:
    """Bunch radius (fraction of its maximum) along its axis, t = 0 at the top."""
    if shape == "cone":
        top = np.sqrt(np.clip(t / 0.12, 0.25, 1.0))
        return top * (0.18 + 0.82 * np.clip(1.0 - t, 0, 1) ** 1.15)
    return np.sqrt(np.clip(1.0 - (2.0 * t - 1.0) ** 2, 0.0, 1.0)) ** 0.8


def _berry_cloud(rng: np.random.Generator, length: float, max_radius: float, shape: str,
                 r: float, full: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Berry centres (u across, v down the axis, w towards the camera), radii and depth shade.

    Berries sit in hexagonal layers stacked down the axis, each layer turned at random;
    only the outer shell facing the camera is kept (the rest is never visible), unless
    ``full``: then every berry inside the bunch is kept, as a bunch's weight needs. The depth
    shade is 1 for berries deeper than the shell (the interior).
    """
    spacing = 2.0 * r * 0.86
    layer_step = 2.0 * r * 0.74
    shell = 3.0 * r
    n_layers = max(1, int(np.floor((length - r) / layer_step)) + 1)
    wobble = 1.0 + 0.12 * _smooth_noise(rng, n_layers, 1, 2, 2)[:, 0]
    us, vs, ws, inner = [], [], [], []
    single_layers = 0
    k = int(np.ceil(max_radius / spacing)) + 2
    gi, gj = np.meshgrid(np.arange(-k, k + 1), np.arange(-k, k + 1))
    base_u = (gi + 0.5 * (gj % 2)).ravel() * spacing
    base_w = gj.ravel() * spacing * np.sqrt(3) / 2
    for j in range(n_layers):
        v = r + j * layer_step
        rad = max_radius * _profile(shape, np.array([v / length]))[0] * wobble[j]
        a = rng.uniform(0, 2 * np.pi)
        off = rng.uniform(-0.5, 0.5, 2) * spacing
        u = np.cos(a) * base_u - np.sin(a) * base_w + off[0]
        w = np.sin(a) * base_u + np.cos(a) * base_w + off[1]
        rho = np.hypot(u, w)
        limit = max(rad - 0.55 * r, 0.0)
        keep = rho <= limit
        if not full:
            keep &= (rho >= limit - shell) & (w >= -1.2 * r)
        if not keep.any():  # thin tip: one berry on the axis, at most twice
            single_layers += 1
            if single_layers > 2:
                break
            u, w, rho, keep = np.zeros(1), np.zeros(1), np.zeros(1), np.ones(1, bool)
            limit = 0.0
        us.append(u[keep])
        ws.append(w[keep])
        vs.append(np.full(int(keep.sum()), v))
        inner.append(np.clip((limit - rho[keep]) / shell, 0, 1))
    u, v, w, depth_in = (np.concatenate(x) for x in (us, vs, ws, inner))
    u = u + rng.normal(0, 0.1 * r, u.size)
    v = v + rng.normal(0, 0.1 * r, v.size)
    w = w + rng.normal(0, 0.1 * r, w.size)
    radius = r * np.clip(rng.normal(1.0, 0.09, u.size), 0.75, 1.25)
    keep = rng.random(u.size) > 0.05  # a few missing berries
    return np.stack([u, v, w], 1)[keep], radius[keep], depth_in[keep]


def _zbuffer_spheres(cx: np.ndarray, cy: np.ndarray, cz: np.ndarray, rad: np.ndarray,
                     h: int, w: int, elong: float = 1.0):
    """Front-most berry per pixel, fully vectorised (sort by pixel, then depth).

    Berries are spheres stretched ``elong`` times vertically (oval table grapes).
    Returns flat pixel indices, the winning berry per pixel, its surface normal and the
    height of that front surface towards the camera (``cz`` units: the RGB-D depth image).
    """
    big = int(np.ceil(rad.max())) + 1
    off_x = np.arange(-big, big + 1)
    big_y = int(np.ceil(rad.max() * elong)) + 1
    off_y = np.arange(-big_y, big_y + 1)
    px = np.round(cx).astype(np.int64)[:, None, None] + off_x[None, None, :]
    py = np.round(cy).astype(np.int64)[:, None, None] + off_y[None, :, None]
    dx = px - cx[:, None, None]
    dy = (py - cy[:, None, None]) / elong
    d2 = dx * dx + dy * dy
    r2 = (rad * rad)[:, None, None]
    inside = (d2 < r2) & (px >= 0) & (px < w) & (py >= 0) & (py < h)
    sphere, iy, ix = np.nonzero(inside)
    if sphere.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros((0, 3), np.float32), np.zeros(0)
    ddx = dx[sphere, 0, ix]
    ddy = dy[sphere, iy, 0]
    nz = np.sqrt(np.maximum(r2[sphere, 0, 0] - d2[sphere, iy, ix], 0.0))
    depth = cz[sphere] + nz
    pix = py[sphere, iy, 0] * w + px[sphere, 0, ix]
    order = np.lexsort((depth, pix))
    pix_sorted = pix[order]
    last = np.ones(order.size, bool)
    last[:-1] = pix_sorted[1:] != pix_sorted[:-1]
    win = order[last]
    normal = np.stack([ddx[win], ddy[win], nz[win]], 1) / rad[sphere[win]][:, None]
    return pix[win], sphere[win], normal.astype(np.float32), depth[win]


def _draw_stem(rng: np.random.Generator, canvas: _Canvas, top: np.ndarray, up: np.ndarray,
               length: float, r: float) -> None:
    """Peduncle and the top of the rachis: curved woody-green stem, never part of a mask."""
    thick = max(1, int(round(r * rng.uniform(0.35, 0.6))))
    side = np.array([-up[1], up[0]])
    bend = rng.uniform(-0.35, 0.35) * length
    t = np.linspace(0, 1, 12)[:, None]
    start = top + up * (-0.35 * length)  # starts inside the bunch, hidden by berries
    end = top + up * length + side * bend
    ctrl = top + up * 0.5 * length
    pts = (1 - t) ** 2 * start + 2 * (1 - t) * t * ctrl + t**2 * end
    m = np.zeros((canvas.h, canvas.w), np.uint8)
    pts_i = np.round(pts).astype(np.int32)
    cv2.polylines(m, [pts_i], False, 1, thick)
    hl = np.zeros_like(m)
    if thick >= 3:
        cv2.polylines(hl, [pts_i + np.round(side).astype(np.int32)], False, 1, 1)
    woody = rng.uniform(0, 1)
    col = (np.array([0.22, 0.45, 0.38], np.float32) * (1 - woody)
           + np.array([0.15, 0.27, 0.36], np.float32) * woody)
    sel = m.astype(bool)
    colors = col[None, :] * (1.0 + 0.35 * hl[sel][:, None].astype(np.float32))
    canvas.paint(np.flatnonzero(sel), colors, "stem", 0, debug_color=DEBUG_STEM)


@dataclass
class _BunchGeometry:
    shape: str
    aspect: float  # maximum width / length
    max_radius: float
    r: float  # nominal berry radius
    down: np.ndarray  # unit image vector along the bunch axis
    across: np.ndarray
    centres: np.ndarray  # N x 3 (u across, v down, w towards the camera), top at (0, 0, 0)
    radius: np.ndarray  # N berry radii
    depth_in: np.ndarray  # N depth shades (1 = interior)
    wing: bool


def _bunch_geometry(rng: np.random.Generator, cfg: SynthConfig, length: float,
                    berry_r: float | None = None, fill: float | None = None) -> _BunchGeometry:
    """Shape and berries of one bunch (no painting, so callers can size a bunch first).

    ``berry_r`` fixes the berry radius (pixels) instead of drawing it from ``cfg``. With
    ``fill`` the whole bunch is built and each interior berry is kept with that probability
    (loose or compact bunches: invisible, yet part of the weight); without it only the
    visible shell is built.
    """
    shape = "cone" if rng.random() < 0.6 else "ellipse"
    aspect = rng.uniform(0.5, 0.78) if shape == "cone" else rng.uniform(0.5, 0.75)
    max_radius = 0.5 * aspect * length
    r = max(1.6, length * rng.uniform(*cfg.berry_radius)) if berry_r is None else berry_r
    tilt = rng.normal(0, 0.2)
    down = np.array([-np.sin(tilt), np.cos(tilt)])
    across = np.array([np.cos(tilt), np.sin(tilt)])
    full = fill is not None
    centres, radius, depth_in = _berry_cloud(rng, length, max_radius, shape, r, full)
    has_wing = rng.random() < cfg.p_wing
    if has_wing:  # shoulder: a small cone branching off near the top
        wl = length * rng.uniform(0.3, 0.45)
        wc, wr, wd = _berry_cloud(rng, wl, max_radius * rng.uniform(0.45, 0.65), "cone", r,
                                  full)
        side = rng.choice([-1.0, 1.0])
        ang = side * rng.uniform(0.5, 1.0)
        rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        uv = wc[:, :2] @ rot.T + [side * max_radius * 0.55, length * rng.uniform(0.05, 0.2)]
        wc = np.concatenate([uv, wc[:, 2:] - 0.3 * r], 1)
        centres = np.concatenate([centres, wc])
        radius = np.concatenate([radius, wr])
        depth_in = np.concatenate([depth_in, wd])
    if full:
        keep = (depth_in < 1.0) | (rng.random(radius.size) < fill)
        centres, radius, depth_in = centres[keep], radius[keep], depth_in[keep]
    return _BunchGeometry(shape, float(aspect), float(max_radius), float(r), down, across,
                          centres, radius, depth_in, bool(has_wing))


def _draw_bunch(rng: np.random.Generator, canvas: _Canvas, cfg: SynthConfig, light: _Light,
                bunch_id: int, top_xy: np.ndarray, length: float, variety: str,
                black_bg: bool, berry_r: float | None = None,
                fill: float | None = None) -> dict:
    """Paint one bunch (stem, then berries) and return its geometry summary.

    ``berry_r`` and ``fill``: see :func:`_bunch_geometry`. The summary also holds every
    berry's radius (hidden ones too), the elongation of the berries, and per painted pixel
    the berry drawn there and its front-surface height ``front`` (for depth images).
    """
    g = _bunch_geometry(rng, cfg, length, berry_r, fill)
    shape, r, down, across = g.shape, g.r, g.down, g.across
    centres, radius, depth_in, has_wing = g.centres, g.radius, g.depth_in, g.wing
    xy = top_xy + centres[:, :1] * across + centres[:, 1:2] * down
    stem_len = length * rng.uniform(0.12, 0.3)
    _draw_stem(rng, canvas, top_xy, -down, stem_len, r)

    base = np.array(VARIETY_COLORS[variety], np.float32)
    base = base * rng.uniform(0.8, 1.15, 3).astype(np.float32)
    n = radius.size
    berry_col = base[None, :] * rng.uniform(0.85, 1.12, (n, 1)).astype(np.float32)
    if variety != "green" and rng.random() < 0.25:  # veraison: some berries still colouring
        unripe = rng.random(n) < rng.uniform(0.05, 0.3)
        unripe_col = {"red": (0.30, 0.62, 0.55), "purple": (0.30, 0.20, 0.52)}[variety]
        berry_col[unripe] = np.array(unripe_col, np.float32) * rng.uniform(
            0.8, 1.1, (int(unripe.sum()), 1))
    bloom = rng.uniform(*BLOOM_RANGE[variety])
    shininess = rng.uniform(25, 90) * (1.0 - 0.6 * bloom)
    k_spec = rng.uniform(0.45, 0.95) * (1.0 - 0.7 * bloom) * (1.3 if black_bg else 1.0)
    sheen = rng.uniform(0.05, 0.15) * (1.0 - bloom)  # broad soft reflection of the sky
    glow = 0.22 if variety == "green" else 0.06  # light scattered inside translucent berries
    elong = rng.uniform(1.0, 1.22)

    pix, win, normal, front = _zbuffer_spheres(xy[:, 0], xy[:, 1], centres[:, 2], radius,
                                               canvas.h, canvas.w, elong)
    ldir = light.direction.astype(np.float32)
    half = ldir + np.array([0, 0, 1], np.float32)
    half /= np.linalg.norm(half)
    diffuse = np.clip(normal @ ldir, 0, 1)
    spec = np.clip(normal @ half, 0, 1) ** shininess
    nz = normal[:, 2]
    ao = (1.0 - 0.55 * depth_in[win]) * (0.5 + 0.5 * np.sqrt(nz))
    col = berry_col[win] * (light.ambient + (1 - light.ambient) * diffuse)[:, None]
    col = col * ao[:, None] * light.color
    rim = bloom * (0.35 + 0.65 * (1.0 - nz))[:, None]
    col = col * (1 - rim) + BLOOM_COLOR * rim * (0.3 + 0.7 * diffuse[:, None]) * ao[:, None]
    col += glow * berry_col[win] * (nz**2)[:, None] * diffuse[:, None]
    col += (k_spec * spec + sheen * np.clip(normal @ half, 0, 1) ** 4)[:, None] * light.color
    canvas.paint(pix, np.clip(col, 0, 1.2), "bunch", bunch_id,
                 debug_color=(bunch_id, DEBUG_BUNCH_G, DEBUG_BUNCH_R))
    lo, hi = xy.min(0) - radius.max(), xy.max(0) + radius.max()
    return {"variety": variety, "shape": shape, "wing": bool(has_wing), "berries": int(n),
            "berry_radius": float(r), "box": (lo, hi), "aspect": g.aspect, "radii": radius,
            "elong": float(elong), "pix": pix, "win": win, "front": front}


def _place_bunches(rng: np.random.Generator, cfg: SynthConfig, n: int) -> list[tuple]:
    """Top points and lengths; some bunches hang beside earlier ones so that they overlap."""
    h, w = cfg.height, cfg.width
    side = min(h, w)
    shrink = max(0.45, 1.0 - cfg.crowd_shrink * (n - 1))
    placed: list[tuple] = []
    for i in range(n):
        length = rng.uniform(*cfg.bunch_length) * side * shrink
        if i > 0 and rng.random() < cfg.p_cluster:
            px, py, pl = placed[int(rng.integers(0, i))]
            x = px + rng.choice([-1.0, 1.0]) * rng.uniform(0.25, 0.55) * pl
            y = py + rng.uniform(-0.2, 0.3) * pl
        else:
            x = rng.uniform(0.12, 0.88) * w
            y = rng.uniform(0.02, 0.55) * h
        y = min(y, h - 0.55 * length)  # keep most of the bunch inside the frame
        placed.append((float(x), float(y), float(length)))
    return placed


def _occluding_leaf(rng: np.random.Generator, canvas: _Canvas, info: dict, sunlit: float) -> None:
    """A leaf in front of part of a bunch: centred beyond the bunch's edge so it covers a part."""
    lo, hi = info["box"]
    centre = (lo + hi) / 2
    half = np.maximum((hi - lo) / 2, 2.0)
    a = rng.uniform(0, 2 * np.pi)
    reach = rng.uniform(0.75, 1.25)
    cx, cy = centre + half * reach * np.array([np.cos(a), np.sin(a)])
    size = float(np.mean(half)) * rng.uniform(0.55, 0.9)
    _draw_leaf(rng, canvas, cx, cy, size, sunlit, "leaf")


def render_scene(rng: np.random.Generator, cfg: SynthConfig) -> Scene:
    """Render one image with its exact per-bunch masks (see the module docstring)."""
    h, w = cfg.height, cfg.width
    canvas = _Canvas(h, w, cfg.debug_id_colors)
    natural = rng.random() < cfg.p_natural
    (_natural_background if natural else _black_background)(rng, canvas)
    if cfg.debug_id_colors:
        canvas.img[:] = 0.0
    canvas.layers.clear()
    light = _random_light(rng)
    sunlit = rng.uniform(0.2, 1.0)
    n = int(rng.integers(cfg.min_bunches, cfg.max_bunches + 1))
    infos = []
    for k, (x, y, length) in enumerate(_place_bunches(rng, cfg, n), start=1):
        variety = str(rng.choice(list(cfg.varieties)))
        infos.append(_draw_bunch(rng, canvas, cfg, light, k, np.array([x, y]), length, variety,
                                 not natural))
        if rng.random() < cfg.p_leaf_occlusion:
            _occluding_leaf(rng, canvas, infos[-1], sunlit)
        if natural and rng.random() < 0.25:  # a stray leaf anywhere in front
            _draw_leaf(rng, canvas, rng.uniform(0, w), rng.uniform(0, h),
                       rng.uniform(0.1, 0.22) * min(h, w), sunlit, "leaf")
    image = _finish(rng, canvas, natural)
    return _annotate(canvas, image, infos, "natural" if natural else "black", cfg.min_area)


def _finish(rng: np.random.Generator, canvas: _Canvas, natural: bool) -> np.ndarray:
    """Camera: exposure, colour cast, light fall-off, vignette, slight blur, sensor noise."""
    h, w = canvas.h, canvas.w
    gain = rng.uniform(0.75, 1.25) if natural else rng.uniform(0.85, 1.2)
    cast = rng.uniform(0.94, 1.06, 3).astype(np.float32)
    falloff = 1.0 + rng.uniform(0.0, 0.3) * _linear_gradient(rng, h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    vignette = 1.0 - rng.uniform(0.0, 0.35) * (((xx / w - 0.5) ** 2 + (yy / h - 0.5) ** 2) * 2)
    sigma = rng.uniform(0.4, 0.8) * min(h, w) / 256.0
    noise = rng.standard_normal((h, w, 3), dtype=np.float32) * rng.uniform(0.006, 0.02)
    if canvas.debug:
        return np.round(np.clip(canvas.img, 0, 1) * 255).astype(np.uint8)
    img = canvas.img * (gain * falloff * vignette)[..., None] * cast
    img = cv2.GaussianBlur(img, (0, 0), sigma) + noise
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def _annotate(canvas: _Canvas, image: np.ndarray, infos: list[dict], background: str,
              min_area: int) -> Scene:
    """Masks from the label map; occlusion flags from what was painted over each bunch."""
    h, w = canvas.h, canvas.w
    label = canvas.label.reshape(-1)
    masks, bunches = [], []
    new_label = np.zeros(h * w, np.int32)
    for k, info in enumerate(infos, start=1):
        pos = [i for i, (kind, b, _) in enumerate(canvas.layers) if kind == "bunch" and b == k]
        full = canvas.layers[pos[0]][2] if pos else np.zeros(0, np.int64)
        visible = full[label[full] == k]
        if visible.size < min_area:
            continue
        lost = full.size - visible.size
        covered = np.zeros(h * w, bool)
        for kind, _, idx in canvas.layers[pos[0] + 1:]:
            if kind == "leaf":
                covered[idx] = True
        leaf_lost = int(covered[full].sum())
        new_label[visible] = len(masks) + 1
        masks.append((new_label == len(masks) + 1).reshape(h, w))
        bunches.append({
            "variety": info["variety"],
            "occluded": bool(lost >= max(8, 0.02 * full.size)),
            "leaf_occluded": bool(leaf_lost >= max(8, 0.03 * full.size)),
            "shape": info["shape"],
            "draw_order": k,
        })
    return Scene(image=image, masks=masks, background=background, bunches=bunches,
                 label_map=new_label.reshape(h, w))


# --------------------------------------------------------------------------- seeds and configs


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """One independent stream per (seed, split, image): splits never shift each other."""
    return np.random.default_rng([seed, zlib.crc32(split.encode("utf-8")), index])


def config_from_size(size: int, **overrides) -> SynthConfig:
    """A square default config (what tools/make_synthetic.py --size asks for)."""
    return dataclasses.replace(SynthConfig(), height=size, width=size, **overrides)


def one_bunch_config(size: int, background: str) -> SynthConfig:
    """One bunch, no occluding leaf, on a black cloth or in the vineyard: the GrapesNet
    Dataset-1 style images the edge auto-annotator is built for and measured on."""
    return SynthConfig(height=size, width=size, min_bunches=1, max_bunches=1,
                       p_natural=1.0 if background == "natural" else 0.0,
                       p_leaf_occlusion=0.0)
