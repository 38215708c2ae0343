"""Tiled inference: run an instance model on overlapping windows of a photo larger than the
input it was trained on, and merge the windows' detections into one set per photo.

Vineyard photos (2048 x 1365, bunches of 30-400 px) shrunk to a CPU model's ~384 px input
lose the small bunches; cutting them into tiles of the training size keeps every pixel.
The tile size is in pixels of the image the model receives, i.e. after the test-time resize
(``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``): raise those to keep the photo's resolution.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.structures import Boxes, Instances
from torch import nn

from ..core.errors import GrapeInputError

logger = logging.getLogger(__name__)

Window = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)


def _starts(size: int, tile: int, stride: int) -> list[int]:
    """Window starts along one axis: every ``stride``, the last one snapped to the border."""
    if size <= tile:
        return [0]
    return list(range(0, size - tile, stride)) + [size - tile]


def tile_windows(height: int, width: int, tile: int, overlap: float) -> list[Window]:
    """Overlapping ``(x0, y0, x1, y1)`` windows of at most ``tile`` px covering the image.

    Neighbours overlap by ``overlap * tile`` px (rounded); the last window of a row or
    column is moved back to end at the border (so it may overlap more); an image that fits
    gets one window. Row-major order.
    """
    if tile <= 0:
        raise ValueError(f"tile size must be positive, got {tile}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"tile overlap is a fraction of the tile in [0, 1), got {overlap}")
    stride = max(1, int(round(tile * (1.0 - overlap))))
    return [
        (x0, y0, min(x0 + tile, width), min(y0 + tile, height))
        for y0 in _starts(height, tile, stride)
        for x0 in _starts(width, tile, stride)
    ]


@dataclass
class _Part:
    """One detection of one window: its mask cropped to the mask's box, in image pixels."""

    window: int
    x0: int
    y0: int
    mask: np.ndarray  # bool, h x w, placed at (x0, y0)
    score: float
    label: int

    @property
    def x1(self) -> int:
        return self.x0 + self.mask.shape[1]

    @property
    def y1(self) -> int:
        return self.y0 + self.mask.shape[0]

    def view(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """The mask over the rectangle (which must lie inside the part's box)."""
        return self.mask[y0 - self.y0:y1 - self.y0, x0 - self.x0:x1 - self.x0]

    def count_in(self, rect: Window) -> int:
        r = _intersect(rect, (self.x0, self.y0, self.x1, self.y1))
        return int(self.view(*r).sum()) if r else 0


def _intersect(a: Window, b: Window) -> Window | None:
    r = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    return r if r[0] < r[2] and r[1] < r[3] else None


def _shared_overlap(p: _Part, q: _Part, shared: Window) -> float:
    """Intersection over the smaller of two parts, counted only where both windows see."""
    smaller = min(p.count_in(shared), q.count_in(shared))
    if smaller == 0:
        return 0.0
    both = _intersect((p.x0, p.y0, p.x1, p.y1), (q.x0, q.y0, q.x1, q.y1))
    r = _intersect(both, shared) if both else None
    if r is None:
        return 0.0
    return float((p.view(*r) & q.view(*r)).sum()) / smaller


def _line(part: _Part, axis: int, coord: int, lo: int, hi: int) -> np.ndarray:
    """The part's pixels on column ``x = coord`` (axis 1) or row ``y = coord`` (axis 0),
    from ``lo`` to ``hi`` along that line."""
    out = np.zeros(hi - lo, bool)
    mask, c0, l0 = (part.mask, part.x0, part.y0) if axis == 1 else (part.mask.T, part.y0, part.x0)
    if not c0 <= coord < c0 + mask.shape[1]:
        return out
    seg = mask[:, coord - c0]
    a, b = max(lo, l0), min(hi, l0 + len(seg))
    if a < b:
        out[a - lo:b - lo] = seg[a - l0:b - l0]
    return out


def _border_contact(p: _Part, wp: Window, q: _Part, wq: Window) -> float:
    """For windows that only share a border line (overlap 0): the fraction of the smaller
    part's pixels on that line whose neighbour across the line (8-connected) is the other
    part's. 0 when the windows are not edge neighbours."""
    for axis, (lo_i, hi_i) in ((1, (0, 2)), (0, (1, 3))):  # vertical border, horizontal border
        if wp[hi_i] == wq[lo_i]:
            first, second, wf = p, q, wp
        elif wq[hi_i] == wp[lo_i]:
            first, second, wf = q, p, wq
        else:
            continue
        across = (1, 3) if axis == 1 else (0, 2)  # the other axis' extent of both windows
        lo, hi = max(wp[across[0]], wq[across[0]]), min(wp[across[1]], wq[across[1]])
        if lo >= hi:
            continue
        a = _line(first, axis, wf[hi_i] - 1, lo, hi)
        b = _line(second, axis, wf[hi_i], lo, hi)
        if not a.any() or not b.any():
            return 0.0
        near_b = b.copy()
        near_b[1:] |= b[:-1]
        near_b[:-1] |= b[1:]
        return min(1.0, float((a & near_b).sum()) / min(int(a.sum()), int(b.sum())))
    return 0.0


def _part_similarity(p: _Part, q: _Part, windows: list[Window]) -> float:
    wp, wq = windows[p.window], windows[q.window]
    shared = _intersect(wp, wq)
    if shared is not None:
        return _shared_overlap(p, q, shared)
    return _border_contact(p, wp, q, wq)


def merge_parts(parts: list[_Part], windows: list[Window], thresh: float) -> list[list[int]]:
    """Group the windows' detections into bunches (lists of indices into ``parts``).

    Two detections of different windows and the same class are the same bunch when
      * the windows overlap, and where both windows see, their masks' intersection over
        the smaller one is >= ``thresh`` (a duplicate, or the two sides of a cut bunch);
      * the windows only share a border line (overlap 0), and the fraction of the smaller
        part's pixels on that line touching the other part across it is >= ``thresh``.
    Pairs are joined by union-find, most similar first, never joining two groups that both
    hold a detection of the same window: the model separated those, the tiler keeps them
    apart. Detections of one window are never merged with each other (the model's NMS).
    """
    candidates = []
    if parts:
        # Pairs of other windows, same class, whose boxes meet or touch (1 px apart), found
        # vectorised: a photo can give thousands of low-score detections.
        box = np.array([(p.x0, p.y0, p.x1, p.y1) for p in parts])
        win = np.array([p.window for p in parts])
        label = np.array([p.label for p in parts])
        near = ((box[:, None, 0] <= box[None, :, 2]) & (box[None, :, 0] <= box[:, None, 2])
                & (box[:, None, 1] <= box[None, :, 3]) & (box[None, :, 1] <= box[:, None, 3])
                & (win[:, None] != win[None, :]) & (label[:, None] == label[None, :]))
        for i, j in zip(*np.nonzero(np.triu(near, k=1)), strict=True):
            sim = _part_similarity(parts[i], parts[j], windows)
            if sim >= thresh:
                candidates.append((sim, int(i), int(j)))
    parent = list(range(len(parts)))
    members = {i: {p.window} for i, p in enumerate(parts)}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for _, i, j in sorted(candidates, key=lambda c: -c[0]):
        ri, rj = root(i), root(j)
        if ri == rj or members[ri] & members[rj]:
            continue
        parent[rj] = ri
        members[ri] |= members.pop(rj)
    groups: dict[int, list[int]] = {}
    for i in range(len(parts)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def _union(parts: list[_Part]) -> tuple[int, int, np.ndarray]:
    """The union of parts' masks as (x0, y0, mask cropped to the union's box)."""
    x0, y0 = min(p.x0 for p in parts), min(p.y0 for p in parts)
    x1, y1 = max(p.x1 for p in parts), max(p.y1 for p in parts)
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    for p in parts:
        mask[p.y0 - y0:p.y1 - y0, p.x0 - x0:p.x1 - x0] |= p.mask
    return x0, y0, mask


def _window_parts(instances: Instances, window_index: int, window: Window) -> list[_Part]:
    """A window's detections as parts in image pixels: masks cropped to their own box (boxes
    stand in for masks of a box-only model). Empty masks are dropped."""
    wx0, wy0 = window[0], window[1]
    has_masks = instances.has("pred_masks")
    boxes = instances.pred_boxes.tensor.detach().cpu().numpy()
    scores = instances.scores.detach().cpu().tolist()
    labels = instances.pred_classes.detach().cpu().tolist()
    parts = []
    for k in range(len(instances)):
        if has_masks:
            m = instances.pred_masks[k]
            m = m if m.dtype == torch.bool else m >= 0.5
            rows, cols = torch.nonzero(m.any(dim=1)), torch.nonzero(m.any(dim=0))
            if len(rows) == 0:
                continue
            r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
            crop = m[r0:r1, c0:c1].cpu().numpy()
        else:
            c0, r0 = int(np.floor(boxes[k, 0])), int(np.floor(boxes[k, 1]))
            c1, r1 = int(np.ceil(boxes[k, 2])), int(np.ceil(boxes[k, 3]))
            if c1 <= c0 or r1 <= r0:
                continue
            crop = np.ones((r1 - r0, c1 - c0), bool)
        parts.append(_Part(window_index, wx0 + c0, wy0 + r0, crop, scores[k], labels[k]))
    return parts


def _scaled(x0: int, y0: int, mask: np.ndarray, sx: float, sy: float, out_h: int,
            out_w: int) -> tuple[int, int, np.ndarray]:
    """A cropped mask resized from model-input pixels to output pixels (as Detectron2's
    postprocessing rescales to the requested height x width)."""
    if sx == 1.0 and sy == 1.0:
        return x0, y0, mask
    ox0, oy0 = min(int(round(x0 * sx)), out_w - 1), min(int(round(y0 * sy)), out_h - 1)
    ox1 = min(max(int(round((x0 + mask.shape[1]) * sx)), ox0 + 1), out_w)
    oy1 = min(max(int(round((y0 + mask.shape[0]) * sy)), oy0 + 1), out_h)
    resized = cv2.resize(mask.astype(np.float32), (ox1 - ox0, oy1 - oy0),
                         interpolation=cv2.INTER_LINEAR)
    return ox0, oy0, resized >= 0.5


class TiledModel(nn.Module):
    """Wraps a Detectron2 instance model (GeneralizedRCNN) for inference on large images.

    An input image (already test-resized, CHW) larger than ``tile`` in either side is cut by
    :func:`tile_windows`; the inner model sees each window as an image of its own (height and
    width = the window's, so masks come back in window pixels), and the detections are
    merged by :func:`merge_parts`: a bunch cut by tile borders or seen twice in an overlap
    comes out once, its mask the union of its parts, its score the best part's, its box the
    box of the merged mask. Masks are held as crops of their own box, never as full-size
    arrays per window; only the final ``max_detections`` become full-size output masks.
    Output: ``{"instances": Instances}`` at the requested ``height`` x ``width``.

    Images that fit in one tile go straight to the inner model. In training mode the wrapper
    is transparent (the inner model's losses).
    """

    def __init__(self, model: nn.Module, tile: int, overlap: float = 0.25,
                 merge_thresh: float = 0.5, max_detections: int = 100,
                 windows_per_batch: int = 4) -> None:
        super().__init__()
        tile_windows(tile, tile, tile, overlap)  # validates tile and overlap
        self.model = model
        self.tile = int(tile)
        self.overlap = float(overlap)
        self.merge_thresh = float(merge_thresh)
        self.max_detections = int(max_detections)
        self.windows_per_batch = max(1, int(windows_per_batch))
        self.train(model.training)

    @staticmethod
    def enabled(cfg: CfgNode) -> bool:
        """Whether ``cfg`` asks for tiled inference (``TEST.TILE_SIZE`` > 0); a negative size
        (``--tile -1``) is one line, not whole-image inference in silence."""
        size = cfg.TEST.TILE_SIZE
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise GrapeInputError(f"TEST.TILE_SIZE (--tile) {size!r}: must be 0 (whole image) "
                                  "or a window size in pixels")
        return size > 0

    @classmethod
    def from_config(cls, cfg: CfgNode, model: nn.Module) -> TiledModel:
        """Wrap ``model`` with the ``TEST.TILE_*`` settings of ``cfg``."""
        logger.info("Tiled inference: %d px tiles, overlap %.2f, merge threshold %.2f",
                    cfg.TEST.TILE_SIZE, cfg.TEST.TILE_OVERLAP, cfg.TEST.TILE_MERGE_THRESH)
        try:
            return cls(model, cfg.TEST.TILE_SIZE, cfg.TEST.TILE_OVERLAP,
                       cfg.TEST.TILE_MERGE_THRESH, max_detections=cfg.TEST.DETECTIONS_PER_IMAGE)
        except ValueError as e:
            raise GrapeInputError(f"TEST.TILE_SIZE / TEST.TILE_OVERLAP: {e}") from None

    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        if self.training:
            return self.model(batched_inputs)
        results: list[dict | None] = [None] * len(batched_inputs)
        small = [i for i, x in enumerate(batched_inputs)
                 if max(x["image"].shape[-2:]) <= self.tile]
        if small:
            for i, out in zip(small, self.model([batched_inputs[i] for i in small]), strict=True):
                results[i] = out
        for i, x in enumerate(batched_inputs):
            if results[i] is None:
                results[i] = {"instances": self._tiled(x)}
        return results

    def _tiled(self, x: dict) -> Instances:
        image = x["image"]
        h, w = image.shape[-2:]
        out_h, out_w = int(x.get("height", h)), int(x.get("width", w))
        windows = tile_windows(h, w, self.tile, self.overlap)
        parts: list[_Part] = []
        has_masks = True
        device = image.device
        indexed = list(enumerate(windows))
        for start in range(0, len(indexed), self.windows_per_batch):
            chunk = indexed[start:start + self.windows_per_batch]
            inputs = [{"image": image[:, y0:y1, x0:x1], "height": y1 - y0, "width": x1 - x0}
                      for _, (x0, y0, x1, y1) in chunk]
            for (k, window), out in zip(chunk, self.model(inputs), strict=True):
                inst = out["instances"]
                has_masks = inst.has("pred_masks")
                device = inst.scores.device
                parts += _window_parts(inst, k, window)
        groups = merge_parts(parts, windows, self.merge_thresh)
        groups.sort(key=lambda g: -max(parts[i].score for i in g))
        groups = groups[:self.max_detections]
        return self._instances(parts, groups, (h, w), (out_h, out_w), has_masks, device)

    @staticmethod
    def _instances(parts: list[_Part], groups: list[list[int]], size: tuple[int, int],
                   out_size: tuple[int, int], has_masks: bool, device) -> Instances:
        """Merged groups as Detectron2 Instances at the output size."""
        (h, w), (out_h, out_w) = size, out_size
        sx, sy = out_w / w, out_h / h
        n = len(groups)
        masks = torch.zeros((n, out_h, out_w), dtype=torch.bool) if has_masks else None
        boxes = torch.zeros((n, 4), dtype=torch.float32)
        for k, group in enumerate(groups):
            x0, y0, mask = _union([parts[i] for i in group])
            boxes[k] = torch.tensor([x0 * sx, y0 * sy, (x0 + mask.shape[1]) * sx,
                                     (y0 + mask.shape[0]) * sy])
            if masks is None:
                continue
            ox0, oy0, m = _scaled(x0, y0, mask, sx, sy, out_h, out_w)
            masks[k, oy0:oy0 + m.shape[0], ox0:ox0 + m.shape[1]] = torch.from_numpy(m)
            rows, cols = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
            if len(rows):  # the box of the output mask, as BitMasks.get_bounding_boxes
                boxes[k] = torch.tensor([ox0 + cols[0], oy0 + rows[0], ox0 + cols[-1] + 1,
                                         oy0 + rows[-1] + 1], dtype=torch.float32)
        result = Instances((out_h, out_w))
        result.pred_boxes = Boxes(boxes)
        result.pred_boxes.clip((out_h, out_w))
        result.scores = torch.tensor([max(parts[i].score for i in g) for g in groups],
                                     dtype=torch.float32)
        result.pred_classes = torch.tensor([parts[g[0]].label for g in groups],
                                           dtype=torch.int64)
        if masks is not None:
            result.pred_masks = masks
        return result.to(device)
