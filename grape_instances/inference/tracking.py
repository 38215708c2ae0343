"""Following bunches across video frames: one track per physical bunch (issue 16).

The linking itself is a maintained library's, not ours: `norfair
<https://github.com/tryolabs/norfair>`_ (Kalman-filtered points, any distance function) is
the default, `supervision <https://github.com/roboflow/supervision>`_'s ByteTrack (boxes
only) the alternative; README "Counting bunches along a row" has the comparison on rendered
validation videos that chose the default and its settings (``TRACKING.*`` keys of
:mod:`grape_instances.config`).

What this module adds around the library:

* :class:`FrameDetections`: one frame's boxes, scores and masks (as box-sized crops, so a
  frame costs what its bunches cost, not what its pixels cost);
* mask IoU as norfair's distance, *motion compensated*: the track's last mask is moved by
  the Kalman filter's predicted displacement before it is compared, since the camera moves
  a bunch's width in a few frames and unshifted masks of fast bunches would not overlap;
* :class:`TrackBook`: what a count needs from each track (first / last frame, frames seen,
  the frame it passed the counting line, its best mask), kept per track, never per frame,
  so memory is flat in the length of the video;
* :func:`counted`: the rule that turns tracks into bunches (``TRACKING.MIN_FRAMES``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..core.errors import GrapeInputError

BACKENDS = ("norfair", "bytetrack")
MATCHES = ("mask", "box")


@dataclass
class FrameDetections:
    """Detections of one frame. ``crops[i]`` is detection i's mask inside its integer box
    ``(x0, y0)`` .. ``(x0 + w, y0 + h)`` (``origins[i] = (x0, y0)``); None without masks."""

    boxes: np.ndarray  # N x 4 float32, x0 y0 x1 y1
    scores: np.ndarray  # N float32
    crops: list[np.ndarray] | None = None
    origins: np.ndarray | None = None  # N x 2 int

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, np.float32).reshape(-1)
        if len(self.scores) != len(self.boxes):
            raise ValueError("one score per box")

    def __len__(self) -> int:
        return len(self.boxes)

    def above(self, score_thresh: float) -> FrameDetections:
        """The detections scoring at least ``score_thresh``."""
        keep = np.flatnonzero(self.scores >= score_thresh)
        if len(keep) == len(self):
            return self
        return FrameDetections(self.boxes[keep], self.scores[keep],
                               None if self.crops is None else [self.crops[i] for i in keep],
                               None if self.origins is None else self.origins[keep])

    @classmethod
    def from_masks(cls, masks: Sequence[np.ndarray] | np.ndarray, scores: Sequence[float],
                   boxes: np.ndarray | None = None) -> FrameDetections:
        """From full-frame bool masks; boxes from the masks unless given (empty masks
        dropped)."""
        crops, origins, out_boxes, out_scores = [], [], [], []
        for i, m in enumerate(masks):
            ys, xs = np.nonzero(m)
            if ys.size == 0:
                continue
            y0, x0, y1, x1 = ys.min(), xs.min(), ys.max() + 1, xs.max() + 1
            crops.append(np.ascontiguousarray(m[y0:y1, x0:x1], dtype=bool))
            origins.append((x0, y0))
            out_boxes.append(boxes[i] if boxes is not None else (x0, y0, x1, y1))
            out_scores.append(scores[i])
        return cls(np.array(out_boxes, np.float32).reshape(-1, 4),
                   np.array(out_scores, np.float32), crops,
                   np.array(origins, np.int64).reshape(-1, 2))

    def mask(self, i: int, height: int, width: int) -> np.ndarray:
        """Detection i's full-frame bool mask (its box when there are no masks)."""
        out = np.zeros((height, width), bool)
        if self.crops is None:
            x0, y0, x1, y1 = np.round(self.boxes[i]).astype(int)
            out[max(y0, 0):y1, max(x0, 0):x1] = True
            return out
        x0, y0 = self.origins[i]
        c = self.crops[i]
        out[y0:y0 + c.shape[0], x0:x0 + c.shape[1]] = c[:height - y0, :width - x0]
        return out

    def area(self, i: int) -> int:
        if self.crops is None:
            x0, y0, x1, y1 = self.boxes[i]
            return int(max(x1 - x0, 0) * max(y1 - y0, 0))
        return int(self.crops[i].sum())


def shifted_mask_iou(a: np.ndarray, a_origin: Sequence[float], b: np.ndarray,
                     b_origin: Sequence[float]) -> float:
    """IoU of two mask crops placed at (rounded) integer origins ``(x0, y0)``."""
    ax, ay = (int(round(v)) for v in a_origin)
    bx, by = (int(round(v)) for v in b_origin)
    x0, y0 = max(ax, bx), max(ay, by)
    x1, y1 = min(ax + a.shape[1], bx + b.shape[1]), min(ay + a.shape[0], by + b.shape[0])
    inter = 0
    if x1 > x0 and y1 > y0:
        inter = int(np.count_nonzero(a[y0 - ay:y1 - ay, x0 - ax:x1 - ax]
                                     & b[y0 - by:y1 - by, x0 - bx:x1 - bx]))
    union = int(a.sum()) + int(b.sum()) - inter
    return inter / union if union else 0.0


def _mask_distance(detection, tracked) -> float:
    """norfair distance: 1 - IoU of the detection's mask and the track's last mask moved by
    the Kalman-predicted displacement of its box (motion compensation)."""
    last = tracked.last_detection
    shift = tracked.estimate.mean(axis=0) - last.points.mean(axis=0)
    crop, origin = last.data
    return 1.0 - shifted_mask_iou(detection.data[0], detection.data[1], crop,
                                  np.asarray(origin) + shift)


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boxes given as 2 x 2 corner points."""
    (ax0, ay0), (ax1, ay1) = a
    (bx0, by0), (bx1, by1) = b
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return float(inter / union) if union > 0 else 0.0


def _reid_distance(new, old) -> float:
    """norfair re-identification distance between a new track and a lost one: the distance of
    their box centres, where the filter puts them now (in row coordinates when the camera
    motion is estimated), over the larger side of the two boxes (a bunch's size)."""
    absolute = new.abs_to_rel is not None
    a = new.get_estimate(absolute=absolute)
    b = old.get_estimate(absolute=absolute)
    size = max(float(np.ptp(a, axis=0).max()), float(np.ptp(b, axis=0).max()), 1.0)
    return float(np.linalg.norm(a.mean(axis=0) - b.mean(axis=0))) / size


class NorfairBackend:
    """norfair's tracker on box corners, matched by box IoU or motion-compensated mask IoU.

    :meth:`update` returns one id per detection: a track id (>= 0), -1 (no track), or, with
    re-identification on, a *pending* key (<= -2, :func:`pending_key`) for a track norfair
    is still initializing; :attr:`resolved` then says, after each later update, which track
    (or other pending key) each pending key became, or None when it was dropped unconfirmed
    (:meth:`TrackBook.resolve` applies it).
    """

    def __init__(self, match: str, max_gap: int, min_iou: float,
                 camera_motion: bool = True, static: bool = False, reid_gap: int = 0,
                 reid_distance: float = 0.5) -> None:
        from norfair import Tracker  # noqa: PLC0415  (a pinned dependency; imported on use)
        from norfair.camera_motion import (  # noqa: PLC0415
            MotionEstimator,
            TranslationTransformationGetter,
        )
        from norfair.filter import NoFilterFactory, OptimizedKalmanFilterFactory  # noqa: PLC0415

        self.match = match
        #: After each update: what became of tracks reported as pending before (pending
        #: key -> track id, another pending key, or None when dropped unconfirmed).
        self.resolved: dict[int, int | None] = {}
        self._pending: dict = {}  # norfair initializing id -> its TrackedObject
        # The camera pans along the row: norfair estimates the frame-to-frame translation
        # from optical flow outside the detections, and tracks in row coordinates.
        self.motion = MotionEstimator(
            max_points=200, min_distance=10,
            transformations_getter=TranslationTransformationGetter()) if camera_motion else None
        distance = _mask_distance if match == "mask" else "iou"
        # A track's hit counter gains 2 per matched frame and loses 1 per frame, up to
        # max_gap (hit_counter_max): a track seen in k frames in a row lives on about
        # min(k, max_gap) frames without a detection, and a bunch back where the track is
        # (mask / box IoU) within that gap keeps its id. initialization_delay 0: a track is
        # reported from its first detection (what counts is decided later, by MIN_FRAMES).
        reid = {}
        if reid_gap > 0:
            # norfair's re-identification: a track unmatched in this frame, or lost for up
            # to reid_gap more frames, takes over a new track whose box centre lies within
            # reid_distance bunch sizes of it (_reid_distance). norfair only offers a track
            # that is still initializing for that, so a track is initialized on its second
            # detection (its first one is reported with no id).
            reid = dict(initialization_delay=1, reid_distance_function=_reid_distance,
                        reid_distance_threshold=float(reid_distance),
                        reid_hit_counter_max=int(reid_gap))
        root = logging.getLogger()  # norfair logs a speed hint for any non-built-in distance
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            self.tracker = Tracker(distance_function=distance,
                                   distance_threshold=1.0 - min_iou,
                                   hit_counter_max=max(int(max_gap), 1),
                                   past_detections_length=0,
                                   filter_factory=NoFilterFactory() if static
                                   else OptimizedKalmanFilterFactory(),
                                   **{"initialization_delay": 0, **reid})
        finally:
            root.setLevel(level)

    def update(self, det: FrameDetections, frame: np.ndarray | None = None) -> np.ndarray:
        from norfair import Detection  # noqa: PLC0415

        if self.match == "mask" and det.crops is None:
            raise GrapeInputError("TRACKING.MATCH mask needs instance masks; the detections "
                                  "have boxes only")
        objs = []
        for i in range(len(det)):
            data = (det.crops[i], det.origins[i]) if self.match == "mask" else None
            d = Detection(points=det.boxes[i].reshape(2, 2).astype(np.float64),
                          scores=np.full(2, det.scores[i]), data=data)
            d.index = i
            objs.append(d)
        coord = None
        if self.motion is not None and frame is not None:
            outside = np.ones(frame.shape[:2], np.uint8)
            for x0, y0, x1, y1 in np.round(det.boxes).astype(int):
                outside[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = 0
            coord = self.motion.update(frame, outside)
        self.tracker.update(detections=objs, coord_transformations=coord)
        live = self.tracker.tracked_objects
        ids = np.full(len(det), -1, np.int64)
        for t in live:
            last = t.last_detection
            if not any(last is d for d in objs):
                continue  # not matched in this frame
            # norfair 2.3.0 starts a track's re-identification countdown when it is lost
            # and does not stop it when the track is matched again, so a track lost once
            # would be deleted reid_gap frames later however well it is seen
            # (tryolabs/norfair#325, fix unreleased): a matched track is not lost.
            t.reid_hit_counter = None
            if t.id is not None:
                ids[last.index] = t.id
            else:  # still initializing (only with re-identification on)
                ids[last.index] = pending_key(t.initializing_id)
                self._pending[t.initializing_id] = t
        self.resolved = self._resolve(live)
        return ids

    def _resolve(self, live: list) -> dict[int, int | None]:
        """What became of the initializing tracks reported earlier (:attr:`resolved`)."""
        if not self._pending:
            return {}
        alive = {id(t) for t in live}
        # norfair's merge hands the new track's last detection to the old track.
        holder = {id(t.last_detection): t for t in live}
        resolved: dict[int, int | None] = {}
        for init_id, t in list(self._pending.items()):
            if id(t) in alive:
                if t.id is None:
                    continue  # still initializing
                target = t.id
            else:  # merged into an older track (re-identified) or dropped unconfirmed
                old = holder.get(id(t.last_detection))
                if old is None or old is t:
                    target = None
                elif old.id is not None:
                    target = old.id
                else:  # merged into a track that is still initializing itself
                    target = pending_key(old.initializing_id)
                    self._pending[old.initializing_id] = old
            resolved[pending_key(init_id)] = target
            del self._pending[init_id]
        return resolved


def pending_key(initializing_id: int) -> int:
    """The id reported for a detection of a track norfair has not confirmed yet (<= -2)."""
    return -2 - int(initializing_id)


class ByteTrackBackend:
    """supervision's ByteTrack (box IoU only; its Kalman filter runs in box space)."""

    def __init__(self, max_gap: int, min_iou: float, score_thresh: float) -> None:
        import supervision as sv  # noqa: PLC0415  (optional: the comparison's alternative)

        self.sv = sv
        self.resolved: dict[int, int | None] = {}  # nothing is ever pending here
        # frame_rate=30 makes lost_track_buffer a number of frames (sv scales it by rate/30).
        self.tracker = sv.ByteTrack(track_activation_threshold=score_thresh,
                                    lost_track_buffer=max(int(max_gap), 1),
                                    minimum_matching_threshold=1.0 - min_iou, frame_rate=30,
                                    minimum_consecutive_frames=1)

    def update(self, det: FrameDetections, frame: np.ndarray | None = None) -> np.ndarray:
        d = self.sv.Detections(xyxy=det.boxes.astype(np.float64).reshape(-1, 4),
                               confidence=det.scores.astype(np.float64),
                               class_id=np.zeros(len(det), int),
                               data={"index": np.arange(len(det))})
        out = self.tracker.update_with_detections(d)
        ids = np.full(len(det), -1, np.int64)
        if len(out):
            ids[out.data["index"]] = out.tracker_id
        return ids


@dataclass(frozen=True)
class TrackingSettings:
    """The ``TRACKING.*`` config keys (see grape_instances/config.py)."""

    backend: str = "norfair"
    match: str = "mask"
    max_gap: int = 20
    min_iou: float = 0.1
    min_frames: int = 8
    score_thresh: float = 0.5
    camera_motion: bool = True
    static: bool = True
    reid_gap: int = 0
    reid_distance: float = 0.5

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise GrapeInputError(f"TRACKING.BACKEND {self.backend!r}: one of {BACKENDS}")
        if self.match not in MATCHES:
            raise GrapeInputError(f"TRACKING.MATCH {self.match!r}: one of {MATCHES}")
        if self.backend == "bytetrack" and self.match == "mask":
            raise GrapeInputError("TRACKING.MATCH mask needs TRACKING.BACKEND norfair "
                                  "(ByteTrack matches boxes only)")
        if self.max_gap < 1 or self.min_frames < 1:
            raise GrapeInputError(f"TRACKING.MAX_GAP {self.max_gap} and TRACKING.MIN_FRAMES "
                                  f"{self.min_frames} must be at least 1")
        if not 0 < self.min_iou < 1:
            raise GrapeInputError(f"TRACKING.MIN_IOU {self.min_iou} must be in (0, 1)")
        if self.reid_gap < 0 or not self.reid_distance > 0:
            raise GrapeInputError(f"TRACKING.REID_GAP {self.reid_gap} must be at least 0 and "
                                  f"TRACKING.REID_DISTANCE {self.reid_distance} positive")
        if self.reid_gap > 0 and self.backend != "norfair":
            raise GrapeInputError("TRACKING.REID_GAP needs TRACKING.BACKEND norfair (set it "
                                  "to 0 for ByteTrack)")
        if self.reid_gap > 0 and self.max_gap < 2:
            raise GrapeInputError("TRACKING.REID_GAP needs TRACKING.MAX_GAP of at least 2")

    @classmethod
    def from_config(cls, cfg) -> TrackingSettings:
        t = cfg.TRACKING
        return cls(backend=t.BACKEND, match=t.MATCH, max_gap=int(t.MAX_GAP),
                   min_iou=float(t.MIN_IOU), min_frames=int(t.MIN_FRAMES),
                   score_thresh=float(t.SCORE_THRESH), camera_motion=bool(t.CAMERA_MOTION),
                   static=bool(t.STATIC), reid_gap=int(t.REID_GAP),
                   reid_distance=float(t.REID_DISTANCE))

    def build(self):
        if self.backend == "bytetrack":
            return ByteTrackBackend(self.max_gap, self.min_iou, self.score_thresh)
        return NorfairBackend(self.match, self.max_gap, self.min_iou, self.camera_motion,
                              self.static and self.camera_motion, self.reid_gap,
                              self.reid_distance)


@dataclass
class Track:
    """What one track has shown so far (constant size per track)."""

    id: int
    first_frame: int
    last_frame: int
    frames_seen: int = 0
    best_score: float = 0.0
    best_frame: int = -1
    best_area: int = 0
    best_crop: np.ndarray | None = field(default=None, repr=False)  # bool mask crop
    best_image: np.ndarray | None = field(default=None, repr=False)  # BGR crop under it
    best_origin: tuple[int, int] = (0, 0)
    best_metric: dict | None = None  # metric size of the best mask (depth / scale)
    line_frame: int = -1  # frame where the box centre was nearest the counting line
    line_distance: float = float("inf")
    sides: int = 0  # bit 1: seen left of the line, bit 2: right of it


class TrackBook:
    """Per-track summaries, updated frame by frame.

    ``line_x`` (pixels) is the vertical counting line: each track remembers the frame where
    its box centre came nearest to it (the frame that assigns it to a segment) and on which
    sides of it it was seen (a track *crossed* when it was seen on both).
    """

    def __init__(self, line_x: float) -> None:
        self.line_x = float(line_x)
        self.tracks: dict[int, Track] = {}
        self.pending: dict[int, Track] = {}  # tracks not confirmed yet, by pending key (<= -2)

    def add(self, frame: int, det: FrameDetections, ids: np.ndarray,
            image: np.ndarray | None = None, metric=None) -> None:
        """Record frame ``frame``'s tracked detections (``ids[i]`` -1: untracked, <= -2: a
        pending track, kept aside until :meth:`resolve` says what it became).
        ``metric(mask_crop, origin) -> dict | None`` sizes a new best mask."""
        for i, tid in enumerate(ids.tolist()):
            if tid == -1:
                continue
            store = self.tracks if tid >= 0 else self.pending
            t = store.get(tid)
            if t is None:
                t = store[tid] = Track(tid, frame, frame)
            t.last_frame = frame
            t.frames_seen += 1
            x0, y0, x1, y1 = det.boxes[i]
            cx = (x0 + x1) / 2
            t.sides |= 1 if cx < self.line_x else 2
            if abs(cx - self.line_x) < t.line_distance:
                t.line_distance, t.line_frame = abs(cx - self.line_x), frame
            # The best mask: the largest (least hidden) one among confident detections.
            area = det.area(i)
            if area > t.best_area:
                t.best_area, t.best_score, t.best_frame = area, float(det.scores[i]), frame
                if det.crops is not None:
                    ox, oy = (int(v) for v in det.origins[i])
                    t.best_crop, t.best_origin = det.crops[i], (ox, oy)
                    if image is not None:
                        h, w = det.crops[i].shape
                        t.best_image = image[oy:oy + h, ox:ox + w].copy()
                    if metric is not None:
                        t.best_metric = metric(det.crops[i], (ox, oy))


    def resolve(self, resolved: dict[int, int | None]) -> None:
        """Apply a backend's :attr:`~NorfairBackend.resolved`: each pending track joins the
        track (or pending track) it became, or is forgotten (None: never confirmed)."""
        for key, target in resolved.items():
            src = self.pending.pop(key, None)
            if src is None or target is None:
                continue
            store = self.tracks if target >= 0 else self.pending
            dst = store.get(target)
            if dst is None:
                src.id = target
                store[target] = src
            else:
                _merge_tracks(dst, src)


def _merge_tracks(dst: Track, src: Track) -> None:
    """``dst`` becomes the summary of both tracks' frames."""
    dst.first_frame = min(dst.first_frame, src.first_frame)
    dst.last_frame = max(dst.last_frame, src.last_frame)
    dst.frames_seen += src.frames_seen
    if src.best_area > dst.best_area:
        for name in ("best_area", "best_score", "best_frame", "best_crop", "best_image",
                     "best_origin", "best_metric"):
            setattr(dst, name, getattr(src, name))
    if src.line_distance < dst.line_distance:
        dst.line_distance, dst.line_frame = src.line_distance, src.line_frame
    dst.sides |= src.sides


def counted(tracks: dict[int, Track] | Sequence[Track], min_frames: int,
            require_crossing: bool = False) -> list[Track]:
    """The tracks that count as bunches: seen in at least ``min_frames`` (processed) frames
    and, with a counting line, seen on both sides of it."""
    values = tracks.values() if isinstance(tracks, dict) else tracks
    return [t for t in values if t.frames_seen >= min_frames
            and (not require_crossing or t.sides == 3)]


@dataclass(frozen=True)
class Segment:
    name: str
    first_frame: int
    last_frame: int


def segment_of(frame: int, segments: Sequence[Segment]) -> str | None:
    """Name of the segment holding ``frame`` (None when none does)."""
    for s in segments:
        if s.first_frame <= frame <= s.last_frame:
            return s.name
    return None


def count_by_segment(tracks: Sequence[Track], segments: Sequence[Segment]) -> dict[str, int]:
    """Bunches per segment, in the segments' order of first appearance; a track goes to
    the segment of the frame where it passed nearest the counting line. Tracks outside every
    segment count under ``unassigned`` (only present when there are some)."""
    counts = {s.name: 0 for s in segments}
    for t in tracks:
        name = segment_of(t.line_frame, segments) or "unassigned"
        counts[name] = counts.get(name, 0) + 1
    return counts
