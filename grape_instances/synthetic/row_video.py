"""Videos of a camera moving along a synthetic vineyard row, with per-bunch ground truth.

Why: counting bunches along a row (issue 16) needs videos whose every bunch is known, with a
persistent id, in every frame; no public row video with per-bunch track labels can be
fetched here. This module renders them, reusing :mod:`.vineyard`'s painter:

* **The row** (the "world"): one long canvas, a few frame widths per vine, painted once:
  sky, far rows and ground, a post at each end of every vine (post-to-post segments), one
  trunk per vine, the cordon, canopy and canes, then the bunches of every vine with their
  silhouette masks (:func:`.vineyard._silhouettes`, leaves at bunch depth in front
  included). Bunch *k* of the world is track id *k* in every frame.
* **The camera** slides along the row: a speed that changes smoothly (slow, fast, a stop),
  one short back-up (bunches near the edge leave the view and come back), a small vertical
  shake, horizontal motion blur proportional to the speed.
* **Near leaves** hang between the camera and the row on their own layer, moving faster
  than the row (parallax): they hide bunches for a few frames and are cut out of the masks.
* **Compression**: each frame goes through JPEG at a drawn quality, and the video through
  H.264 (PyAV's libx264) when available, else OpenCV's MPEG-4.

Ground truth is exact per frame: a bunch's mask is its silhouette in the row, shifted with
the same sub-pixel translation as the image (nearest neighbour), minus the near leaves;
masks under ``min_area`` pixels count as not visible. Written per video (:func:`write_row_video`):
``video.mp4``, ``gt/gt.txt`` (MOTChallenge: ``frame,id,left,top,width,height,1,1,visibility``,
frames from 1), ``annotations.json`` (COCO, one image per frame, ``frame_index`` from 0 and
``track_id`` on every annotation), ``segments.csv`` (``segment,first_frame,last_frame``: the
frames whose image centre lies over each vine) and ``truth.json`` (bunches per vine, total).
Optionally every Nth frame as a JPEG under ``frames/`` with their own COCO ``frames.json``
(image root: the video's folder), the detector's training images.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..convert.coco import CocoBuilder, SpoolStore
from ..core.errors import GrapeInputError
from ..core.fileio import atomic_outputs, replacing_folder, write_json_atomic
from ..core.video import VideoWriter
from .render import (
    VARIETY_COLORS,
    SynthConfig,
    _Canvas,
    _draw_bunch,
    _draw_leaf,
    _random_light,
    _smooth_noise,
)
from .vineyard import (
    VineyardConfig,
    _cane,
    _canopy,
    _paint_mask,
    _polyline_mask,
    _silhouettes,
    _sky_rows_ground,
    _wavy,
    _wood,
)

logger = logging.getLogger(__name__)


@dataclass
class RowVideoConfig:
    """What one row video holds; lengths in pixels of the frame unless said otherwise."""

    width: int = 320
    height: int = 192
    frames: int = 240
    fps: float = 15.0
    vines: int = 4
    vine_width: float = 1.5  # frame widths from post to post
    min_bunches: int = 5  # per vine
    max_bunches: int = 9
    bunch_length: tuple[float, float] = (0.14, 0.28)  # fraction of the frame height
    berry_radius: tuple[float, float] = (0.06, 0.09)  # fraction of the bunch length
    p_front_leaf: float = 0.25  # per bunch: a leaf at bunch depth covers part of it
    near_leaves: float = 1.2  # near (parallax) leaf clusters per frame width of the row
    parallax: float = 1.6  # near leaves move this many times faster than the row
    shake_px: float = 2.5  # vertical camera shake, pixels (std of a smooth wander)
    blur: float = 0.5  # motion-blur length = blur x speed (pixels per frame)
    p_backup: float = 1.0  # probability that the operator backs up once
    jpeg_quality: tuple[int, int] = (55, 90)
    h264_crf: int = 26  # H.264 constant rate factor (bigger = stronger artefacts)
    min_area: int = 30  # visible masks smaller than this are not in the ground truth

    def __post_init__(self) -> None:
        problems = []
        if self.width < 64 or self.height < 64:
            problems.append(f"frame {self.width}x{self.height} is below 64 px")
        if self.frames < 2:
            problems.append(f"frames={self.frames}: need at least 2")
        if self.vines < 1 or self.vine_width <= 0:
            problems.append(f"vines={self.vines}, vine_width={self.vine_width}: need >= 1, > 0")
        if not 0 <= self.min_bunches <= self.max_bunches:
            problems.append(f"need 0 <= min_bunches <= max_bunches, got {self.min_bunches}, "
                            f"{self.max_bunches}")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            problems.append(f"jpeg_quality {self.jpeg_quality} is not a range within 1..100")
        if not self.fps > 0:
            problems.append(f"fps={self.fps} must be positive")
        if problems:
            raise GrapeInputError("row video config: " + "; ".join(problems))


@dataclass
class Row:
    """The painted row: image, bunch label map, vine spans, near-leaf layer, camera path."""

    image: np.ndarray  # float32 H x W x 3 BGR 0..1 (world)
    label: np.ndarray  # int32 H x W: bunch id (1-based), 0 = none
    full_area: np.ndarray  # int64 per bunch id (index 0 unused): silhouette pixels in the row
    vine_of_bunch: np.ndarray  # int per bunch id (index 0 unused): 0-based vine
    vine_edges: np.ndarray  # x of the posts, vines + 1 values (world pixels)
    near_rgb: np.ndarray  # float32 near-leaf layer
    near_alpha: np.ndarray  # float32 0..1
    cam_x: np.ndarray  # per frame, world x of the frame's left edge
    cam_y: np.ndarray  # per frame, world y of the frame's top edge
    speed: np.ndarray  # per frame, pixels moved since the last frame


@dataclass
class Frame:
    index: int
    image: np.ndarray  # uint8 BGR, after blur and JPEG (before the video codec)
    masks: dict[int, np.ndarray]  # bunch id -> bool mask (visible, >= min_area)
    visibility: dict[int, float]  # bunch id -> visible / full silhouette area


def _camera_path(rng: np.random.Generator, cfg: RowVideoConfig, start: float, end: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left-edge x and top y per frame from ``start`` to ``end``; the speed wanders, may stop
    and back up once."""
    n = cfg.frames
    wander = _smooth_noise(rng, 1, n, max(2, n // 40), 2)[0]
    factor = np.clip(1.0 + 0.45 * wander, 0.25, 1.9)
    if rng.random() < cfg.p_backup and n >= 40:
        at = int(rng.integers(n // 4, 3 * n // 4))
        length = int(rng.integers(6, 12))
        factor[at:at + length] = -0.8  # backing up
        factor[at + length:at + length + 4] = 0.05  # a stop before going on
    forward = factor.clip(min=0).sum() - (-factor.clip(max=0)).sum()
    speed = factor * (end - start) / max(forward, 1e-6)
    x = start + np.concatenate([[0.0], np.cumsum(speed[1:])])
    shake = cfg.shake_px * _smooth_noise(rng, 1, n, max(2, n // 6), 2)[0]
    shake += rng.normal(0, 0.3 * cfg.shake_px, n)
    speed[0] = speed[1] if n > 1 else 0.0
    return x.astype(np.float64), shake.astype(np.float64), speed.astype(np.float64)


def render_row(rng: np.random.Generator, cfg: RowVideoConfig) -> Row:
    """Paint the row and draw the camera path (module docstring)."""
    fw, fh = cfg.width, cfg.height
    margin = int(np.ceil(4 * cfg.shake_px)) + 4
    h = fh + 2 * margin
    vine_px = cfg.vine_width * fw
    pad = 0.6 * fw
    w = int(np.ceil(2 * pad + cfg.vines * vine_px))
    canvas = _Canvas(h, w, debug=False)
    _sky_rows_ground(rng, canvas)
    sunlit = rng.uniform(0.3, 1.0)
    edges = pad + vine_px * np.arange(cfg.vines + 1)
    bark = (0.18, 0.26, 0.34)
    post = (0.55, 0.62, 0.68) if rng.random() < 0.5 else (0.70, 0.72, 0.72)
    cordon_y = rng.uniform(0.45, 0.6) * h
    for x in edges:  # posts at both ends of every vine
        _wood(rng, canvas, np.array([[x, -5.0], [x + rng.normal(0, 2), h + 5.0]]),
              rng.uniform(0.05, 0.07) * fh, post, "post")
    for y in rng.uniform(0.1, 0.4, 2) * h:  # wires
        pts = np.stack([np.linspace(-5, w + 5, 64), np.full(64, y)], 1)
        grey = rng.uniform(0.4, 0.75)
        _paint_mask(canvas, _polyline_mask(h, w, pts, 1),
                    np.array([grey, grey, grey * 1.05], np.float32), "wire")
    for left in edges[:-1]:  # one trunk per vine
        x = left + rng.uniform(0.35, 0.65) * vine_px
        pts = _wavy(rng, np.array([x + rng.normal(0, 0.03) * fw, h + 10.0]),
                    np.array([x, cordon_y]), 10, 0.01 * h)
        _wood(rng, canvas, pts, rng.uniform(0.05, 0.08) * fh, bark, "trunk")
    cordon = _wavy(rng, np.array([-5.0, cordon_y]), np.array([w + 5.0, cordon_y]),
                   max(8, w // 30), 0.01 * h)
    _wood(rng, canvas, cordon, rng.uniform(0.03, 0.05) * fh, bark, "trunk")
    _canopy(rng, canvas, cordon_y, sunlit)
    for _ in range(int(rng.integers(3, 6)) * cfg.vines):
        _cane(rng, canvas, cordon[int(rng.integers(0, len(cordon)))], "background")
    canvas.layers.clear()  # everything so far is behind every bunch
    light = _random_light(rng)
    berries = SynthConfig(height=fh, width=fw, berry_radius=cfg.berry_radius, p_wing=0.3)
    variety = str(rng.choice(list(VARIETY_COLORS), p=[0.5, 0.2, 0.3]))
    infos, vine_of = [], [0]
    for v, left in enumerate(edges[:-1]):
        for _ in range(int(rng.integers(cfg.min_bunches, cfg.max_bunches + 1))):
            length = rng.uniform(*cfg.bunch_length) * fh
            x = left + rng.uniform(0.08, 0.92) * vine_px
            y = cordon_y + rng.uniform(-0.1, 0.15) * fh - 0.2 * length
            k = len(infos) + 1
            infos.append(_draw_bunch(rng, canvas, berries, light, k, np.array([x, y]), length,
                                     variety, black_bg=False))
            vine_of.append(v)
            lo, hi = infos[-1]["box"]
            if rng.random() < cfg.p_front_leaf:
                c = (lo + hi) / 2 + (hi - lo) / 2 * rng.uniform(-1.1, 1.1, 2)
                _draw_leaf(rng, canvas, c[0], c[1], rng.uniform(0.08, 0.14) * fh, sunlit,
                           "leaf")
    sil = _silhouettes(canvas, infos, VineyardConfig(height=fh, width=fw, min_area=1))
    label = np.zeros(h * w, np.int32)
    for k, pix in enumerate(sil, start=1):
        label[pix] = k
    full = np.bincount(label, minlength=len(infos) + 1).astype(np.int64)
    # Near leaves: their own layer, wider than the row by the parallax factor.
    nw = int(np.ceil(w * cfg.parallax)) + fw
    near = _Canvas(h, nw, debug=False)
    near.img[:] = 0
    for _ in range(int(round(cfg.near_leaves * nw / fw))):
        cx = rng.uniform(0, nw)
        cy = rng.choice([rng.uniform(-0.1, 0.35), rng.uniform(0.35, 0.9)]) * h
        for _ in range(int(rng.integers(1, 4))):  # a cluster of 1-3 leaves
            _draw_leaf(rng, near, cx + rng.normal(0, 0.08) * fh, cy + rng.normal(0, 0.08) * fh,
                       rng.uniform(0.18, 0.32) * fh, float(np.clip(sunlit - 0.2, 0, 1)), "leaf",
                       textured=False)
    alpha = np.zeros(h * nw, np.float32)
    for _, _, idx in near.layers:
        alpha[idx] = 1.0
    alpha = cv2.GaussianBlur(alpha.reshape(h, nw), (0, 0), 1.5)  # out of focus
    near_rgb = cv2.GaussianBlur(near.img, (0, 0), 1.5)
    cam_x, cam_y, speed = _camera_path(rng, cfg, pad - fw / 2 - 0.3 * fw,
                                       edges[-1] - fw / 2 + 0.3 * fw)
    cam_y = cam_y + margin
    return Row(image=canvas.img, label=label.reshape(h, w), full_area=full,
               vine_of_bunch=np.array(vine_of), vine_edges=edges, near_rgb=near_rgb,
               near_alpha=alpha, cam_x=cam_x, cam_y=cam_y, speed=speed)


def _crop(array: np.ndarray, x: float, y: float, w: int, h: int, nearest: bool) -> np.ndarray:
    m = np.float32([[1, 0, -x], [0, 1, -y]])
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    if array.dtype == np.int32:
        array = array.astype(np.float32)  # warpAffine has no int32; ids stay exact (< 2**24)
        return cv2.warpAffine(array, m, (w, h), flags=flags).astype(np.int32)
    return cv2.warpAffine(array, m, (w, h), flags=flags, borderMode=cv2.BORDER_REFLECT)


def render_frames(rng: np.random.Generator, cfg: RowVideoConfig, row: Row) -> Iterator[Frame]:
    """Yield the frames of the camera path, one at a time (memory flat in video length)."""
    fw, fh = cfg.width, cfg.height
    origin = row.cam_x[0]
    cast = rng.uniform(0.93, 1.07, 3).astype(np.float32)
    exposure = rng.uniform(0.85, 1.2)
    for f in range(cfg.frames):
        x, y = row.cam_x[f], row.cam_y[f]
        img = _crop(row.image, x, y, fw, fh, nearest=False)
        label = _crop(row.label, x, y, fw, fh, nearest=True)
        nx = origin * cfg.parallax + (x - origin) * cfg.parallax
        ny = y + (y - row.cam_y.mean()) * (cfg.parallax - 1)
        a = _crop(row.near_alpha, nx, ny, fw, fh, nearest=False)
        near = _crop(row.near_rgb, nx, ny, fw, fh, nearest=False)
        img = img * (1 - a[..., None]) + near * a[..., None]
        label[a > 0.5] = 0
        k = int(round(cfg.blur * abs(row.speed[f])))
        if k >= 2:  # horizontal motion blur over the exposure
            img = cv2.filter2D(img, -1, np.full((1, k), 1.0 / k, np.float32))
        img = img * exposure * cast + rng.standard_normal(img.shape, dtype=np.float32) * 0.01
        img = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
        quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
        ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        img = cv2.imdecode(jpg, cv2.IMREAD_COLOR) if ok else img
        counts = np.bincount(label.ravel(), minlength=len(row.full_area))
        masks, vis = {}, {}
        for bid in np.flatnonzero(counts >= cfg.min_area):
            if bid == 0:
                continue
            masks[int(bid)] = label == bid
            vis[int(bid)] = float(counts[bid] / max(row.full_area[bid], 1))
        yield Frame(f, img, masks, vis)


def segment_rows(row: Row, cfg: RowVideoConfig) -> list[tuple[str, int, int]]:
    """``(segment, first_frame, last_frame)``: runs of frames whose image centre lies over one
    vine (frames before the first post count to the first vine, after the last to the last)."""
    centre = row.cam_x + cfg.width / 2
    vine = np.clip(np.searchsorted(row.vine_edges, centre, side="right") - 1, 0,
                   len(row.vine_edges) - 2)
    rows: list[tuple[str, int, int]] = []
    start = 0
    for f in range(1, len(vine) + 1):
        if f == len(vine) or vine[f] != vine[start]:
            rows.append((f"vine{int(vine[start]) + 1}", start, f - 1))
            start = f
    return rows


def write_row_video(out: str | os.PathLike, cfg: RowVideoConfig, seed: int,
                    frame_step: int = 0, overwrite: bool = False, codec: str = "auto",
                    progress: bool = True) -> dict:
    """Render one row video with its ground truth into the folder ``out`` (replaced whole).

    ``frame_step`` > 0 also writes every ``frame_step``-th frame as ``frames/NNNNNN.jpg``
    (JPEG 95, the frame before the video codec), referenced by the COCO ``file_name``.
    Returns what :func:`truth` holds plus the paths.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise GrapeInputError(f"{out}: exists and is not an empty folder (pass --overwrite)")
    rng = np.random.default_rng([seed, 16])
    row = render_row(rng, cfg)
    seen: set[int] = set()
    builder = CocoBuilder(categories=["bunch"], source="synthetic-row-video",
                          store=SpoolStore())
    builder.info.update(description=f"grape_instances synthetic row video, seed {seed}",
                        date_created="1970-01-01T00:00:00+00:00")
    stills = CocoBuilder(categories=["bunch"], source="synthetic-row-video")
    stills.info.update(builder.info)
    with builder, replacing_folder(out) as tmp:
        (tmp / "gt").mkdir()
        if frame_step > 0:
            (tmp / "frames").mkdir()
        writer = VideoWriter(tmp / "video.mp4", cfg.fps, cfg.width, cfg.height,
                             crf=cfg.h264_crf, codec=codec)
        gt = io.StringIO()
        try:
            frames = render_frames(rng, cfg, row)
            for fr in tqdm(frames, total=cfg.frames, desc="render row", unit="frame",
                           disable=not progress):
                writer.write(fr.image)
                name = f"frames/{fr.index:06d}.jpg"
                if frame_step > 0 and fr.index % frame_step == 0:
                    ok, jpg = cv2.imencode(".jpg", fr.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
                    (tmp / name).write_bytes(jpg.tobytes())
                    still = stills.add_image(name, cfg.height, cfg.width, frame_index=fr.index)
                    for bid, mask in fr.masks.items():
                        stills.add_annotation(still, mask=mask, track_id=bid)
                image_id = builder.add_image(name, cfg.height, cfg.width, frame_index=fr.index)
                for bid, mask in fr.masks.items():
                    seen.add(bid)
                    builder.add_annotation(image_id, mask=mask, track_id=bid,
                                           visibility=round(fr.visibility[bid], 4))
                    ys, xs = np.nonzero(mask)
                    gt.write(f"{fr.index + 1},{bid},{xs.min()},{ys.min()},"
                             f"{xs.max() - xs.min() + 1},{ys.max() - ys.min() + 1},1,1,"
                             f"{fr.visibility[bid]:.4f}\n")
        finally:
            writer.close()
        (tmp / "gt" / "gt.txt").write_text(gt.getvalue())
        builder.write(tmp / "annotations.json", overwrite=True)
        if frame_step > 0:
            stills.write(tmp / "frames.json", overwrite=True)
        segs = segment_rows(row, cfg)
        with open(tmp / "segments.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["segment", "first_frame", "last_frame"])
            w.writerows(segs)
        result = truth(row, seen, cfg, seed, writer.codec)
        write_json_atomic(tmp / "truth.json", result, indent=1)
    logger.info("row video: %d frames, %d bunches -> %s", cfg.frames, result["total"], out)
    return {**result, "video": str(out / "video.mp4"), "gt": str(out / "gt" / "gt.txt"),
            "coco": str(out / "annotations.json"), "segments_csv": str(out / "segments.csv")}


def truth(row: Row, seen: set[int], cfg: RowVideoConfig, seed: int, codec: str | None
          ) -> dict:
    """Bunches seen at least once, per vine and in total; the config that made them."""
    per_vine = {f"vine{v + 1}": 0 for v in range(cfg.vines)}
    for bid in seen:
        per_vine[f"vine{int(row.vine_of_bunch[bid]) + 1}"] += 1
    return {"seed": seed, "frames": cfg.frames, "fps": cfg.fps, "codec": codec,
            "width": cfg.width, "height": cfg.height, "total": len(seen),
            "segments": per_vine,
            "bunch_vine": {str(b): f"vine{int(row.vine_of_bunch[b]) + 1}" for b in sorted(seen)},
            "config": asdict(cfg)}


def write_row_videos(root: str | os.PathLike, splits: dict[str, int], cfg: RowVideoConfig,
                     seed: int = 0, frame_step: int = 0, overwrite: bool = False) -> dict:
    """``splits`` -> videos: ``root/<split>/<split>_NN/`` each a :func:`write_row_video`
    folder, seeded by (seed, split, index) so splits never share a row."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise GrapeInputError(f"{root}: exists and is not a folder")
    written: dict[str, list[dict]] = {}
    offsets = {"train": 0, "val": 1000, "test": 2000}
    for split, count in splits.items():
        written[split] = []
        for i in range(int(count)):
            s = seed * 10000 + offsets.get(split, 3000) + i
            written[split].append(write_row_video(
                root / split / f"{split}_{i:02d}", cfg, s, frame_step=frame_step,
                overwrite=overwrite))
    with atomic_outputs([root / "videos.json"], overwrite=True) as o:
        o.write_json(root / "videos.json", {s: [v["video"] for v in vs]
                                            for s, vs in written.items()}, indent=1)
    return written
