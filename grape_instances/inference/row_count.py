"""Count the bunches of a row video: the loop behind ``tools/count_row.py`` (issue 16).

Frames are read one at a time (every ``frame_step``-th is processed), the instance model
finds the bunches, :mod:`.tracking` links them into tracks, and what is written is only
ever one frame plus one summary per track: memory stays flat however long the video.

Outputs, in ``--output`` (a folder replaced whole when everything succeeded, so a failed
run leaves no partial output; :func:`grape_instances.fileio.replacing_folder`):

* ``tracks.csv``: one row per track (counted or not, column ``counted``): id, first / last
  frame, frames seen, the segment, the best mask's measurements (the largest mask of the
  track, :func:`grape_instances.measure.geometry.shape_features`) and, with ``--mm-per-px``
  or a depth folder and camera, its metric size;
* ``counts.csv``: ``segment,bunches``, one row per segment, then ``total,N``;
* ``annotated.mp4``: the processed frames with each tracked bunch's mask and id;
* ``results.json``: COCO results, one image per processed frame (``image_id`` = frame index
  + 1), each detection with its ``track_id`` (-1 when untracked), RLE mask and score;
* ``mot.txt``: the tracks in MOTChallenge format (frame from 1), to re-score;
* ``summary.json``: counts, frames, and where the time went (model, tracker, writing).

A track is assigned to a segment by the frame where its box centre passed nearest the
counting line (a vertical line, by default the middle of the frame); with an explicit
``line`` only tracks seen on both sides of it count (the Ultralytics convention). Segments
are frame ranges from a CSV (``segment,first_frame,last_frame``, frames from 0; a name may
have several rows), or the whole video is one segment, ``all``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_util
from tqdm import tqdm

from ..core.depth import read_depth
from ..core.errors import GrapeInputError
from ..core.fileio import replacing_folder
from ..core.video import VideoWriter
from ..measure.depth import Camera, metric_features
from ..measure.geometry import shape_features
from .tracking import (
    FrameDetections,
    Segment,
    Track,
    TrackBook,
    TrackingSettings,
    count_by_segment,
    counted,
    segment_of,
)

logger = logging.getLogger(__name__)

Detector = Callable[[np.ndarray, int], FrameDetections]

TRACK_FIELDS = ["track_id", "counted", "segment", "first_frame", "last_frame", "frames_seen",
                "best_frame", "best_score", "area_px", "length_px", "width_px",
                "perimeter_px", "compactness", "pieces", "hsv_h_deg", "hsv_s", "hsv_v",
                "length_mm", "width_mm", "area_cm2", "median_depth_mm", "volume_cm3"]


# --------------------------------------------------------------------------- inputs


def open_video(path: str | os.PathLike) -> tuple[cv2.VideoCapture, float, int]:
    """``(capture, fps, frame count)``; a missing, unreadable or empty video is one line."""
    path = Path(path)
    if not path.is_file():
        raise GrapeInputError(f"{path}: no such video file")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise GrapeInputError(f"{path}: cannot open this video (not a video, or no codec "
                              "for it in OpenCV's FFmpeg)")
    ok, _ = capture.read()
    if not ok:
        capture.release()
        raise GrapeInputError(f"{path}: no frame can be read (empty video, or no decoder "
                              "for its codec)")
    capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if fps and np.isfinite(fps) and fps > 0 else 25.0
    return capture, float(fps), max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)


def read_segments(path: str | os.PathLike, frames: int | None = None) -> list[Segment]:
    """Segments from a CSV ``segment,first_frame,last_frame`` (frames from 0, inclusive);
    ranges must not overlap and, when ``frames`` is known, lie inside the video."""
    path = Path(path)
    if not path.is_file():
        raise GrapeInputError(f"{path}: segment file not found")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise GrapeInputError(f"{path}: not a CSV text file ({e})") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows or [c.strip() for c in rows[0]] != ["segment", "first_frame", "last_frame"]:
        raise GrapeInputError(f"{path}: the first line must be segment,first_frame,last_frame")
    segments = []
    for n, r in enumerate(rows[1:], start=2):
        if len(r) != 3 or not r[0].strip():
            raise GrapeInputError(f"{path}: line {n} must be NAME,FIRST,LAST")
        try:
            first, last = int(r[1]), int(r[2])
        except ValueError:
            raise GrapeInputError(f"{path}: line {n}: frames must be whole numbers") from None
        if not 0 <= first <= last:
            raise GrapeInputError(f"{path}: line {n}: need 0 <= first_frame <= last_frame, "
                                  f"got {first}, {last}")
        if frames is not None and last >= frames:
            raise GrapeInputError(f"{path}: line {n}: last_frame {last} is beyond the video "
                                  f"({frames} frames, numbered 0..{frames - 1})")
        segments.append(Segment(r[0].strip(), first, last))
    if not segments:
        raise GrapeInputError(f"{path}: no segment rows")
    spans = sorted(segments, key=lambda s: s.first_frame)
    for a, b in zip(spans, spans[1:], strict=False):
        if b.first_frame <= a.last_frame:
            raise GrapeInputError(f"{path}: segments {a.name} and {b.name} overlap (frames "
                                  f"{b.first_frame}..{min(a.last_frame, b.last_frame)})")
    return segments


def model_detector(predictor, score_thresh: float) -> Detector:
    """A :class:`~grape_instances.predict.Predictor` as a detector of bunches with masks."""

    def detect(frame: np.ndarray, index: int) -> FrameDetections:
        out = predictor(frame)
        if "instances" not in out:
            raise GrapeInputError("count_row needs an instance model (Mask R-CNN); this "
                                  "config predicts a semantic map")
        inst = out["instances"].to("cpu")
        keep = inst.scores >= score_thresh
        inst = inst[keep]
        if not inst.has("pred_masks"):
            return FrameDetections(inst.pred_boxes.tensor.numpy(), inst.scores.numpy())
        return FrameDetections.from_masks(inst.pred_masks.numpy(), inst.scores.numpy(),
                                          inst.pred_boxes.tensor.numpy())

    return detect


# --------------------------------------------------------------------------- drawing


def _color(track_id: int) -> tuple[int, int, int]:
    hue = (track_id * 47) % 180
    bgr = cv2.cvtColor(np.uint8([[[hue, 220, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return tuple(int(v) for v in bgr)


def draw_tracks(frame: np.ndarray, det: FrameDetections, ids: np.ndarray, line_x: float,
                text: str) -> np.ndarray:
    """Masks filled in each track's colour with its id; untracked detections in grey."""
    out = frame.copy()
    h, w = frame.shape[:2]
    for i, tid in enumerate(ids.tolist()):
        color = _color(tid) if tid >= 0 else (160, 160, 160)
        m = det.mask(i, h, w)
        out[m] = (0.5 * out[m] + 0.5 * np.array(color)).astype(np.uint8)
        x0, y0 = int(det.boxes[i][0]), int(det.boxes[i][1])
        if tid >= 0:
            cv2.putText(out, str(tid), (x0, max(y0 - 2, 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                        color, 1, cv2.LINE_AA)
    cv2.line(out, (int(line_x), 0), (int(line_x), h - 1), (255, 255, 255), 1)
    cv2.putText(out, text, (3, h - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out


# --------------------------------------------------------------------------- the loop


class _ResultsWriter:
    """COCO results written one frame at a time (a JSON list, never whole in memory)."""

    def __init__(self, path: Path) -> None:
        self.f = open(path, "w")
        self.f.write("[")
        self.first = True

    def add(self, frame: int, det: FrameDetections, ids: np.ndarray, h: int, w: int) -> None:
        for i, tid in enumerate(ids.tolist()):
            rle = mask_util.encode(np.asfortranarray(det.mask(i, h, w).astype(np.uint8)))
            x0, y0, x1, y1 = (float(v) for v in det.boxes[i])
            rec = {"image_id": frame + 1, "frame_index": frame, "category_id": 1,
                   "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                   "score": round(float(det.scores[i]), 4), "track_id": int(tid),
                   "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}}
            self.f.write(("" if self.first else ",\n") + json.dumps(rec))
            self.first = False

    def close(self) -> None:
        self.f.write("]\n")
        self.f.close()


def _metric_sizer(depth_dir: Path | None, camera: Camera | None, mm_per_px: float | None,
                  width: int):
    """``(frame) -> (crop, origin) -> dict``: the metric size of a mask crop, from a depth
    image of that frame and the camera, or from a fixed scale; None without either."""
    if depth_dir is None and mm_per_px is None:
        return None
    if depth_dir is not None and camera is None:
        raise GrapeInputError("--depth-video needs the camera (--camera JSON or --fov-deg)")

    def for_frame(frame: int):
        loaded: list = []  # the frame's depth image, read on the first new best mask only

        def frame_depth() -> np.ndarray | None:
            if not loaded:
                path = depth_dir / f"{frame:06d}.png" if depth_dir is not None else None
                loaded.append(read_depth(path) if path is not None and path.is_file()
                              else None)
            return loaded[0]

        def size(crop: np.ndarray, origin: tuple[int, int]) -> dict | None:
            depth = frame_depth()
            if depth is not None:
                fx, fy = camera.focal(width)
                ox, oy = origin
                sub = depth[oy:oy + crop.shape[0], ox:ox + crop.shape[1]]
                m = metric_features(crop[:sub.shape[0], :sub.shape[1]], sub, fx, fy)
                if m is not None:
                    m["length_mm"], m["width_mm"] = m["length_cm"] * 10, m["width_cm"] * 10
                    return m
            if mm_per_px is not None:
                f = shape_features(crop)
                return {"length_mm": f["length_px"] * mm_per_px,
                        "width_mm": f["width_px"] * mm_per_px,
                        "area_cm2": f["area_px"] * mm_per_px ** 2 / 100.0}
            return None

        return size

    return for_frame


def _track_row(t: Track, is_counted: bool, segment: str) -> dict:
    row: dict = {"track_id": t.id, "counted": int(is_counted), "segment": segment,
                 "first_frame": t.first_frame, "last_frame": t.last_frame,
                 "frames_seen": t.frames_seen, "best_frame": t.best_frame,
                 "best_score": round(t.best_score, 4)}
    if t.best_crop is not None:
        f = shape_features(t.best_crop, t.best_image)
        row.update({k: (round(v, 3) if isinstance(v, float) else v) for k, v in f.items()
                    if k in TRACK_FIELDS})
    for k, v in (t.best_metric or {}).items():
        if k in TRACK_FIELDS:
            row[k] = round(float(v), 2)
    return row


class _MotLines:
    """mot.txt lines: written at once for a track, held back for a pending track (norfair
    still initializing it, re-identification on) until it is confirmed, under the id it
    got, or dropped when it never was. Lines of a confirmed pending track come after their
    frame's other lines (MOTChallenge readers index by frame)."""

    def __init__(self, f) -> None:
        self.f = f
        self.held: dict[int, list[str]] = {}

    def add(self, tid: int, line: str) -> None:
        if tid >= 0:
            self.f.write(line.format(tid))
        else:
            self.held.setdefault(tid, []).append(line)

    def resolve(self, resolved: dict[int, int | None]) -> None:
        for key, target in resolved.items():
            lines = self.held.pop(key, [])
            if target is None:
                continue
            for line in lines:
                self.add(target, line)


def count_video(
    detector: Detector,
    video: str | os.PathLike,
    output: str | os.PathLike,
    settings: TrackingSettings,
    segments_csv: str | os.PathLike | None = None,
    frame_step: int = 1,
    line: float | None = None,
    depth_dir: str | os.PathLike | None = None,
    camera: Camera | None = None,
    mm_per_px: float | None = None,
    write_video: bool = True,
    progress: bool = True,
) -> dict:
    """Count the bunches of ``video`` into the folder ``output`` (module docstring).

    ``line``: the counting line's x as a fraction of the frame width (only tracks crossing
    it count); None: the middle of the frame, assignment only. Returns the summary.
    """
    if frame_step < 1:
        raise GrapeInputError(f"--frame-step {frame_step}: must be at least 1")
    if line is not None and not 0.0 < line < 1.0:
        raise GrapeInputError(f"--line {line}: a fraction of the frame width, in (0, 1)")
    if mm_per_px is not None and not mm_per_px > 0:
        raise GrapeInputError(f"--mm-per-px {mm_per_px}: must be positive")
    video, output = Path(video), Path(output)
    if output.resolve() == video.resolve() or video.resolve().is_relative_to(output.resolve()):
        raise GrapeInputError(f"{output}: --output would replace the input video")
    if depth_dir is not None and not Path(depth_dir).is_dir():
        raise GrapeInputError(f"{depth_dir}: --depth-video folder not found")
    capture, fps, frames_hint = open_video(video)
    segments = read_segments(segments_csv, frames_hint or None) if segments_csv else None
    tracker = settings.build()
    timing = {"read_s": 0.0, "model_s": 0.0, "tracker_s": 0.0, "write_s": 0.0}
    book: TrackBook | None = None
    sizer = None
    index = processed = 0
    start = time.perf_counter()
    try:
        with replacing_folder(output) as tmp:
            results = _ResultsWriter(tmp / "results.json")
            mot = open(tmp / "mot.txt", "w")
            mot_lines = _MotLines(mot)
            writer = None
            try:
                bar = tqdm(total=frames_hint or None, desc="count row", unit="frame",
                           disable=not progress)
                while True:
                    t0 = time.perf_counter()
                    ok, frame = capture.read()
                    timing["read_s"] += time.perf_counter() - t0
                    if not ok:
                        break
                    if index % frame_step:
                        index += 1
                        bar.update()
                        continue
                    h, w = frame.shape[:2]
                    if book is None:
                        line_x = (line if line is not None else 0.5) * w
                        book = TrackBook(line_x)
                        sizer = _metric_sizer(Path(depth_dir) if depth_dir else None, camera,
                                              mm_per_px, w)
                    t0 = time.perf_counter()
                    det = detector(frame, index).above(settings.score_thresh)
                    t1 = time.perf_counter()
                    ids = tracker.update(det, frame)
                    book.add(index, det, ids, frame,
                             metric=sizer(index) if sizer is not None else None)
                    book.resolve(tracker.resolved)
                    t2 = time.perf_counter()
                    for i, tid in enumerate(ids.tolist()):
                        if tid != -1:
                            x0, y0, x1, y1 = det.boxes[i]
                            mot_lines.add(tid, f"{index + 1},{{}},{x0:.1f},{y0:.1f},"
                                          f"{x1 - x0:.1f},{y1 - y0:.1f},{det.scores[i]:.3f},"
                                          "-1,-1,-1\n")
                    mot_lines.resolve(tracker.resolved)
                    # A pending track's detections have no id yet: untracked in these two.
                    ids = np.where(ids >= 0, ids, -1)
                    results.add(index, det, ids, h, w)
                    if write_video:
                        if writer is None:
                            writer = VideoWriter(tmp / "annotated.mp4", fps / frame_step, w, h)
                        n = len(counted(book.tracks, settings.min_frames, line is not None))
                        writer.write(draw_tracks(frame, det, ids, book.line_x,
                                                 f"frame {index}  bunches {n}"))
                    timing["model_s"] += t1 - t0
                    timing["tracker_s"] += t2 - t1
                    timing["write_s"] += time.perf_counter() - t2
                    processed += 1
                    index += 1
                    bar.update()
                    if progress and processed % 10 == 0:
                        bar.set_postfix(fps=f"{processed / (time.perf_counter() - start):.1f}")
                bar.close()
            finally:
                results.close()
                mot.close()
                if writer is not None:
                    writer.close()
            if processed == 0:
                raise GrapeInputError(f"{video}: no frame could be read")
            if segments is not None:
                beyond = [s for s in segments if s.last_frame >= index]
                if beyond:
                    raise GrapeInputError(f"{segments_csv}: segment {beyond[0].name} ends at "
                                          f"frame {beyond[0].last_frame}, beyond the video "
                                          f"({index} frames)")
            else:
                segments = [Segment("all", 0, index - 1)]
            summary = _write_tables(tmp, book, settings, segments, line is not None)
            summary.update(frames=index, processed_frames=processed, frame_step=frame_step,
                           fps_video=fps, wall_s=round(time.perf_counter() - start, 3),
                           **{k: round(v, 3) for k, v in timing.items()})
            summary["pipeline_fps"] = round(processed / max(summary["wall_s"], 1e-9), 2)
            with open(tmp / "summary.json", "w") as f:
                json.dump(summary, f, indent=1)
    finally:
        capture.release()
    logger.info("%s: %d bunches in %d frames -> %s", video, summary["total"], index, output)
    return summary


def _write_tables(folder: Path, book: TrackBook, settings: TrackingSettings,
                  segments: list[Segment], require_crossing: bool) -> dict:
    """tracks.csv and counts.csv; returns the counts."""
    good = counted(book.tracks, settings.min_frames, require_crossing)
    good_ids = {t.id for t in good}
    per_segment = count_by_segment(good, segments)
    with open(folder / "tracks.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=TRACK_FIELDS, extrasaction="ignore")
        w.writeheader()
        for t in sorted(book.tracks.values(), key=lambda t: t.id):
            w.writerow(_track_row(t, t.id in good_ids,
                                  segment_of(t.line_frame, segments) or "unassigned"))
    with open(folder / "counts.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["segment", "bunches"])
        w.writerows(per_segment.items())
        w.writerow(["total", len(good)])
    return {"total": len(good), "segments": per_segment, "tracks": len(book.tracks)}


def count_row(cfg, video: str | os.PathLike, output: str | os.PathLike, **kwargs) -> dict:
    """:func:`count_video` with the instance model of ``cfg`` (``MODEL.WEIGHTS``) and its
    ``TRACKING.*`` settings; ``kwargs`` as :func:`count_video`'s."""
    from .predictor import Predictor  # noqa: PLC0415  (loads Detectron2's model code)

    if cfg.INPUT.DEPTH.ENABLED:
        raise GrapeInputError("an RGB-D model (INPUT.DEPTH.ENABLED) cannot run on a video "
                              "without aligned depth frames; count_row takes RGB models")
    settings = TrackingSettings.from_config(cfg)
    capture, _, frames = open_video(video)  # bad inputs: one line before the model loads
    capture.release()
    if kwargs.get("segments_csv"):
        read_segments(kwargs["segments_csv"], frames or None)
    predictor = Predictor(cfg)
    return count_video(model_detector(predictor, settings.score_thresh), video, output,
                       settings, **kwargs)
