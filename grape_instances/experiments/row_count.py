"""Counting along rendered row videos, scored against their ground truth (issue 16).

* :func:`detect_cache`: run the model once over a video, keep its detections (RLE) in a
  JSON file, so trackers and their settings are compared on the same detections;
* :func:`coco_detections`: the ground-truth masks of a rendered video as "detections" (an
  oracle detector: tests, and the tracker's upper bound);
* :func:`score_run`: count error per video and per segment, and MOTA / IDF1 / ID switches
  with ``motmetrics`` (box IoU >= 0.5), of one ``count_video`` output folder, with the
  sources of its errors (:func:`error_sources`: missed bunches, duplicate and unmatched
  tracks, tracks assigned to the wrong segment);
* :func:`per_frame_baseline`: the same figures without a tracker, each frame's detections
  counted again (what ``visualize.py --video-input`` gives);
* :func:`compare_trackers` / :func:`evaluate`: the validation grid that picks the
  ``TRACKING.*`` defaults, and the test table (``tools/row_count_eval.py``).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_util

from ..core.errors import GrapeInputError
from ..core.fileio import atomic_outputs, read_json, write_json_atomic
from ..core.tables import markdown_table
from ..inference.row_count import count_video, open_video, read_segments
from ..inference.tracking import FrameDetections, TrackingSettings

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- detections


def _from_rles(items: Sequence[dict]) -> FrameDetections:
    if not items:
        return FrameDetections(np.zeros((0, 4)), np.zeros(0), [], np.zeros((0, 2), int))
    masks = [mask_util.decode(d["segmentation"]).astype(bool) for d in items]
    return FrameDetections.from_masks(masks, [d.get("score", 1.0) for d in items])


def coco_detections(annotations_json: str | os.PathLike) -> dict[int, FrameDetections]:
    """Ground-truth masks of a rendered row video, per frame index (score 1)."""
    coco = read_json(annotations_json, expect=dict)
    frame_of = {im["id"]: im["frame_index"] for im in coco["images"]}
    per: dict[int, list[dict]] = {f: [] for f in frame_of.values()}
    for a in coco["annotations"]:
        per[frame_of[a["image_id"]]].append(a)
    return {f: _from_rles(v) for f, v in per.items()}


def cached(detections: dict[int, FrameDetections]):
    """A detector (``count_video``'s) that returns prepared detections by frame index."""
    empty = FrameDetections(np.zeros((0, 4)), np.zeros(0), [], np.zeros((0, 2), int))
    return lambda frame, index: detections.get(index, empty)


def detect_cache(detector, video: str | os.PathLike, cache: str | os.PathLike,
                 frame_step: int = 1) -> dict:
    """Run ``detector`` on every ``frame_step``-th frame of ``video`` once; detections (RLE,
    score) go to the JSON ``cache``, reused when it exists. Returns frame index ->
    FrameDetections and the model's seconds per frame."""
    cache = Path(cache)
    if not cache.is_file():
        capture, _, _ = open_video(video)
        frames, seconds, n = {}, 0.0, 0
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                if n % frame_step:
                    n += 1
                    continue
                t0 = time.perf_counter()
                det = detector(frame, n)
                seconds += time.perf_counter() - t0
                h, w = frame.shape[:2]
                frames[n] = [{"segmentation": _rle(det.mask(i, h, w)),
                              "score": float(det.scores[i])} for i in range(len(det))]
                n += 1
        finally:
            capture.release()
        write_json_atomic(cache, {"frames": frames, "frame_step": frame_step,
                                  "model_s_per_frame": seconds / max(len(frames), 1)})
    data = read_json(cache, expect=dict)
    return {"detections": {int(f): _from_rles(v) for f, v in data["frames"].items()},
            "model_s_per_frame": data["model_s_per_frame"], "frame_step": data["frame_step"]}


def _rle(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


# --------------------------------------------------------------------------- scoring


def _read_mot(path: Path, ids: set[int] | None = None) -> dict[int, list[tuple]]:
    per: dict[int, list[tuple]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            f, tid, x, y, w, h = (float(v) for v in line.split(",")[:6])
            if ids is None or int(tid) in ids:
                per.setdefault(int(f), []).append((int(tid), x, y, w, h))
    return per


def mot_metrics(gt_txt: str | os.PathLike, hyp: dict[int, list[tuple]], frames: Iterable[int]
                ) -> dict:
    """MOTA, IDF1, ID switches (motmetrics, box IoU >= 0.5) over ``frames`` (1-based), and
    ``bunch_of``: each hypothesis track's ground-truth bunch, the one motmetrics matched it
    to in most frames (tracks never matched are absent)."""
    import motmetrics as mm  # noqa: PLC0415

    gt = _read_mot(Path(gt_txt))
    acc = mm.MOTAccumulator(auto_id=True)
    for f in frames:
        g, hy = gt.get(f, []), hyp.get(f, [])
        dist = mm.distances.iou_matrix(np.array([r[1:] for r in g]).reshape(-1, 4),
                                       np.array([r[1:] for r in hy]).reshape(-1, 4),
                                       max_iou=0.5)
        acc.update([r[0] for r in g], [r[0] for r in hy], dist)
    s = mm.metrics.create().compute(acc, metrics=["mota", "idf1", "num_switches"], name="v")
    events = acc.mot_events
    pairs = events[events["Type"].isin(["MATCH", "SWITCH"])]
    votes: dict[int, dict[int, int]] = {}
    for oid, hid in zip(pairs["OId"].tolist(), pairs["HId"].tolist(), strict=True):
        per = votes.setdefault(int(hid), {})
        per[int(oid)] = per.get(int(oid), 0) + 1
    return {"mota": float(s["mota"].iloc[0]), "idf1": float(s["idf1"].iloc[0]),
            "id_switches": int(s["num_switches"].iloc[0]),
            "bunch_of": {h: max(v, key=lambda o: (v[o], -o)) for h, v in votes.items()}}


def error_sources(tracks: Sequence[tuple[int, str]], bunch_of: dict[int, int],
                  bunch_segment: dict[int, str]) -> dict:
    """Where a per-segment count error comes from, in counted tracks ``(track id, segment)``
    against the truth: ``matched`` tracks (with a bunch in ``bunch_of``), of which
    ``wrong_segment`` (assigned to another segment than their bunch's) and ``duplicates``
    (a bunch's second, third... track); ``unmatched`` tracks (no bunch: false positives or
    boxes too poor to match); ``missed`` bunches (of ``bunch_segment``, no counted track).
    A per-video count hides these when misses and extras cancel; a segment's does not."""
    per_bunch: dict[int, int] = {}
    wrong = unmatched = 0
    for tid, segment in tracks:
        bunch = bunch_of.get(tid)
        if bunch is None:
            unmatched += 1
            continue
        per_bunch[bunch] = per_bunch.get(bunch, 0) + 1
        wrong += bunch_segment.get(bunch) != segment
    return {"matched": sum(per_bunch.values()), "wrong_segment": wrong,
            "duplicates": sum(n - 1 for n in per_bunch.values()), "unmatched": unmatched,
            "missed": sum(b not in per_bunch for b in bunch_segment)}


def count_errors(counts: dict[str, int], truth: dict) -> dict:
    """|counted - true| / true for the video and each segment (vine)."""
    per = {}
    for name, true in truth["segments"].items():
        got = counts.get(name, 0)
        per[name] = abs(got - true) / true if true else float(got > 0)
    total = sum(v for k, v in counts.items() if k != "total")
    return {"video": abs(total - truth["total"]) / max(truth["total"], 1), "segments": per,
            "counted": total, "true": truth["total"]}


def score_run(video_dir: str | os.PathLike, run_dir: str | os.PathLike,
              min_frames: int | None = None) -> dict:
    """Count errors and MOT metrics of one ``count_video`` output on one rendered video.
    Only counted tracks are scored: ``tracks.csv``'s ``counted``, or with ``min_frames``
    those seen in at least that many frames (the counting rule re-applied to the same
    tracks, so a grid over it needs one tracking run)."""
    video_dir, run_dir = Path(video_dir), Path(run_dir)
    truth = read_json(video_dir / "truth.json", expect=dict)
    summary = read_json(run_dir / "summary.json", expect=dict)
    with open(run_dir / "tracks.csv", newline="") as f:
        tracks = list(csv.DictReader(f))
    if min_frames is None:
        kept = [t for t in tracks if t["counted"] == "1"]
        counts = summary["segments"]
    else:
        kept = [t for t in tracks if int(t["frames_seen"]) >= min_frames]
        counts = {name: 0 for name in summary["segments"]}
        for t in kept:
            counts[t["segment"]] = counts.get(t["segment"], 0) + 1
    hyp = _read_mot(run_dir / "mot.txt", {int(t["track_id"]) for t in kept})
    step = summary["frame_step"]
    frames = [f + 1 for f in range(0, summary["frames"], step)]
    mot = mot_metrics(video_dir / "gt" / "gt.txt", hyp, frames)
    sources = error_sources([(int(t["track_id"]), t["segment"]) for t in kept],
                            mot.pop("bunch_of"),
                            {int(b): v for b, v in truth["bunch_vine"].items()})
    return {**count_errors(counts, truth), **mot, "sources": sources,
            "tracker_ms_per_frame": 1000 * summary["tracker_s"] / summary["processed_frames"]}


def per_frame_baseline(video_dir: str | os.PathLike, detections: dict[int, FrameDetections],
                       score_thresh: float, frame_step: int = 1) -> dict:
    """No tracker: every processed frame's detections are counted again (a new id each)."""
    video_dir = Path(video_dir)
    truth = read_json(video_dir / "truth.json", expect=dict)
    segments = read_segments(video_dir / "segments.csv")
    counts = {s.name: 0 for s in segments}
    hyp: dict[int, list[tuple]] = {}
    next_id = 1
    for f in range(0, truth["frames"], frame_step):
        det = detections.get(f)
        if det is None:
            continue
        keep = [i for i in range(len(det)) if det.scores[i] >= score_thresh]
        name = next(s.name for s in segments if s.first_frame <= f <= s.last_frame)
        counts[name] += len(keep)
        for i in keep:
            x0, y0, x1, y1 = det.boxes[i]
            hyp.setdefault(f + 1, []).append((next_id, x0, y0, x1 - x0, y1 - y0))
            next_id += 1
    mot = mot_metrics(video_dir / "gt" / "gt.txt", hyp, range(1, truth["frames"] + 1, frame_step))
    mot.pop("bunch_of")
    return {**count_errors(counts, truth), **mot}


# --------------------------------------------------------------------------- experiments


def run_settings(video_dir: Path, detections: dict[int, FrameDetections],
                 settings: TrackingSettings, out: Path, frame_step: int = 1,
                 min_frames: Sequence[int] | None = None) -> dict | list[dict]:
    """Track cached detections of one rendered video with ``settings`` and score them (one
    score per value of ``min_frames`` when given)."""
    count_video(cached(detections), video_dir / "video.mp4", out, settings,
                segments_csv=video_dir / "segments.csv", frame_step=frame_step,
                write_video=False, progress=False)
    if min_frames is None:
        return score_run(video_dir, out)
    return [score_run(video_dir, out, mf) for mf in min_frames]


def _mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def summarize(rows: list[dict]) -> dict:
    """Means over videos: count error per video and per segment, MOTA, IDF1; ID switches
    and the error sources (:func:`error_sources`) summed."""
    seg = [e for r in rows for e in r["segments"].values()]
    out = {"count_err_video": _mean(rows, "video"), "count_err_segment": float(np.mean(seg)),
           "mota": _mean(rows, "mota"), "idf1": _mean(rows, "idf1"),
           "id_switches": float(np.sum([r["id_switches"] for r in rows])),
           "tracker_ms": _mean(rows, "tracker_ms_per_frame") if "tracker_ms_per_frame"
           in rows[0] else float("nan")}
    if "sources" in rows[0]:  # summed over the videos
        out["sources"] = {k: sum(r["sources"][k] for r in rows) for k in rows[0]["sources"]}
    return out


def sources_line(sources: dict) -> str:
    """One sentence: the counted tracks against the truth (:func:`error_sources`)."""
    return (f"{sources['matched']} counted tracks matched a true bunch, "
            f"{sources['wrong_segment']} of them in the wrong segment and "
            f"{sources['duplicates']} a bunch's extra track; {sources['unmatched']} matched "
            f"none; {sources['missed']} true bunches had no counted track.")


#: (backend, match, camera motion) compared on the validation videos.
GRID_TRACKERS = [("norfair", "mask", True), ("norfair", "box", True), ("norfair", "mask", False),
                 ("bytetrack", "box", False)]
#: Detection score thresholds (TRACKING.SCORE_THRESH) tried on the validation videos.
GRID_SCORES = (0.3, 0.5, 0.7)
#: Re-identification (TRACKING.REID_GAP, REID_DISTANCE) tried with norfair's mask IoU and
#: camera motion only (the other trackers run with it off), to keep the grid a few minutes.
GRID_REID = ((0, 0.5), (5, 0.5), (20, 0.5), (20, 1.0), (20, 2.0))
REID_TRACKER = ("norfair", "mask", True)


def compare_trackers(videos: Sequence[Path], dets: dict[Path, dict], out: Path,
                     min_frames: Sequence[int] = (1, 2, 3, 5, 8, 12, 16),
                     max_gaps: Sequence[int] = (10, 20, 40), scores: Sequence[float] = GRID_SCORES
                     ) -> list[dict]:
    """Every tracker x SCORE_THRESH x MAX_GAP x MIN_FRAMES on the validation videos, and
    :data:`GRID_REID` for :data:`REID_TRACKER`; one row per setting (MIN_FRAMES re-scores
    the same tracks)."""
    table = []
    for backend, match, cmc in GRID_TRACKERS:
        reids = GRID_REID if (backend, match, cmc) == REID_TRACKER else ((0, 0.5),)
        for score in scores:
            for gap in max_gaps:
                for reid_gap, reid_distance in reids:
                    s = TrackingSettings(backend=backend, match=match, max_gap=gap,
                                         min_frames=1, score_thresh=score, camera_motion=cmc,
                                         reid_gap=reid_gap, reid_distance=reid_distance)
                    name = f"{backend}-{match}-{'cmc' if cmc else 'nocmc'}-{score}-{gap}"
                    if reid_gap:
                        name += f"-reid{reid_gap}-{reid_distance}"
                    per_video = [run_settings(v, dets[v]["detections"], s, out / name / v.name,
                                              dets[v].get("frame_step", 1), min_frames)
                                 for v in videos]
                    for k, mf in enumerate(min_frames):
                        table.append({"backend": backend, "match": match, "camera_motion": cmc,
                                      "score_thresh": score, "max_gap": gap, "min_frames": mf,
                                      "reid_gap": reid_gap, "reid_distance": reid_distance,
                                      **summarize([rows[k] for rows in per_video])})
    return table


#: The TrackingSettings fields a validation row chooses.
CHOSEN = ("backend", "match", "camera_motion", "score_thresh", "max_gap", "min_frames",
          "reid_gap", "reid_distance")


def setting_text(row: dict) -> str:
    """``score/gap/min frames/reid``, reid as ``REID_GAP@REID_DISTANCE`` or ``off``."""
    reid = f"{row['reid_gap']}@{row['reid_distance']}" if row["reid_gap"] else "off"
    return f"{row['score_thresh']}/{row['max_gap']}/{row['min_frames']}/{reid}"


def settings_of(row: dict) -> TrackingSettings:
    """The tracker settings of one validation row."""
    return TrackingSettings(**{k: row[k] for k in CHOSEN})


def markdown(rows: list[dict], first: Sequence[str]) -> str:
    cols = [*first, "count_err_video", "count_err_segment", "mota", "idf1", "id_switches",
            "tracker_ms"]
    body = [[r[c] if c in first else (f"{100 * r[c]:.1f} %" if c.startswith("count") else
                                      f"{r[c]:.3f}" if c in ("mota", "idf1") else
                                      f"{r[c]:.0f}" if c == "id_switches" else f"{r[c]:.2f}")
             for c in cols] for r in rows]
    return markdown_table(cols, body, ["left"] * len(first) + ["right"] * (len(cols) - len(first)))


def video_dirs(root: str | os.PathLike, split: str) -> list[Path]:
    found = sorted(p for p in (Path(root) / split).glob("*") if (p / "truth.json").is_file())
    if not found:
        raise GrapeInputError(f"{root}/{split}: no rendered row videos (make_synthetic.py "
                              "--row-videos)")
    return found


def evaluate(videos: Sequence[Path], dets: dict[Path, dict], settings: TrackingSettings,
             out: Path) -> dict:
    """The test table: with the tracker and without it (per-frame detections counted)."""
    tracked = [run_settings(v, dets[v]["detections"], settings, out / "tracked" / v.name,
                            dets[v].get("frame_step", 1)) for v in videos]
    base = [per_frame_baseline(v, dets[v]["detections"], settings.score_thresh,
                               dets[v].get("frame_step", 1)) for v in videos]
    result = {"tracked": summarize(tracked), "per_frame": summarize(base),
              "videos": {v.name: {"tracked": t, "per_frame": b}
                         for v, t, b in zip(videos, tracked, base, strict=True)}}
    write_json_atomic(out / "eval.json", result, indent=1, nan_as_null=True)
    return result


def load_detections(videos: Sequence[Path], detector, cache_dir: Path, oracle: bool = False,
                    frame_step: int = 1) -> dict[Path, dict]:
    """Detections of each video: the model's (cached under ``cache_dir``) or the truth's."""
    out = {}
    for v in videos:
        if oracle:
            dets = coco_detections(v / "annotations.json")
            out[v] = {"detections": {f: d for f, d in dets.items() if f % frame_step == 0},
                      "model_s_per_frame": 0.0, "frame_step": frame_step}
        else:
            out[v] = detect_cache(detector, v / "video.mp4",
                                  cache_dir / f"{v.parent.name}_{v.name}_s{frame_step}.json",
                                  frame_step)
    return out


def pick(table: list[dict]) -> dict:
    """The validation row with the lowest count error (video + segment), then highest IDF1."""
    return min(table, key=lambda r: (round(r["count_err_video"] + r["count_err_segment"], 4),
                                     -r["idf1"]))


def run_row_eval(root: str | os.PathLike, out: str | os.PathLike, detector=None,
                 frame_step: int = 1, score_thresh: float = 0.5, oracle: bool = False) -> dict:
    """Tune on ``root/val``, score once on ``root/test``; writes ``out/row_eval.md`` + JSON.

    ``detector`` None with ``oracle``: ground-truth masks as detections (the tracker's
    ceiling). The grid: :data:`GRID_TRACKERS` x MAX_GAP x MIN_FRAMES.
    """
    out = Path(out)
    val, test = video_dirs(root, "val"), video_dirs(root, "test")
    cache = out / "detections"
    t0 = time.perf_counter()
    dval = load_detections(val, detector, cache, oracle, frame_step)
    dtest = load_detections(test, detector, cache, oracle, frame_step)
    model_s = float(np.mean([d["model_s_per_frame"] for d in [*dval.values(),
                                                               *dtest.values()]]))
    logger.info("detections ready in %.0f s", time.perf_counter() - t0)
    table = compare_trackers(val, dval, out / "val")
    best = pick(table)
    result = evaluate(test, dtest, settings_of(best), out / "test")
    # The best setting of each tracker on validation, scored on test too (the comparison).
    per_tracker = []
    for backend, match, cmc in GRID_TRACKERS:
        rows = [r for r in table if (r["backend"], r["match"], r["camera_motion"])
                == (backend, match, cmc)]
        variants = [("", rows)]
        if (backend, match, cmc) == REID_TRACKER:  # with and without re-identification
            variants = [(" +reid", [r for r in rows if r["reid_gap"]]),
                        ("", [r for r in rows if not r["reid_gap"]])]
        for suffix, some in variants:
            b = pick(some)
            name = f"{backend}-{match}-{'cmc' if cmc else 'nocmc'}{suffix.replace(' +', '-')}"
            tested = [run_settings(v, dtest[v]["detections"], settings_of(b),
                                   out / "test-trackers" / name / v.name, frame_step)
                      for v in test]
            per_tracker.append({**{k: b[k] for k in CHOSEN}, "suffix": suffix,
                                "val_count_err_video": b["count_err_video"],
                                "val_count_err_segment": b["count_err_segment"],
                                "val_idf1": b["idf1"], **summarize(tested)})
    report = {"frame_step": frame_step, "oracle": oracle, "model_s_per_frame": model_s,
              "chosen": {k: best[k] for k in CHOSEN},
              "val_grid": table, "test": result, "test_trackers": per_tracker}
    dump(report, out / "row_eval.json")
    lines = [f"# Row counting: test videos ({len(test)}), frame step {frame_step}, "
             f"{'oracle detections' if oracle else 'model detections'}", "",
             f"Chosen on {len(val)} validation videos: {report['chosen']}", "",
             markdown([{"method": "tracked", **result["tracked"]},
                       {"method": "per-frame (no tracker)", **result["per_frame"]}],
                      ["method"]), "",
             "Where the tracked row's errors come from (test videos, summed; motmetrics' "
             "matches, box IoU >= 0.5): " + sources_line(result["tracked"]["sources"]), "",
             "Each tracker at its best validation setting, on the test videos:", "",
             markdown([{**r, "tracker": f"{r['backend']} {r['match']}"
                        f"{' +camera motion' if r['camera_motion'] else ''}{r['suffix']}",
                        "score/gap/min/reid": setting_text(r)} for r in per_tracker],
                      ["tracker", "score/gap/min/reid"]), "",
             f"Model: {model_s * 1000:.0f} ms per frame (detection), mean over the videos."]
    text = "\n".join(lines) + "\n"
    with atomic_outputs([out / "row_eval.md"], overwrite=True) as o, \
            o.open(out / "row_eval.md") as f:
        f.write(text)
    report["markdown"] = text
    return report


def dump(obj, path: Path) -> None:
    write_json_atomic(path, json.loads(json.dumps(obj, default=float)), indent=1,
                      nan_as_null=True)


def score_table(video_dir: str | os.PathLike, run_dir: str | os.PathLike) -> str:
    """Markdown: true and counted bunches per segment and in total, count errors, MOTA, IDF1
    and ID switches of one ``count_row`` output on one rendered video."""
    s = score_run(video_dir, run_dir)
    truth = read_json(Path(video_dir) / "truth.json", expect=dict)
    counts = read_json(Path(run_dir) / "summary.json", expect=dict)["segments"]
    rows = [[name, str(true), str(counts.get(name, 0)), f"{100 * s['segments'][name]:.0f} %"]
            for name, true in truth["segments"].items()]
    rows.append(["total", str(s["true"]), str(s["counted"]), f"{100 * s['video']:.1f} %"])
    table = markdown_table(["segment", "true", "counted", "count error"], rows,
                           ["left", "right", "right", "right"])
    return (f"{table}\n\nMOTA {s['mota']:.3f}, IDF1 {s['idf1']:.3f}, ID switches "
            f"{s['id_switches']} (motmetrics, box IoU >= 0.5)\n\n{sources_line(s['sources'])}\n")


def memory_check(frames: int, work: str | os.PathLike) -> dict:
    """Resident memory of :func:`count_video` over a rendered ``frames``-frame row with a
    lazy ground-truth box detector (boxes from ``gt.txt`` as masks): sampled every 50
    frames, to show that it does not grow with the video's length."""
    from ..synthetic.row_video import RowVideoConfig, write_row_video  # noqa: PLC0415

    work = Path(work)
    video = work / f"long{frames}"
    if not (video / "truth.json").is_file():
        write_row_video(video, RowVideoConfig(frames=frames, vines=max(4, frames // 60)),
                        seed=99, overwrite=True, progress=False)
    boxes: dict[int, list] = {}
    for line in (video / "gt" / "gt.txt").read_text().splitlines():
        f, _, x, y, w, h = (float(v) for v in line.split(",")[:6])
        boxes.setdefault(int(f) - 1, []).append((x, y, x + w, y + h))
    rss: list[float] = []

    def detect(frame: np.ndarray, index: int) -> FrameDetections:
        masks = []
        for x0, y0, x1, y1 in np.array(boxes.get(index, []), int).reshape(-1, 4):
            m = np.zeros(frame.shape[:2], bool)
            m[y0:y1, x0:x1] = True
            masks.append(m)
        if index % 50 == 0:
            with open("/proc/self/statm") as f:  # Linux: resident pages
                rss.append(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20)
        return FrameDetections.from_masks(masks, [0.9] * len(masks))

    t0 = time.process_time()
    s = count_video(detect, video / "video.mp4", work / f"long{frames}_count",
                    TrackingSettings(), progress=False)
    return {"frames": frames, "bunches": s["total"], "rss_mb_first": rss[1],
            "rss_mb_last": rss[-1], "cpu_s": time.process_time() - t0}
