"""Automatic bunch masks for one-bunch images (the seed study's edge-detection route).

GrapesNet Dataset-1 shows one bunch per image on a black cloth or in the vineyard. For such
images a classical OpenCV pipeline gives a mask good enough to train on (black background) or
to correct by hand (natural background), without anyone drawing a polygon:

1. **Working copy**: the image is resized so its long side is ``EdgeParams.work_size``
   (morphology sizes are fractions of that size, so results do not depend on resolution),
   then Gaussian-blurred to remove JPEG noise and the texture inside berries.
2. **Foreground evidence**, by background type:

   * ``black``: the brightness (HSV value, max of B, G, R) above the cloth's own statistics
     (hysteresis between a sure and a weak level), united with Canny edges near it, which
     catch dark berries whose outline is brighter than the cloth; then trimmed to the level
     ``edge_level`` of the way from the cloth to the bunch's local brightness, where a
     blurred edge really is (the weak level alone sits in the halo: a rim around the bunch).
   * ``natural``: a colour model of the background from the border strip of the image
     (k-means centres in Lab), each pixel scored by its distance to the nearest background
     colour, Otsu on that score, then GrabCut seeded with it (border = background,
     confident core = foreground) to follow the real colour boundary.
   * ``auto``: ``black`` when nearly all border pixels are dark, else ``natural``.
3. **Morphology**: closing bridges the gaps between berries, opening removes specks. On
   black cloth a loose bunch (berries apart) is closed with a disc as wide as the measured
   spacing of its berries, so the outline spans the gaps as an annotator draws it whatever
   the resolution; a dense one keeps the small closing.
4. **Hole filling** and the **largest component(s)**: outer contours only, filled; kept if
   at least ``min_component_ratio`` of the largest (a bunch split by its stalk stays whole).
5. **Polygon simplification** with ``cv2.approxPolyDP`` at full resolution; the returned mask
   is the raster of exactly those polygons, so COCO masks and the VIA polygons a person
   corrects are the same shape.

:func:`read_edges` runs this over a folder into records in memory; :func:`convert_edges`
writes them into a COCO JSON (source ``edges``) and
optionally a VIA 2 project of the polygons, to be corrected in VIA and converted back with
``tools/convert.py via``. ``experiments.edge_benchmark`` scores the pipeline against the
exact masks of synthetic one-bunch images.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from tqdm import tqdm

from ..core.errors import GrapeInputError
from ..core.fileio import atomic_outputs, refuse_existing
from ..core.images import (
    DEFAULT_MAX_PIXELS,
    UndecodableImageError,
    decode_image,
    leave_out_undecodable,
    list_image_files,
)
from ..core.masks import rasterize_polygons
from ..core.polygons import MIN_COMPONENT_AREA, mask_to_polygons
from ..core.warning_counter import WarningCounter
from .coco import DEFAULT_CATEGORY, CocoBuilder, ImageRecord, Instance, Records, add_record
from .via import via2_dropdown, via2_image, via2_polygon_region, via2_project

logger = logging.getLogger(__name__)

Background = Literal["black", "natural", "auto"]
BACKGROUNDS = ("black", "natural", "auto")
SOURCE = "edges"
NO_BUNCH = "images where no bunch was found (left out of the COCO JSON)"
EMPTY_MASK = "empty masks"


@dataclass(frozen=True)
class EdgeParams:
    """Tunables of the pipeline; defaults are chosen for photos of one bunch filling a good
    part of the frame (GrapesNet Dataset-1), not for any one generator."""

    #: Long side of the working copy (pixels): speed, and scale-free morphology. The natural
    #: route works coarser: its texture cue wants berries a few pixels wide, and GrabCut's
    #: cost grows with the pixel count.
    work_size: int = 512
    natural_work_size: int = 256
    #: Gaussian blur kernel (working pixels, odd).
    blur_ksize: int = 3
    #: Width of the border strip used for background statistics (fraction of the short side).
    border_frac: float = 0.05
    #: ``black``: a pixel is surely bunch above ``median + strong_sigmas * sigma + margin`` of
    #: the border's brightness (robust sigma from the MAD), possibly bunch above the weak
    #: level; weak pixels count only when connected to sure ones (hysteresis, as in Canny).
    strong_sigmas: float = 4.0
    weak_sigmas: float = 2.5
    #: Absolute margins (grey levels) above the cloth: JPEG banding and cloth folds.
    strong_margin: float = 8.0
    weak_margin: float = 4.0
    #: Lowest "sure bunch" brightness, whatever the cloth statistics say.
    min_threshold: int = 20
    #: Closing / opening kernel diameters as fractions of the working short side (on black
    #: cloth the closing of a loose bunch is wider, see ``min_loose_berries``).
    close_frac: float = 0.015
    open_frac: float = 0.01
    #: ``black``: a loose bunch (at least ``min_loose_berries`` separate berries) is closed
    #: with a disc as wide as the median spacing of neighbouring berries, so the outline
    #: runs across the gaps as an annotator draws it, at any resolution and packing; at most
    #: ``max_close_frac`` of the bunch's size (square root of its convex hull area).
    min_loose_berries: int = 5
    max_close_frac: float = 0.4
    #: ``black``: window of the local bunch brightness for ``edge_level`` (fraction of the
    #: bunch's size: a few berries).
    level_window_frac: float = 0.1
    #: ``black``: the outline sits where the brightness is this fraction of the way from the
    #: cloth to the bunch's local brightness, not at the faint halo that blur and JPEG leave
    #: around bright berries (the weak threshold alone put a rim of 1-2 pixels there).
    edge_level: float = 0.3
    #: Stalk removal: opening with a disc of this fraction of sqrt(mask area); removes
    #: the peduncle and other parts thinner than a berry, keeps berries.
    stalk_frac: float = 0.12
    #: Components smaller than this fraction of the largest are dropped.
    min_component_ratio: float = 0.15
    #: Masks smaller than this fraction of the image are treated as "no bunch found".
    min_area_frac: float = 0.002
    #: ``cv2.approxPolyDP`` tolerance in full-resolution pixels.
    epsilon_px: float = 1.0
    #: ``auto``: black when this fraction of border pixels is darker than ``dark_value``.
    dark_fraction: float = 0.9
    dark_value: int = 60
    #: ``natural``: k-means colours of the border, scales of the detail (blur removed) and
    #: of its local energy (fractions of the short side), GrabCut iterations.
    background_colours: int = 5
    detail_frac: float = 0.006
    texture_frac: float = 0.016
    grabcut_iterations: int = 4


@dataclass
class EdgeResult:
    """One auto-annotation: the bunch mask, its polygons and the background used."""

    mask: np.ndarray
    polygons: list[np.ndarray] = field(default_factory=list)  # each K x 2 int (x, y)
    background: str = "black"


def _border_strip(h: int, w: int, frac: float) -> np.ndarray:
    b = max(2, int(round(min(h, w) * frac)))
    strip = np.zeros((h, w), bool)
    strip[:b, :] = strip[-b:, :] = strip[:, :b] = strip[:, -b:] = True
    return strip


def detect_background(image_bgr: np.ndarray, params: EdgeParams = EdgeParams()) -> str:
    """``black`` when nearly every border pixel is dark (a studio cloth), else ``natural``."""
    h, w = image_bgr.shape[:2]
    value = image_bgr.max(axis=2)[_border_strip(h, w, params.border_frac)]
    dark = float(np.mean(value < params.dark_value))
    return "black" if dark >= params.dark_fraction else "natural"


def _kernel(diameter: float) -> np.ndarray:
    d = max(3, int(round(diameter)) | 1)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d))


def _robust_stats(values: np.ndarray) -> tuple[float, float]:
    """Median and MAD-based sigma: a bunch reaching into the border strip does not move them."""
    med = float(np.median(values))
    return med, 1.4826 * float(np.median(np.abs(values - med))) + 1.0


def _hysteresis(weak: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """Weak pixels whose 8-connected component contains a strong pixel."""
    _, labels = cv2.connectedComponents(weak.astype(np.uint8), connectivity=8)
    keep = np.unique(labels[strong & weak])
    return np.isin(labels, keep[keep > 0])


def _black_evidence(blurred: np.ndarray, params: EdgeParams) -> tuple[np.ndarray, float]:
    """Brightness above the cloth (with hysteresis) united with Canny edges near it, trimmed
    to the berries' edge level; and the closing radius that suits this bunch."""
    h, w = blurred.shape[:2]
    border = _border_strip(h, w, params.border_frac)
    value = blurred.max(axis=2)
    med, sigma = _robust_stats(value[border].astype(np.float32))
    strong_t = max(med + params.strong_sigmas * sigma + params.strong_margin,
                   float(params.min_threshold))
    strong = value > strong_t
    weak = value > min(med + params.weak_sigmas * sigma + params.weak_margin, strong_t)
    fg = _hysteresis(weak, strong)
    # Dark berries still have a visible rim: Canny above the cloth's own gradient level.
    grad = np.hypot(cv2.Sobel(value, cv2.CV_32F, 1, 0), cv2.Sobel(value, cv2.CV_32F, 0, 1))
    high = 1.5 * float(np.percentile(grad[border], 99.5)) + 10.0
    edges = cv2.Canny(value, high / 2, high) > 0
    near = cv2.dilate(strong.astype(np.uint8), _kernel(0.03 * min(h, w))) > 0
    found = fg | (edges & near)
    size = _bunch_size(found, params)
    radius = params.close_frac * min(h, w) / 2
    trimmed = _trim_halo(value, found, med, params.level_window_frac * size, params)
    loose = _loose_berries(trimmed, params)
    if loose is None:
        return trimmed, radius
    # A loose bunch: bridge neighbouring berries, as an annotator does; the stalks are left
    # out first, or the wide closing would span the corner between peduncle and top berries.
    berries, spacing = loose
    return berries, max(radius, min(spacing, params.max_close_frac * size))


def _loose_berries(mask: np.ndarray, params: EdgeParams) -> tuple[np.ndarray, float] | None:
    """The berries without their stalks and the median distance between neighbouring
    berries when the berries stand apart (a loose bunch), else None.

    The berry radius comes from the distance transform: in a disc of radius r, a tenth of
    the pixels lie deeper than 0.68 r, while the rachis and pedicels are thin and barely
    count. An opening of that diameter cuts the rachis and pedicels that join berries; the
    cores (deeper than 0.35 r) part berries that almost touch. When most of the cores are
    separate berry-sized blobs, their centres give the spacing. In a dense bunch they are
    one body, and the floor radius applies.
    """
    m = mask.astype(np.uint8)
    dt = cv2.distanceTransform(m, cv2.DIST_L2, cv2.DIST_MASK_5)
    radius = float(np.percentile(dt[m > 0], 90)) / 0.68 if m.any() else 0.0
    if radius < 1.5:
        return None
    opened = cv2.morphologyEx(m, cv2.MORPH_OPEN, _kernel(radius))
    cores = ((dt > 0.35 * radius) & (opened > 0)).astype(np.uint8)
    n, _, stats, centres = cv2.connectedComponentsWithStats(cores, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    if n - 1 < params.min_loose_berries:
        return None
    typical = np.pi * (0.65 * radius) ** 2
    berry = (areas >= 0.3 * typical) & (areas <= 3.0 * typical)
    count = int(berry.sum())  # thousands of blobs are noise, not a bunch
    if not params.min_loose_berries <= count <= 2000 or areas[berry].sum() < 0.5 * areas.sum():
        return None
    xy = centres[1:][berry]
    dist = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(dist, np.inf)
    return opened, float(np.median(dist.min(axis=1)))


def _bunch_size(mask: np.ndarray, params: EdgeParams) -> float:
    """Square root of the convex hull area of the mask's sizeable parts (specks and thin
    stalks opened away first): the bunch's scale, whether its berries touch or not."""
    m = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN,
                         _kernel(params.open_frac * min(mask.shape)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n <= 1:
        return 0.0
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = 1 + np.flatnonzero(areas >= 0.005 * areas.sum())
    points = cv2.findNonZero(np.isin(labels, keep).astype(np.uint8))
    return float(np.sqrt(cv2.contourArea(cv2.convexHull(points))))


def _trim_halo(value: np.ndarray, found: np.ndarray, cloth: float, window: float,
               params: EdgeParams) -> np.ndarray:
    """Keep the pixels of ``found`` brighter than ``edge_level`` of the way from the cloth to
    the mean brightness of the bunch around them (a square of side ``window``).

    A blurred step crosses that level at the object's edge, whatever its brightness; a fixed
    threshold just above the cloth sits in the halo instead, further out the brighter the
    berry. Local, so dark berries next to bright ones keep their own level.
    """
    f = found.astype(np.float32)
    v = value.astype(np.float32)
    k = 2 * int(round(window / 2)) + 1
    total = cv2.boxFilter(v * f, -1, (k, k), normalize=False)
    count = cv2.boxFilter(f, -1, (k, k), normalize=False)
    local = total / np.maximum(count, 1e-6)
    return found & (v > cloth + params.edge_level * (local - cloth))


def _background_distance(blurred: np.ndarray, params: EdgeParams) -> np.ndarray:
    """Per-pixel Lab distance to the nearest k-means colour of the border strip."""
    h, w = blurred.shape[:2]
    lab = cv2.cvtColor(blurred, cv2.COLOR_BGR2LAB).astype(np.float32)
    border = lab[_border_strip(h, w, params.border_frac)]
    rng = np.random.default_rng(0)
    if len(border) > 4000:
        border = border[rng.choice(len(border), 4000, replace=False)]
    k = min(params.background_colours, len(border))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    cv2.setRNGSeed(0)
    _, _, centres = cv2.kmeans(border, k, None, criteria, 3, cv2.KMEANS_PP_CENTERS)
    # Lightness varies with shading on both bunch and leaves: weigh it half.
    weights = np.array([0.5, 1.0, 1.0], np.float32)
    flat = lab.reshape(-1, 3) * weights
    d2 = ((flat[:, None, :] - (centres * weights)[None, :, :]) ** 2).sum(axis=2)
    return np.sqrt(d2.min(axis=1)).reshape(h, w)


def _texture(image: np.ndarray, params: EdgeParams) -> np.ndarray:
    """Local energy of fine detail: a bunch in focus is a field of small specular spheres,
    while the vineyard behind it is mostly smooth (out of focus) or sparsely veined."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    short = min(gray.shape)
    detail = np.abs(gray - cv2.GaussianBlur(gray, (0, 0), max(1.0, params.detail_frac * short)))
    return cv2.GaussianBlur(detail, (0, 0), params.texture_frac * short)


def _unit(x: np.ndarray) -> np.ndarray:
    """Scale to 0..1 by the 99th percentile (a few specular pixels do not set the scale)."""
    top = float(np.percentile(x, 99))
    return np.clip(x / top, 0, 1) if top > 0 else np.zeros_like(x)


def _natural_evidence(image: np.ndarray, blurred: np.ndarray, params: EdgeParams) -> np.ndarray:
    h, w = blurred.shape[:2]
    score = np.sqrt(_unit(_background_distance(blurred, params)) * _unit(_texture(image, params)))
    scaled = (score * 255).astype(np.uint8)
    _, seed = cv2.threshold(scaled, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    seed = _best_component(seed.astype(bool), score)
    if not seed.any():
        return seed
    short = min(h, w)
    gc = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    gc[seed] = cv2.GC_PR_FGD
    gc[cv2.erode(seed.astype(np.uint8), _kernel(0.04 * short)) > 0] = cv2.GC_FGD
    far = cv2.dilate(seed.astype(np.uint8), _kernel(0.08 * short)) == 0
    gc[far] = cv2.GC_BGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(blurred, gc, None, bgd, fgd, params.grabcut_iterations,
                    cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # degenerate colour models (e.g. a flat image): keep the seed
        return seed
    return (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)


def _best_component(mask: np.ndarray, score: np.ndarray) -> np.ndarray:
    """The connected component with the largest summed score (the bunch, not a bright leaf)."""
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(mask.shape, bool)
    sums = np.bincount(labels.ravel(), weights=score.ravel(), minlength=n)
    sums[0] = -1
    return labels == int(np.argmax(sums))


def _fill_largest(mask: np.ndarray, params: EdgeParams) -> np.ndarray:
    """Outer contours filled (holes between berries closed), small components dropped."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.zeros(mask.shape, bool)
    areas = [cv2.contourArea(c) for c in contours]
    floor = params.min_component_ratio * max(areas)
    keep = [c for c, a in zip(contours, areas, strict=True) if a >= floor]
    filled = np.zeros(mask.shape, np.uint8)
    cv2.drawContours(filled, keep, -1, 1, thickness=cv2.FILLED)
    return filled > 0


def _close(mask: np.ndarray, radius: float) -> np.ndarray:
    """Morphological closing with a disc of ``radius`` through two distance transforms: exact
    Euclidean discs, and a cost that does not grow with the radius. Padded, so a bunch that
    touches the frame is closed as if the cloth went on."""
    pad = 2 * int(np.ceil(radius)) + 2
    m = cv2.copyMakeBorder(mask.astype(np.uint8), pad, pad, pad, pad, cv2.BORDER_CONSTANT)
    grown = cv2.distanceTransform(1 - m, cv2.DIST_L2, cv2.DIST_MASK_PRECISE) <= radius
    closed = cv2.distanceTransform(grown.astype(np.uint8), cv2.DIST_L2,
                                   cv2.DIST_MASK_PRECISE) > radius
    return closed[pad:-pad, pad:-pad].astype(np.uint8)


def _clean(mask: np.ndarray, params: EdgeParams, close_radius: float | None = None) -> np.ndarray:
    """Closing (``close_radius``, else the ``close_frac`` floor), opening, hole filling,
    largest component(s), then stalk removal."""
    short = min(mask.shape)
    m = mask.astype(np.uint8)
    if close_radius is None:
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, _kernel(params.close_frac * short))
    else:
        m = _close(m, close_radius)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, _kernel(params.open_frac * short))
    m = _fill_largest(m, params)
    if params.stalk_frac > 0 and m.any():
        stalk_kernel = _kernel(params.stalk_frac * np.sqrt(m.sum()))
        m = _fill_largest(cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_OPEN, stalk_kernel),
                          params)
    return m


def auto_annotate(
    image_bgr: np.ndarray, background: Background = "auto", params: EdgeParams = EdgeParams()
) -> EdgeResult:
    """Mask and simplified polygons of the one bunch in ``image_bgr`` (H x W x 3 uint8, BGR).

    The mask is the raster of the polygons. An image where no bunch is found gives an empty
    mask and no polygons.
    """
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {image_bgr.shape}")
    h, w = image_bgr.shape[:2]
    if background == "auto":
        background = detect_background(image_bgr, params)
    work_size = params.work_size if background == "black" else params.natural_work_size
    scale = min(1.0, work_size / max(h, w))
    small = image_bgr
    if scale < 1.0:
        small = cv2.resize(image_bgr, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA)
    k = params.blur_ksize | 1
    blurred = cv2.GaussianBlur(small, (k, k), 0)
    if background == "black":
        evidence, radius = _black_evidence(blurred, params)
        work = _clean(evidence, params, radius)
    else:
        work = _clean(_natural_evidence(small, blurred, params), params)
    if work.sum() < params.min_area_frac * work.size:
        return EdgeResult(np.zeros((h, w), bool), [], background)
    if scale < 1.0:  # back to full size through a smooth (linear) mask, then re-threshold
        work = cv2.resize(work.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) > 0.5
    # along pixel edges (VIA's and pycocotools' convention): a person who opens the VIA
    # project sees the outline around the bunch, and converting it back gives this mask
    polygons = mask_to_polygons(work, "edges", params.epsilon_px, MIN_COMPONENT_AREA)
    return EdgeResult(rasterize_polygons(polygons, h, w), polygons, background)


# --------------------------------------------------------------------------- folders


def via_project(records: dict[str, dict], images_dir: str | os.PathLike, name: str) -> dict:
    """A VIA 2.x project (``Project > Open`` in VIA 2) over ``records`` keyed filename+size.

    ``default_filepath`` points VIA at the images folder, so the project opens with its
    images when VIA runs on the same machine.
    """
    return via2_project(
        records, name, os.path.abspath(images_dir) + os.sep,
        {"name": via2_dropdown("class", [DEFAULT_CATEGORY], default=DEFAULT_CATEGORY)},
        {"background": via2_dropdown("background kind", ["black", "natural"])},
        region_label="name", region_color="name")


def edge_record(path: Path, rel: str, image_bgr: np.ndarray, background: Background = "auto",
                params: EdgeParams = EdgeParams()) -> ImageRecord:
    """The auto-annotation of one decoded image as a reader record: one ``bunch`` instance
    (its integer pixel-edge polygons) or none when no bunch is found; the background used
    is the image extra ``background``."""
    result = auto_annotate(np.ascontiguousarray(image_bgr), background, params)
    h, w = image_bgr.shape[:2]
    instances = ([Instance(DEFAULT_CATEGORY, rel,
                           polygons=[np.asarray(p).ravel().tolist() for p in result.polygons])]
                 if result.polygons else [])
    return ImageRecord(rel, path, h, w, instances, extras={"background": result.background})


def read_edges(
    images_dir: str | os.PathLike,
    background: Background = "auto",
    *,
    recursive: bool = False,
    keep_empty: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    params: EdgeParams = EdgeParams(),
    strict_images: bool = False,
    warnings: WarningCounter | None = None,
) -> Records:
    """Auto-annotate every image of ``images_dir`` into :class:`Records`, lazily (one image
    decoded and annotated at a time), so that a caller composes it without a temporary COCO.

    File names are relative to ``images_dir``. An image where no bunch is found is a counted
    warning and left out, or, with ``keep_empty``, kept without instances (a person draws
    it). An image that does not decode is left out, counted and listed in ``undecodable``,
    unless ``strict_images``. The folder and ``background`` are checked now.
    """
    if background not in BACKGROUNDS:
        raise GrapeInputError(f"--background must be one of {', '.join(BACKGROUNDS)}, "
                              f"got {background!r}")
    images_dir = Path(images_dir)
    files = list_image_files(images_dir, recursive=recursive)
    if not files:
        raise GrapeInputError(f"{images_dir}: no images found")
    warnings = warnings if warnings is not None else WarningCounter()
    records = Records([DEFAULT_CATEGORY], images_dir, SOURCE, iter(()), warnings)
    records.images = _edge_records(files, images_dir, background, keep_empty, max_pixels,
                                   params, strict_images, records)
    return records


def _edge_records(files: list[Path], images_dir: Path, background: Background,
                  keep_empty: bool, max_pixels: int | None, params: EdgeParams,
                  strict_images: bool, records: Records) -> Iterator[ImageRecord]:
    root = images_dir.absolute()
    for path in tqdm(files, desc="edge annotation", unit="img", leave=False, disable=None):
        rel = path.absolute().relative_to(root).as_posix()
        try:
            image = decode_image(path, max_pixels=max_pixels, format="BGR")
        except UndecodableImageError as e:
            leave_out_undecodable(e, records.warnings, strict_images)
            records.undecodable.append(str(path.absolute()))
            continue
        record = edge_record(path.absolute(), rel, image, background, params)
        if not record.instances:
            records.warnings.add(NO_BUNCH, rel)
            if not keep_empty:
                continue
        yield record


def convert_edges(
    images_dir: str | os.PathLike,
    out_json: str | os.PathLike,
    background: Background = "auto",
    via_out: str | os.PathLike | None = None,
    overwrite: bool = False,
    recursive: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    params: EdgeParams = EdgeParams(),
    strict_images: bool = False,
) -> dict:
    """Auto-annotate every image of ``images_dir`` into a COCO JSON (+ a VIA 2 project):
    :func:`read_edges` written by a :class:`CocoBuilder`.

    One instance (category ``bunch``) per image, the image extra ``background`` records the
    background used. Images where no bunch is found are left out with a count, and listed
    in the VIA project without regions so a person can draw them. An image that does not
    decode (its one full decode fails) is left out of both, counted, unless
    ``strict_images``. File names are relative to ``images_dir``. Outputs are checked
    before any work and written at the end.
    """
    records = read_edges(images_dir, background, recursive=recursive, keep_empty=True,
                         max_pixels=max_pixels, params=params, strict_images=strict_images)
    images_dir = Path(images_dir)
    for path in [out_json] + ([via_out] if via_out is not None else []):
        refuse_existing(path, overwrite)  # before any work
    builder = CocoBuilder(records.categories, source=records.source)
    via_records: dict[str, dict] = {}
    warnings = records.warnings
    counts = {"black": 0, "natural": 0}
    seen = 0
    for rec in records.images:
        seen += 1
        kind = rec.extras["background"]
        counts[kind] += 1
        regions = [via2_polygon_region(np.reshape(p, (-1, 2)), {"name": DEFAULT_CATEGORY})
                   for inst in rec.instances for p in inst.polygons or []]
        key, via_record = via2_image(rec.file_name, rec.path.stat().st_size, regions,
                                     {"background": kind})
        via_records[key] = via_record
        if rec.instances:
            add_record(builder, rec, warnings, EMPTY_MASK)
    n_files = seen + len(records.undecodable)
    builder.info["image_root"] = str(images_dir)
    builder.info["edge_params"] = asdict(params)
    paths = [out_json] + ([via_out] if via_out is not None else [])
    with atomic_outputs(paths, overwrite=overwrite) as outputs:  # both or neither
        builder.write(out_json, outputs=outputs)
        if via_out is not None:
            outputs.write_json(via_out, via_project(via_records, images_dir, "edges"))
    warnings.log(logger, prefix=f"{images_dir}: ")
    summary = {"images": n_files, "annotated": builder.num_images,
               "backgrounds": counts, "warnings": warnings.as_dict()}
    logger.info("edges: %d of %d images annotated (%d black, %d natural background) -> %s",
                summary["annotated"], n_files, counts["black"], counts["natural"], out_json)
    return summary
