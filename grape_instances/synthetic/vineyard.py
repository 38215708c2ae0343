"""Photo-like vineyard rows: many small bunches on a 3:2 frame, annotated like WGISD.

Why: the scenes of :mod:`.render` are square close-ups of 1-4 large bunches whose masks are
the exact berry pixels. Real field photos (WGISD, GrapesNet Dataset 2) look otherwise: a
landscape frame across a vine row with 8-30 bunches of 30-300 px hanging below a leaf canopy,
a twisted cordon and trunk, canes, wires, straw or grass, a strip of sky, camera blur and
JPEG artefacts, and annotators draw each bunch's *silhouette* (gaps between berries
included). These scenes copy that, to pretrain the real recipe without downloads.

A bunch's mask is its berry union closed over about one berry's width (what an annotator's
polygon covers), minus whatever was painted in front of it afterwards: canopy leaves, canes,
later bunches. Masks never overlap. Berries, leaves and shading come from :mod:`.render`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..core.errors import GrapeInputError
from .render import (
    VARIETY_COLORS,
    Scene,
    SynthConfig,
    _Canvas,
    _draw_bunch,
    _draw_leaf,
    _mask_pixels,
    _random_light,
    _smooth_noise,
    scene_config_problems,
)


@dataclass
class VineyardConfig:
    """What a vineyard-row scene holds; lengths are fractions of the image height."""

    height: int = 683
    width: int = 1024  # 3:2, WGISD's 2048 x 1365 at the real recipe's working scale
    min_bunches: int = 8
    max_bunches: int = 30
    bunch_length: tuple[float, float] = (0.06, 0.24)
    berry_radius: tuple[float, float] = (0.05, 0.085)  # fraction of the bunch length
    variety_weights: tuple[float, float, float] = (0.5, 0.2, 0.3)  # green, red, purple
    p_front_leaf: float = 0.3  # per bunch: a canopy leaf hangs in front of part of it
    p_front_cane: float = 0.15  # per bunch: a cane crosses in front of it
    close_berries: float = 2.0  # closing kernel, in berry radii (about one berry wide)
    min_area: int = 40  # visible silhouettes smaller than this (pixels) are dropped
    jpeg_quality: tuple[int, int] = (45, 92)  # the camera's compression, drawn per image

    def __post_init__(self) -> None:
        problems = scene_config_problems(self, 64, ("p_front_leaf", "p_front_cane"))
        if len(self.variety_weights) != len(VARIETY_COLORS) or min(self.variety_weights) < 0 \
                or sum(self.variety_weights) <= 0:
            problems.append(f"variety_weights needs {len(VARIETY_COLORS)} non-negative weights")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            problems.append(f"jpeg_quality {self.jpeg_quality} is not a range within 1..100")
        if problems:
            raise GrapeInputError("vineyard config: " + "; ".join(problems))


# --------------------------------------------------------------------------- background


def _paint_mask(canvas: _Canvas, mask: np.ndarray, colors: np.ndarray, kind: str) -> None:
    """Paint a full-frame bool mask (colours: one BGR or one per masked pixel)."""
    canvas.paint(np.flatnonzero(mask), colors, kind)


def _sky_rows_ground(rng: np.random.Generator, canvas: _Canvas) -> float:
    """Sky, the blurred rows beyond, straw or grass in front; returns the ground line (0..1)."""
    h, w = canvas.h, canvas.w
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    horizon = rng.uniform(0.2, 0.45)
    ground = horizon + rng.uniform(0.12, 0.3)
    sky_top = np.array([0.95, 0.80, 0.62], np.float32) * rng.uniform(0.9, 1.1)
    sky_low = np.array([0.96, 0.94, 0.92], np.float32)
    canvas.img[:] = sky_top + (sky_low - sky_top) * np.clip(yy / max(horizon, 1e-3), 0, 1)
    # Far rows: a band of dark foliage whose top edge wanders.
    edge = horizon - np.abs(0.06 * _smooth_noise(rng, 1, w, 6, 3)[0])
    rows = yy[..., 0] > edge[None, :]
    tone = rng.uniform(0.6, 1.1)
    row_col = np.array([0.12, 0.32, 0.22], np.float32) * tone
    tex = 1.0 + 0.25 * _smooth_noise(rng, h, w, 24, 3)[..., None]
    canvas.img[:] = np.where(rows[..., None], row_col * tex, canvas.img)
    # Ground: dry straw, green grass or bare soil, with vertical blades.
    kind = rng.choice(["straw", "grass", "soil"], p=[0.5, 0.3, 0.2])
    base = {"straw": (0.45, 0.62, 0.72), "grass": (0.25, 0.52, 0.42),
            "soil": (0.38, 0.48, 0.60)}[kind]
    blades = cv2.resize(rng.standard_normal((h // 8 + 1, w // 2 + 1), dtype=np.float32), (w, h),
                        interpolation=cv2.INTER_LINEAR)
    shade = 1.0 + 0.18 * blades + 0.12 * _smooth_noise(rng, h, w, 8, 2)
    ground_col = np.array(base, np.float32) * rng.uniform(0.75, 1.15) * shade[..., None]
    ground_line = ground + 0.02 * _smooth_noise(rng, 1, w, 3, 2)[0]
    on_ground = yy[..., 0] > ground_line[None, :]
    canvas.img[:] = np.where(on_ground[..., None], ground_col, canvas.img)
    canvas.img[:] = cv2.GaussianBlur(canvas.img, (0, 0), rng.uniform(1.0, 3.0) * h / 683)
    return float(ground)


def _polyline_mask(h: int, w: int, pts: np.ndarray, thickness: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    cv2.polylines(mask, [np.round(pts).astype(np.int32)], False, 1, max(1, int(thickness)))
    return mask.astype(bool)


def _wood(rng: np.random.Generator, canvas: _Canvas, pts: np.ndarray, thick: float,
          color: tuple[float, float, float], kind: str) -> np.ndarray:
    """A woody limb along ``pts``: bark texture, lit along one side. Returns its mask."""
    h, w = canvas.h, canvas.w
    mask = _polyline_mask(h, w, pts, thick)
    if not mask.any():
        return mask
    lit = _polyline_mask(h, w, pts - [0, thick * 0.25], max(1, thick * 0.35))
    ys, xs = np.nonzero(mask)
    grain = 1.0 + 0.25 * rng.standard_normal(ys.size).astype(np.float32)
    col = np.array(color, np.float32) * rng.uniform(0.75, 1.2)
    colors = col[None, :] * (grain * (0.8 + 0.5 * lit[ys, xs]))[:, None]
    canvas.paint(ys * w + xs, np.clip(colors, 0, 1), kind)
    return mask


def _wavy(rng: np.random.Generator, start: np.ndarray, end: np.ndarray, n: int,
          wander: float) -> np.ndarray:
    """Points from start to end with a random walk across the line (twisted trunks)."""
    t = np.linspace(0, 1, n)[:, None]
    line = start + (end - start) * t
    normal = np.array([-(end - start)[1], (end - start)[0]]) / (np.linalg.norm(end - start) + 1e-6)
    walk = np.cumsum(rng.normal(0, wander, n))
    walk -= np.linspace(walk[0], walk[-1], n)  # pinned at both ends
    return line + walk[:, None] * normal


def _trellis(rng: np.random.Generator, canvas: _Canvas, ground: float) -> tuple[float, list]:
    """Posts, wires, drip hose, trunks and the cordon; returns the cordon height and points."""
    h, w = canvas.h, canvas.w
    if rng.random() < 0.4:  # a wooden or concrete post
        x = rng.uniform(0.05, 0.95) * w
        pw = rng.uniform(0.025, 0.05) * w
        col = (0.55, 0.62, 0.68) if rng.random() < 0.5 else (0.70, 0.72, 0.72)
        _wood(rng, canvas, np.array([[x, -5.0], [x, h + 5.0]]), pw, col, "post")
    cordon_y = rng.uniform(max(0.45, ground - 0.25), min(0.85, ground + 0.2)) * h
    for _ in range(int(rng.integers(1, 4))):  # wires of the trellis
        y = rng.uniform(0.05, 0.9) * h
        xs = np.linspace(-5, w + 5, 16)
        pts = np.stack([xs, y + rng.uniform(-0.02, 0.02) * h * xs / w], 1)
        grey = rng.uniform(0.4, 0.75)
        _paint_mask(canvas, _polyline_mask(h, w, pts, max(1, h // 500)),
                    np.array([grey, grey, grey * 1.05], np.float32), "wire")
    if rng.random() < 0.5:  # black drip-irrigation hose below the cordon
        y = rng.uniform(cordon_y / h + 0.05, 1.0) * h
        pts = np.stack([np.linspace(-5, w + 5, 16), np.full(16, y)], 1)
        _paint_mask(canvas, _polyline_mask(h, w, pts, max(2, h // 120)),
                    np.array([0.08, 0.08, 0.09], np.float32), "wire")
    bark = (0.18, 0.26, 0.34)
    for _ in range(int(rng.integers(1, 3))):  # trunks from the ground up to the cordon
        x = rng.uniform(0.1, 0.9) * w
        pts = _wavy(rng, np.array([x + rng.normal(0, 0.03) * w, h + 10.0]),
                    np.array([x, cordon_y]), 10, 0.01 * h)
        _wood(rng, canvas, pts, rng.uniform(0.04, 0.09) * h, bark, "trunk")
    pts = _wavy(rng, np.array([-0.05 * w, cordon_y + rng.normal(0, 0.03) * h]),
                np.array([1.05 * w, cordon_y + rng.normal(0, 0.03) * h]), 28, 0.012 * h)
    _wood(rng, canvas, pts, rng.uniform(0.025, 0.055) * h, bark, "trunk")
    return float(cordon_y), [p for p in pts if 0 <= p[0] < w]


def _cane(rng: np.random.Generator, canvas: _Canvas, base: np.ndarray, kind: str) -> None:
    """A thin orange-brown shoot from the cordon up into the canopy (a gentle curve)."""
    h = canvas.h
    top = base + [rng.normal(0, 0.15) * h, -rng.uniform(0.4, 1.0) * h]
    mid = (base + top) / 2 + [rng.normal(0, 0.08) * h, 0]
    t = np.linspace(0, 1, 16)[:, None]
    pts = (1 - t) ** 2 * base + 2 * (1 - t) * t * mid + t**2 * top
    color = (0.20, 0.35, 0.55) if rng.random() < 0.7 else (0.22, 0.45, 0.38)
    _wood(rng, canvas, pts, rng.uniform(0.006, 0.013) * h, color, kind)


def _canopy(rng: np.random.Generator, canvas: _Canvas, cordon_y: float, sunlit: float) -> None:
    """Leaves thick at the top, thinning down to the fruit zone around the cordon."""
    h, w = canvas.h, canvas.w
    n = int(rng.integers(50, 110) * w / 1024)
    for _ in range(n):
        y = (cordon_y + 0.1 * h) * rng.beta(1.2, 2.0) - 0.05 * h
        _draw_leaf(rng, canvas, rng.uniform(-0.05, 1.05) * w, y,
                   rng.uniform(0.04, 0.1) * h, float(np.clip(sunlit + rng.normal(0, 0.3), 0, 1)),
                   "background")


# --------------------------------------------------------------------------- bunches


def _silhouettes(canvas: _Canvas, infos: list[dict], cfg: VineyardConfig) -> list[np.ndarray]:
    """Each bunch's berry union closed over a berry's width, minus what is in front of it.

    Walks the painted layers front to back: leaves and canes drawn after a bunch, and the
    silhouettes of later bunches, hide it; so masks are disjoint and follow the painter.
    """
    h, w = canvas.h, canvas.w
    front = np.zeros(h * w, bool)
    masks: dict[int, np.ndarray] = {}
    for kind, bunch, idx in reversed(canvas.layers):
        if kind in ("leaf", "cane", "stem"):
            front[idx] = True
        elif kind == "bunch":
            info = infos[bunch - 1]
            k = max(3, int(round(cfg.close_berries * info["berry_radius"])) | 1)
            ys, xs = np.divmod(idx, w)
            y0, x0 = max(ys.min() - k, 0), max(xs.min() - k, 0)
            y1, x1 = min(ys.max() + k + 1, h), min(xs.max() + k + 1, w)
            crop = np.zeros((y1 - y0, x1 - x0), np.uint8)
            crop[ys - y0, xs - x0] = 1
            crop = cv2.morphologyEx(crop, cv2.MORPH_CLOSE,
                                    cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
            sil = _mask_pixels(crop.astype(bool), y0, x0, w)
            masks[bunch] = sil[~front[sil]]
            front[sil] = True
    return [masks.get(k, np.zeros(0, np.int64)) for k in range(1, len(infos) + 1)]


def _bunch_tops(rng: np.random.Generator, cfg: VineyardConfig, cordon: list,
                n: int) -> list[tuple[float, float, float]]:
    """Bunches hang from shoots along the cordon, a little above or below it, often in pairs."""
    h = cfg.height
    tops: list[tuple[float, float, float]] = []
    for i in range(n):
        length = rng.uniform(*cfg.bunch_length) * h
        if i > 0 and rng.random() < 0.35:
            px, py, pl = tops[int(rng.integers(0, i))]
            x = px + rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.7) * pl
            y = py + rng.uniform(-0.2, 0.3) * pl
        else:
            cx, cy = cordon[int(rng.integers(0, len(cordon)))] if cordon else (
                rng.uniform(0, cfg.width), 0.6 * h)
            x = cx + rng.normal(0, 0.02) * cfg.width
            y = cy - rng.uniform(-0.15, 0.3) * h - 0.4 * length
        tops.append((float(x), float(np.clip(y, 0.02 * h, h - 0.6 * length)), float(length)))
    return tops


def _camera(rng: np.random.Generator, canvas: _Canvas, cfg: VineyardConfig) -> np.ndarray:
    """Exposure, colour cast, vignette, focus and motion blur, sensor noise, JPEG."""
    h, w = canvas.h, canvas.w
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    vignette = 1.0 - rng.uniform(0.0, 0.3) * (((xx / w - 0.5) ** 2 + (yy / h - 0.5) ** 2) * 2)
    cast = rng.uniform(0.93, 1.07, 3).astype(np.float32)
    img = canvas.img * (rng.uniform(0.75, 1.3) * vignette)[..., None] * cast
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.4) * h / 683)
    if rng.random() < 0.25:  # hand-held shake
        k = int(rng.integers(3, 8))
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2] = 1.0 / k
        rot = cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), rng.uniform(0, 180), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (k, k))
        img = cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1e-6))
    img = img + rng.standard_normal((h, w, 3), dtype=np.float32) * rng.uniform(0.005, 0.02)
    img = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(jpg, cv2.IMREAD_COLOR) if ok else img


def render_vineyard_scene(rng: np.random.Generator, cfg: VineyardConfig) -> Scene:
    """Render one vineyard-row photo with per-bunch silhouette masks (module docstring)."""
    h, w = cfg.height, cfg.width
    canvas = _Canvas(h, w, debug=False)
    ground = _sky_rows_ground(rng, canvas)
    sunlit = rng.uniform(0.2, 1.0)
    cordon_y, cordon = _trellis(rng, canvas, ground)
    _canopy(rng, canvas, cordon_y, sunlit)
    for _ in range(int(rng.integers(3, 10))):  # canes behind the bunches
        if cordon:
            _cane(rng, canvas, np.array(cordon[int(rng.integers(0, len(cordon)))]), "background")
    canvas.layers.clear()  # everything so far is behind every bunch
    light = _random_light(rng)
    berries = SynthConfig(height=h, width=w, berry_radius=cfg.berry_radius, p_wing=0.3)
    varieties = list(VARIETY_COLORS)
    weights = np.array(cfg.variety_weights, np.float64) / sum(cfg.variety_weights)
    variety = str(rng.choice(varieties, p=weights))  # one vineyard block, one variety
    n = int(rng.integers(cfg.min_bunches, cfg.max_bunches + 1))
    infos = []
    for k, (x, y, length) in enumerate(_bunch_tops(rng, cfg, cordon, n), start=1):
        infos.append(_draw_bunch(rng, canvas, berries, light, k, np.array([x, y]), length,
                                 variety, black_bg=False))
        lo, hi = infos[-1]["box"]
        if rng.random() < cfg.p_front_leaf:  # a canopy leaf over part of the bunch
            centre = (lo + hi) / 2 + (hi - lo) / 2 * rng.uniform(-1.1, 1.1, 2)
            _draw_leaf(rng, canvas, centre[0], centre[1], rng.uniform(0.045, 0.1) * h,
                       sunlit, "leaf")
        if rng.random() < cfg.p_front_cane:
            _cane(rng, canvas, np.array([rng.uniform(lo[0], hi[0]), hi[1] + 0.05 * h]), "cane")
    masks = _silhouettes(canvas, infos, cfg)
    image = _camera(rng, canvas, cfg)
    kept, bunches = [], []
    label = np.zeros(h * w, np.int32)
    for info, pix in zip(infos, masks, strict=True):
        if pix.size < cfg.min_area:
            continue
        kept.append(pix)
        label[pix] = len(kept)
        bunches.append({"variety": info["variety"], "shape": info["shape"],
                        "berry_radius": info["berry_radius"]})
    out_masks = [(label == i).reshape(h, w) for i in range(1, len(kept) + 1)]
    return Scene(image=image, masks=out_masks, background="vineyard", bunches=bunches,
                 label_map=label.reshape(h, w))
