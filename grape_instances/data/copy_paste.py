"""Copy-paste augmentation of annotated bunches between training photos (Ghiasi et al.,
*Simple Copy-Paste is a Strong Data Augmentation Method for Instance Segmentation*, CVPR 2021:
large gains for instance segmentation with little data). ``INPUT.COPY_PASTE`` in the config;
the mapper that uses it is :class:`grape_instances.data.mappers.CopyPasteMapper`.

How it fits the project's data path (the choices, and why):

- **In the mapper, after the image's own augmentation.** Detectron2's mapper sees one record
  at a time, so the mapper is given the training records (:class:`BunchSource`, serialised
  as Detectron2's ``DatasetFromList`` keeps a dataset, so forked loader workers share one
  compact copy) and draws the source photo itself. The target window is made exactly as
  without copy-paste (same random draws), so ``PROB 0`` gives the old output bit for bit.
- **Bunches, not whole images.** The paper pastes a random subset of one augmented image's
  objects onto another. Here each pasted bunch is cut out of the source photo on its own,
  scaled, flipped, jittered and placed at a random spot, wholly inside the window: a
  384 px window of a vineyard photo could not hold another photo's subset at its own places,
  and per-bunch placement gives more varied occlusions for the same cost.
- **The same working scale.** The source photo is brought to the scale the target photo was
  resized to (both fitted into ``INPUT.SCALE_CROP.TARGET_SIZE``, then the target's drawn
  jitter), times a factor from ``SCALE_RANGE``: pasted bunches have the sizes the model meets
  at test time. Only the pasted bunches' regions are resampled; the source JPEG (the scaled
  cache's copy with ``INPUT.SCALE_CROP.CACHE``) is decoded with PIL's draft mode when it is
  over twice the size needed.
- **Masks as pixels where a paste happened.** Polygons cannot lose the pixels a paste covers
  (a bunch pasted inside another would need a hole), so an image that got a paste carries
  ``BitMasks`` at window size (384 x 384: cheap); the others keep their ``PolygonMasks``.
  Detectron2's mask head crops each image's masks on its own (``crop_and_resize``, bool for
  both) before concatenating them, so a batch may mix the two.
- **Occlusion follows MIN_VISIBLE.** A bunch keeps the fraction of its whole area that the
  window showed (``INPUT.SCALE_CROP.MIN_VISIBLE``'s rule) times the fraction of its pixels
  the pastes left; below ``MIN_VISIBLE`` it drops out, wholly covered it always does. Boxes
  of that image are recomputed from the masks.
"""

from __future__ import annotations

import logging
import math

import cv2
import detectron2.data.transforms as T
import numpy as np
import torch
from detectron2.data import detection_utils as utils
from detectron2.data.common import DatasetFromList
from detectron2.structures import (
    BitMasks,
    Instances,
    PolygonMasks,
    polygons_to_bitmask,
)
from PIL import Image, ImageOps

from ..core.errors import GrapeInputError
from ..core.masks import segmentation_to_mask

logger = logging.getLogger(__name__)


def check_copy_paste_config(cfg) -> None:
    """One line for an ``INPUT.COPY_PASTE`` value that cannot work (checked when the config
    is built, whether or not copy-paste is on, so a typo is not found mid-training)."""
    cp = cfg.INPUT.COPY_PASTE
    key = "INPUT.COPY_PASTE"
    if not 0.0 <= float(cp.PROB) <= 1.0:
        raise GrapeInputError(f"{key}.PROB must be in [0, 1], got {cp.PROB}")
    if isinstance(cp.MAX_OBJECTS, bool) or not isinstance(cp.MAX_OBJECTS, int) \
            or cp.MAX_OBJECTS < 1:
        raise GrapeInputError(f"{key}.MAX_OBJECTS must be a whole number >= 1, "
                              f"got {cp.MAX_OBJECTS!r}")
    scale = tuple(cp.SCALE_RANGE)
    if len(scale) != 2 or not all(isinstance(s, (int, float)) for s in scale) \
            or not 0 < scale[0] <= scale[1]:
        raise GrapeInputError(f"{key}.SCALE_RANGE must be (min, max) with 0 < min <= max, "
                              f"got {cp.SCALE_RANGE!r}")
    if not float(cp.BLUR_SIGMA) >= 0:
        raise GrapeInputError(f"{key}.BLUR_SIGMA must be >= 0, got {cp.BLUR_SIGMA}")
    if not cp.ENABLED:
        return
    if cfg.INPUT.DEPTH.ENABLED:
        raise GrapeInputError(f"{key}.ENABLED does not work with INPUT.DEPTH.ENABLED "
                              "(depth images are not pasted)")
    if not cfg.MODEL.MASK_ON:
        raise GrapeInputError(f"{key}.ENABLED needs MODEL.MASK_ON True: bunches are cut out "
                              "by their masks")


def working_fit(height: float, width: float, reference_hw) -> float:
    """The scale that fits a (height, width) photo into ``reference_hw``, as Detectron2's
    ResizeScale fits it before its jitter (``reference_hw`` (1, 1): by its long side)."""
    return min(reference_hw[0] / height, reference_hw[1] / width)


def resize_factor(transforms: T.TransformList) -> float:
    """How much ``transforms`` enlarged the image (product of its resizes, along x)."""
    factor = 1.0
    for t in transforms.transforms:
        if isinstance(t, T.ResizeTransform):
            factor *= t.new_w / t.w
    return factor


class BunchSource:
    """The training records to take bunches from, kept as Detectron2's ``DatasetFromList``
    keeps a dataset (pickled into one buffer: each access returns a fresh copy, and forked
    loader workers share the buffer instead of touching every record's refcount)."""

    def __init__(self, records: list[dict]) -> None:
        self.records = DatasetFromList(records, copy=False, serialize=True)
        self.index = {r["file_name"]: i for i, r in enumerate(records)}

    def __len__(self) -> int:
        return len(self.records)

    def pick(self, file_name: str) -> dict:
        """A uniformly random record other than ``file_name``'s (itself when it is the only
        one), drawn from NumPy's global generator as Detectron2's augmentations are."""
        n = len(self.records)
        own = self.index.get(file_name)
        if own is None or n == 1:
            return self.records[np.random.randint(n)]
        j = np.random.randint(n - 1)
        return self.records[j + (j >= own)]


def _segmentation_bounds(segm, height: int, width: int):
    """(x0, y0, x1, y1) of a polygon list or RLE in its record's pixel coordinates, and the
    segmentation as polygons (N x 2 arrays) or as a full-size mask."""
    if isinstance(segm, list):
        polygons = [np.asarray(p, np.float64).reshape(-1, 2) for p in segm]
        points = np.concatenate(polygons)
        (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
        return (x0, y0, x1, y1), polygons
    mask = segmentation_to_mask(segm, height, width).astype(bool)
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return None, mask
    return (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), mask


def read_source_photo(path: str, scale: float, image_format: str) -> np.ndarray:
    """The photo at ``path`` (EXIF orientation applied, in ``image_format``), decoded by PIL's
    JPEG draft mode at 1/2, 1/4 or 1/8 size when ``scale`` (of its record's size) is at most
    that: the caller reads the decoded scale off the array's shape."""
    with Image.open(path) as img:
        if img.format == "JPEG" and scale < 0.5:
            w, h = img.size  # file orientation, as draft's size: one scale for both sides
            img.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))
        ImageOps.exif_transpose(img, in_place=True)  # as Detectron2 orients the target
        return utils.convert_PIL_to_numpy(img, image_format)


def cut_bunch(photo: np.ndarray, sx: float, sy: float, bounds, segm, factor: float,
              margin: int):
    """A bunch cut out of ``photo`` (decoded at ``sx``, ``sy`` of its record's coordinates)
    and scaled by ``factor`` (record px -> output px): (patch H x W x C, mask H x W bool).

    The patch is the bunch's box plus ``margin`` output px (for a blurred edge), resampled
    with area averaging when it shrinks; the mask is the bunch's polygons mapped the same way
    and rasterised at output size (an RLE's mask is resampled), so pixels and mask agree."""
    x0, y0, x1, y1 = bounds
    k = factor / sx  # decoded px -> output px (sx == sy up to rounding)
    pad = math.ceil(margin / k) + 1
    H, W = photo.shape[:2]
    rx0, ry0 = max(int(math.floor(x0 * sx)) - pad, 0), max(int(math.floor(y0 * sy)) - pad, 0)
    rx1, ry1 = min(int(math.ceil(x1 * sx)) + pad, W), min(int(math.ceil(y1 * sy)) + pad, H)
    pw, ph = max(round((rx1 - rx0) * k), 1), max(round((ry1 - ry0) * factor / sy), 1)
    kx, ky = pw / (rx1 - rx0), ph / (ry1 - ry0)  # the exact scales cv2.resize applies
    region = photo[ry0:ry1, rx0:rx1]
    interp = cv2.INTER_AREA if kx < 1 else cv2.INTER_LINEAR
    patch = cv2.resize(region, (pw, ph), interpolation=interp)
    if patch.ndim == 2:
        patch = patch[:, :, None]
    if isinstance(segm, list):
        mapped = [((p * (sx, sy) - (rx0, ry0)) * (kx, ky)).ravel() for p in segm]
        mask = polygons_to_bitmask(mapped, ph, pw)
    else:
        full = cv2.resize(segm.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST) \
            if segm.shape != (H, W) else segm.astype(np.uint8)
        mask = cv2.resize(full[ry0:ry1, rx0:rx1].astype(np.float32), (pw, ph),
                          interpolation=cv2.INTER_LINEAR) >= 0.5
    return patch, mask


class CopyPaste:
    """Pastes bunches of random other training records into a mapped training image.

    ``photometric``: the mapper's colour augmentations, drawn anew for each pasted bunch (the
    paper augments both images independently); ``flip``: "horizontal", "vertical" or "none",
    a random flip of each pasted bunch as the window itself may get; ``reference_hw``: what
    photos are fitted into before their scale jitter (``INPUT.SCALE_CROP.TARGET_SIZE``, or
    (1, 1): by the long side)."""

    def __init__(self, records: list[dict], *, max_objects: int, scale_range, blur_sigma: float,
                 min_visible: float, reference_hw, photometric: list[T.Augmentation],
                 flip: str, image_format: str) -> None:
        self.source = BunchSource(records)
        self.max_objects = int(max_objects)
        self.scale_range = tuple(float(s) for s in scale_range)
        self.blur_sigma = float(blur_sigma)
        self.min_visible = float(min_visible)
        self.reference_hw = tuple(reference_hw)
        self.photometric = T.AugmentationList(list(photometric))
        self.flip = flip
        self.image_format = image_format
        self.undecodable: set[str] = set()

    def __call__(self, image: np.ndarray, instances: Instances, crop_visible: np.ndarray,
                 target_hw: tuple[int, int], transforms: T.TransformList, file_name: str
                 ) -> tuple[Instances, int] | None:
        """Paste bunches of another record into ``image`` (H x W x C, the augmented window;
        changed in place) and return its new instances (BitMasks) and the number of pasted
        bunches kept (the last instances); None, ``image`` untouched, when nothing could be
        pasted (the source has no masked bunch, or its photo does not decode).

        ``crop_visible``: per instance, the fraction of its whole area the window kept;
        ``target_hw``: the size of the record ``image`` came from; ``transforms``: what made
        the window of it (its resizes give the working scale)."""
        source = self.source.pick(file_name)
        anns = [a for a in source.get("annotations", [])
                if a.get("iscrowd", 0) == 0 and a.get("segmentation")]
        if not anns or source["file_name"] in self.undecodable:
            return None
        count = np.random.randint(1, min(self.max_objects, len(anns)) + 1)
        chosen = [anns[i] for i in np.random.choice(len(anns), count, replace=False)]
        sh, sw = source["height"], source["width"]
        base = resize_factor(transforms) * working_fit(sh, sw, self.reference_hw) \
            / working_fit(*target_hw, self.reference_hw)
        H, W = image.shape[:2]
        cuts = []
        for ann in chosen:
            bounds, segm = _segmentation_bounds(ann["segmentation"], sh, sw)
            if bounds is None:
                continue
            factor = base * np.random.uniform(*self.scale_range)
            bw, bh = bounds[2] - bounds[0], bounds[3] - bounds[1]
            factor = min(factor, W / max(bw, 1e-6), H / max(bh, 1e-6))  # it fits the window
            cuts.append((bounds, segm, factor, int(ann["category_id"])))
        if not cuts:
            return None
        try:
            photo = read_source_photo(source["file_name"], max(c[2] for c in cuts),
                                      self.image_format)
        except (OSError, SyntaxError) as e:  # PIL's undecodable-image errors
            self.undecodable.add(source["file_name"])
            logger.warning("%s: cannot decode the image to paste its bunches from (%s); no "
                           "paste from it", source["file_name"], e)
            return None
        sx, sy = photo.shape[1] / sw, photo.shape[0] / sh

        masks, before, visible, classes = self._existing(instances, crop_visible, H, W)
        pasted_from = len(masks)
        margin = math.ceil(3 * self.blur_sigma)
        for bounds, segm, factor, category in cuts:
            patch, mask = cut_bunch(photo, sx, sy, bounds, segm, factor, margin)
            if not mask.any():
                continue
            patch, mask = self._flip_and_jitter(patch, mask)
            region, hard = self._paste(image, patch, mask)
            for m in masks:
                m[region] &= ~hard
            full = np.zeros((H, W), bool)
            full[region] = hard
            masks.append(full)
            before.append(int(hard.sum()))
            visible.append(1.0)
            classes.append(category)
        after = np.array([int(m.sum()) for m in masks])
        fraction = after / np.maximum(before, 1) * np.asarray(visible)
        keep = after > 0
        if self.min_visible > 0:
            keep &= fraction >= self.min_visible
        kept = [m for m, k in zip(masks, keep, strict=True) if k]
        stacked = np.stack(kept) if kept else np.zeros((0, H, W), bool)
        out = Instances((H, W))
        out.gt_masks = BitMasks(torch.from_numpy(stacked))
        out.gt_boxes = out.gt_masks.get_bounding_boxes()
        out.gt_classes = torch.tensor([c for c, k in zip(classes, keep, strict=True) if k],
                                      dtype=torch.int64)
        return out, int(keep[pasted_from:].sum())

    @staticmethod
    def _existing(instances: Instances, crop_visible, H: int, W: int):
        if not instances.has("gt_masks") or not len(instances):
            return [], [], [], []
        gt = instances.gt_masks
        if isinstance(gt, PolygonMasks):
            masks = [polygons_to_bitmask(p, H, W) for p in gt.polygons]
        else:
            masks = list(gt.tensor.numpy().astype(bool))
        return (masks, [int(m.sum()) for m in masks], [float(v) for v in crop_visible],
                [int(c) for c in instances.gt_classes])

    def _flip_and_jitter(self, patch: np.ndarray, mask: np.ndarray):
        if self.flip != "none" and np.random.rand() < 0.5:
            axis = 1 if self.flip == "horizontal" else 0
            patch, mask = np.flip(patch, axis), np.flip(mask, axis)
        aug_input = T.AugInput(np.ascontiguousarray(patch))
        self.photometric(aug_input)
        return aug_input.image, np.ascontiguousarray(mask)

    def _paste(self, image: np.ndarray, patch: np.ndarray, mask: np.ndarray):
        """Blend ``patch`` into ``image`` (in place) under ``mask``, the mask's box at a
        uniformly random place wholly inside the image; returns (the image region pasted
        into as a pair of slices, the mask there)."""
        H, W = image.shape[:2]
        ys, xs = np.nonzero(mask)
        bx0, by0, bx1, by1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        tx = np.random.randint(0, max(W - (bx1 - bx0), 0) + 1)
        ty = np.random.randint(0, max(H - (by1 - by0), 0) + 1)
        ox, oy = tx - bx0, ty - by0  # the patch's top left in the image
        ix0, iy0 = max(ox, 0), max(oy, 0)
        ix1, iy1 = min(ox + patch.shape[1], W), min(oy + patch.shape[0], H)
        sub = (slice(iy0 - oy, iy1 - oy), slice(ix0 - ox, ix1 - ox))
        hard = mask[sub]
        if self.blur_sigma > 0:
            alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), self.blur_sigma)[sub]
        else:
            alpha = hard.astype(np.float32)
        alpha = alpha[:, :, None]
        region = image[iy0:iy1, ix0:ix1]
        region[:] = np.clip(alpha * patch[sub] + (1 - alpha) * region + 0.5, 0, 255
                            ).astype(image.dtype) if self.blur_sigma > 0 \
            else np.where(hard[:, :, None], patch[sub], region)
        return (slice(iy0, iy1), slice(ix0, ix1)), hard
