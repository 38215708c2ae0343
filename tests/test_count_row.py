"""Counting bunches along a row video (issue 16): tracker, segments, outputs, bad inputs, and
end-to-end runs on a tiny rendered video checked against its ground truth."""

import csv
import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from grape_instances.core.errors import GrapeInputError
from grape_instances.experiments.row_count import (
    cached,
    coco_detections,
    error_sources,
    score_run,
)
from grape_instances.inference.row_count import count_video, read_segments
from grape_instances.inference.tracking import (
    FrameDetections,
    Segment,
    TrackBook,
    TrackingSettings,
    count_by_segment,
    counted,
    shifted_mask_iou,
)
from grape_instances.synthetic.row_video import RowVideoConfig, write_row_video
from tests.helpers import DEMO_CONFIG, assert_user_error, run_tool

H, W = 96, 200


def _frame(boxes):
    """Hand-made detections: one 10 x 20 px rectangle mask per (x, y) top-left corner."""
    masks = []
    for x, y in boxes:
        m = np.zeros((H, W), bool)
        m[y:y + 20, x:x + 10] = True
        masks.append(m)
    return FrameDetections.from_masks(masks, [0.9] * len(masks))


def _track(settings, frames):
    """Track a list of frames of boxes; returns the ids per frame and the track book."""
    tracker, book = settings.build(), TrackBook(W / 2)
    out = []
    for f, boxes in enumerate(frames):
        det = _frame(boxes)
        ids = tracker.update(det)
        book.add(f, det, ids)
        book.resolve(tracker.resolved)
        out.append(ids.tolist())
    return out, book


def _ids(frames_ids):
    """The track ids given (pending keys of tracks not confirmed yet left out)."""
    return {i for frame in frames_ids for i in frame if i >= 0}


@pytest.mark.parametrize("match", ["mask", "box"])
@pytest.mark.parametrize("hidden", [3, 8])
def test_a_hidden_bunch_keeps_its_id_up_to_the_gap(match, hidden):
    gap = 5
    s = TrackingSettings(match=match, max_gap=gap, camera_motion=False)
    frames = [[(20 + 4 * f, 30)] if not 10 <= f < 10 + hidden else [] for f in range(30)]
    ids, book = _track(s, frames)
    seen = {i for frame in ids for i in frame}
    if hidden <= gap:
        assert seen == {1}, ids  # back after 3 frames: the same bunch
    else:
        assert len(seen) == 2, ids  # gone longer than the gap: a new track


@pytest.mark.parametrize("backend,match", [("norfair", "mask"), ("norfair", "box")])
def test_two_crossing_bunches_keep_their_ids(backend, match):
    s = TrackingSettings(backend=backend, match=match, camera_motion=False)
    # One moves right, the other left, their masks overlapping for several frames.
    frames = [[(10 + 3 * f, 20), (130 - 3 * f, 28)] for f in range(40)]
    ids, _ = _track(s, frames)
    assert all(frame == ids[0] for frame in ids), ids
    assert len(set(ids[0])) == 2


def test_a_one_frame_flicker_is_not_counted():
    s = TrackingSettings(min_frames=3, camera_motion=False)
    frames = [[(20 + 2 * f, 30)] + ([(150, 60)] if f == 7 else []) for f in range(20)]
    ids, book = _track(s, frames)
    assert len(book.tracks) == 2
    good = counted(book.tracks, s.min_frames)
    assert [t.frames_seen for t in good] == [20]


# A bunch at a fixed place (the camera's motion already compensated), seen in frames
# 0-9, hidden from frame 10 for `hidden` frames, then seen until frame 59.
def _hidden_bunch(hidden, x=60):
    return [[(x, 30)] if not 10 <= f < 10 + hidden else [] for f in range(60)]


@pytest.mark.parametrize("match", ["mask", "box"])
def test_reid_gives_a_bunch_hidden_longer_than_the_gap_its_id_back(match):
    gap, hidden = 5, 15  # lost after at most 5 frames, back after 15
    frames = _hidden_bunch(hidden)
    visible = sum(1 for f in frames if f)
    off = TrackingSettings(match=match, max_gap=gap, min_frames=3)
    ids, book = _track(off, frames)
    assert len(_ids(ids)) == 2 and len(counted(book.tracks, 3)) == 2, ids
    on = TrackingSettings(match=match, max_gap=gap, min_frames=3, reid_gap=20)
    ids, book = _track(on, frames)
    assert len(_ids(ids)) == 1, ids  # one id, counted once
    (t,) = counted(book.tracks, 3)
    # Every detection is in the track, the first ones of the new track norfair merged too.
    assert (t.frames_seen, t.first_frame, t.last_frame) == (visible, 0, 59)
    assert not book.pending
    # Longer than MAX_GAP + REID_GAP: a new track after all.
    short = TrackingSettings(match=match, max_gap=gap, min_frames=3, reid_gap=5)
    ids, book = _track(short, frames)
    assert len(_ids(ids)) == 2 and len(counted(book.tracks, 3)) == 2, ids


@pytest.mark.parametrize("dx,reid_distance,merged", [
    (130, 0.5, False),  # far apart: another bunch
    (30, 1.0, False),  # centres 30 px apart, 1.5 bunch sizes (the box's 20 px height)
    (30, 2.0, True),
])
def test_reid_joins_only_tracks_within_reid_distance(dx, reid_distance, merged):
    # Bunch A is seen in frames 0-9 and never again; B appears dx px to its right at frame 20.
    frames = [[(20, 30)] if f < 10 else [] if f < 20 else [(20 + dx, 30)] for f in range(40)]
    s = TrackingSettings(max_gap=5, min_frames=3, reid_gap=20, reid_distance=reid_distance)
    ids, book = _track(s, frames)
    assert len(_ids(ids)) == (1 if merged else 2), ids
    assert len(counted(book.tracks, 3)) == (1 if merged else 2)
    assert sum(t.frames_seen for t in book.tracks.values()) == 30


def test_reid_keeps_a_track_that_was_lost_once_and_found_again():
    # Hidden exactly as long as the track lives: norfair 2.3.0 starts its re-identification
    # countdown and, unpatched, deletes the track REID_GAP frames later although it is seen.
    frames = _hidden_bunch(5)
    s = TrackingSettings(max_gap=5, min_frames=3, reid_gap=3)
    ids, book = _track(s, frames)
    assert len(_ids(ids)) == 1, ids
    assert [t.frames_seen for t in book.tracks.values()] == [55]


def test_reid_drops_an_unconfirmed_flicker_and_counts_first_frames():
    s = TrackingSettings(min_frames=3, reid_gap=10)
    frames = [[(20 + 2 * f, 30)] + ([(150, 60)] if f == 7 else []) for f in range(40)]
    ids, book = _track(s, frames)
    assert ids[0][0] <= -2 and ids[1] == [ids[2][0]] and ids[1][0] >= 0  # pending, then id
    assert [(t.first_frame, t.frames_seen) for t in book.tracks.values()] == [(0, 40)]
    assert not book.pending  # the flicker of frame 7 never became a track


def test_reid_settings_are_checked():
    with pytest.raises(GrapeInputError, match="REID_GAP needs TRACKING.BACKEND norfair"):
        TrackingSettings(backend="bytetrack", match="box", reid_gap=5)
    with pytest.raises(GrapeInputError, match="REID_DISTANCE"):
        TrackingSettings(reid_gap=5, reid_distance=0)
    with pytest.raises(GrapeInputError, match="MAX_GAP of at least 2"):
        TrackingSettings(reid_gap=5, max_gap=1)


def test_shifted_mask_iou():
    a = np.ones((4, 4), bool)
    assert shifted_mask_iou(a, (0, 0), a, (0, 0)) == 1.0
    assert shifted_mask_iou(a, (0, 0), a, (2, 0)) == pytest.approx(8 / 24)
    assert shifted_mask_iou(a, (0, 0), a, (5, 5)) == 0.0


def test_segment_assignment_by_line_frame_and_crossing():
    s = TrackingSettings(min_frames=1, camera_motion=False)
    # A bunch moving right passes the middle (x = 100) at frame 20; one stays left of it.
    frames = [[(5 * f, 30), (10, 60)] for f in range(30)]
    _, book = _track(s, frames)
    mover = max(book.tracks.values(), key=lambda t: t.line_frame)
    assert 18 <= mover.line_frame <= 20  # box centre 5f + 5 nearest 100
    segs = [Segment("a", 0, 9), Segment("b", 10, 29)]
    assert count_by_segment(counted(book.tracks, 1), segs) == {"a": 1, "b": 1}
    # With a counting line only the crossing track counts.
    assert [t.id for t in counted(book.tracks, 1, require_crossing=True)] == [mover.id]
    assert count_by_segment(counted(book.tracks, 1), [Segment("a", 0, 9)]) == {
        "a": 1, "unassigned": 1}


@pytest.mark.parametrize("text,fragment", [
    ("vine,first,last\nv1,0,5\n", "first line"),
    ("segment,first_frame,last_frame\nv1,0,50\n", "beyond the video"),
    ("segment,first_frame,last_frame\nv1,0,10\nv2,10,20\n", "overlap"),
    ("segment,first_frame,last_frame\nv1,5,2\n", "first_frame <= last_frame"),
    ("segment,first_frame,last_frame\nv1,a,2\n", "whole numbers"),
    ("segment,first_frame,last_frame\n", "no segment rows"),
])
def test_bad_segment_files(tmp_path, text, fragment):
    path = tmp_path / "s.csv"
    path.write_text(text)
    with pytest.raises(GrapeInputError, match=fragment):
        read_segments(path, frames=40)


# --------------------------------------------------------------------------- rendered video


@pytest.fixture(scope="module")
def tiny_row(tmp_path_factory):
    """A 100-frame, 160 x 96 row video of 2 vines with its ground truth (the camera moves
    about 3 % of the frame width per frame, as in the default videos)."""
    out = tmp_path_factory.mktemp("row") / "video"
    cfg = RowVideoConfig(width=160, height=96, frames=100, vines=2, vine_width=1.0,
                         min_bunches=3, max_bunches=4)
    write_row_video(out, cfg, seed=6, progress=False)
    return out


def test_rendered_video_ground_truth_is_consistent(tiny_row):
    truth = json.loads((tiny_row / "truth.json").read_text())
    cap = cv2.VideoCapture(str(tiny_row / "video.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 100
    ok, frame = cap.read()
    assert ok and frame.shape == (96, 160, 3)
    coco = json.loads((tiny_row / "annotations.json").read_text())
    assert [im["frame_index"] for im in coco["images"]] == list(range(100))
    track_ids = {a["track_id"] for a in coco["annotations"]}
    assert len(track_ids) == truth["total"] == sum(truth["segments"].values()) > 0
    gt = [line.split(",") for line in (tiny_row / "gt" / "gt.txt").read_text().splitlines()]
    assert len(gt) == len(coco["annotations"])
    for a, row in zip(coco["annotations"], gt, strict=True):  # same boxes, same ids
        m = mask_utils.decode(a["segmentation"])
        ys, xs = np.nonzero(m)
        assert int(row[0]) == a["image_id"] and int(row[1]) == a["track_id"]
        assert [int(v) for v in row[2:6]] == [xs.min(), ys.min(), xs.ptp() + 1, ys.ptp() + 1]
    segs = read_segments(tiny_row / "segments.csv", 100)
    assert segs[0].first_frame == 0 and max(s.last_frame for s in segs) == 99


def test_oracle_count_matches_ground_truth_and_writes_outputs(tiny_row, tmp_path):
    """Ground-truth masks as detections through the whole counting loop and its writers."""
    dets = coco_detections(tiny_row / "annotations.json")
    out = tmp_path / "count"
    s = TrackingSettings(min_frames=2)
    summary = count_video(cached(dets), tiny_row / "video.mp4", out, s,
                          segments_csv=tiny_row / "segments.csv", progress=False)
    truth = json.loads((tiny_row / "truth.json").read_text())
    assert abs(summary["total"] - truth["total"]) <= 1, (summary, truth)
    rows = list(csv.reader(open(out / "counts.csv")))
    assert rows[0] == ["segment", "bunches"] and rows[-1] == ["total", str(summary["total"])]
    assert sum(int(r[1]) for r in rows[1:-1]) == summary["total"]
    tracks = list(csv.DictReader(open(out / "tracks.csv")))
    assert sum(int(t["counted"]) for t in tracks) == summary["total"]
    for t in tracks:
        assert int(t["first_frame"]) <= int(t["last_frame"])
        assert float(t["area_px"]) > 0 and float(t["length_px"]) >= float(t["width_px"])
    results = json.loads((out / "results.json").read_text())
    assert {r["image_id"] for r in results} <= set(range(1, 101))
    assert all(mask_utils.decode(r["segmentation"]).shape == (96, 160) for r in results)
    assert {r["track_id"] for r in results} == {int(t["track_id"]) for t in tracks}
    cap = cv2.VideoCapture(str(out / "annotated.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 100
    scores = score_run(tiny_row, out)
    assert scores["idf1"] > 0.8 and scores["mota"] > 0.8, scores
    src = scores["sources"]  # exact boxes: every counted track is a bunch, in its vine
    assert src["unmatched"] == 0 and src["wrong_segment"] == 0, src
    assert src["matched"] == summary["total"]
    assert src["matched"] - src["duplicates"] + src["missed"] == truth["total"], src
    # A counted track moved to the other vine is seen as such.
    moved = next(t for t in tracks if t["counted"] == "1")
    other = next(n for n in truth["segments"] if n != moved["segment"])
    with open(out / "tracks.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(tracks[0]))
        w.writeheader()
        w.writerows([{**t, "segment": other} if t is moved else t for t in tracks])
    assert score_run(tiny_row, out)["sources"] == {**src, "wrong_segment": 1}
    assert not list(tmp_path.glob(".count*"))  # no temporaries left


def test_reid_writes_a_tracks_first_detections_under_its_id(tiny_row, tmp_path):
    """With re-identification a track is confirmed on its second detection: its first ones
    still reach tracks.csv and mot.txt under the id it got (results.json: -1)."""
    dets = coco_detections(tiny_row / "annotations.json")
    out = tmp_path / "count"
    s = TrackingSettings(min_frames=2, reid_gap=10)
    summary = count_video(cached(dets), tiny_row / "video.mp4", out, s,
                          segments_csv=tiny_row / "segments.csv", progress=False,
                          write_video=False)
    truth = json.loads((tiny_row / "truth.json").read_text())
    assert abs(summary["total"] - truth["total"]) <= 1, (summary, truth)
    tracks = {int(t["track_id"]): t for t in csv.DictReader(open(out / "tracks.csv"))}
    lines: dict[int, list[int]] = {}
    for line in (out / "mot.txt").read_text().splitlines():
        frame, tid = (int(float(v)) for v in line.split(",")[:2])
        lines.setdefault(tid, []).append(frame - 1)
    assert set(lines) == set(tracks)
    for tid, t in tracks.items():
        assert len(lines[tid]) == int(t["frames_seen"]), (tid, t)
        assert min(lines[tid]) == int(t["first_frame"])
    results = json.loads((out / "results.json").read_text())
    assert {r["track_id"] for r in results} - {-1} == set(tracks)
    assert len(results) == sum(len(d) for d in dets.values())


def test_error_sources_split_a_count_into_its_causes():
    # Bunches 10, 11 on vine a, 12 on vine b. Track 1 finds 10; tracks 2 and 3 both follow
    # 11 and were assigned to vine b; track 4 follows nothing; nobody finds 12.
    got = error_sources([(1, "a"), (2, "b"), (3, "b"), (4, "a")], {1: 10, 2: 11, 3: 11},
                        {10: "a", 11: "a", 12: "b"})
    assert got == {"matched": 3, "wrong_segment": 2, "duplicates": 1, "unmatched": 1,
                   "missed": 1}


def test_count_row_tool_runs_a_real_model(trained_model, tiny_row, tmp_path):
    """The tool's real path: Detectron2 model on every 2nd frame, tracker, all outputs."""
    out = tmp_path / "out"
    proc = run_tool("count_row.py", "--config-file", DEMO_CONFIG, "--video-input",
                    str(tiny_row / "video.mp4"), "--output", str(out), "--segments",
                    str(tiny_row / "segments.csv"), "--frame-step", "2", "--mm-per-px", "2",
                    "--confidence-threshold", "0.0", "MODEL.WEIGHTS", str(trained_model),
                    "INPUT.MIN_SIZE_TEST", "96", "TRACKING.MIN_FRAMES", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 100 and summary["processed_frames"] == 50
    rows = list(csv.reader(open(out / "counts.csv")))
    segs = [s.name for s in read_segments(tiny_row / "segments.csv")]
    assert [r[0] for r in rows[1:-1]] == list(dict.fromkeys(segs))
    assert rows[-1] == ["total", str(summary["total"])]
    assert f"{summary['total']} bunches" in proc.stdout and "frames/s" in proc.stdout
    tracks = list(csv.DictReader(open(out / "tracks.csv")))
    for t in tracks:  # --mm-per-px 2: metric size is twice the pixel size
        assert float(t["length_mm"]) == pytest.approx(2 * float(t["length_px"]), rel=1e-3)
    results = json.loads((out / "results.json").read_text())
    assert {r["frame_index"] % 2 for r in results} <= {0}


def _bad(tmp_path, video, *extra):
    return run_tool("count_row.py", "--config-file", DEMO_CONFIG, "--video-input", str(video),
                    "--output", str(tmp_path / "out"), *extra, "MODEL.WEIGHTS", "none.pth")


@pytest.mark.parametrize("kind", ["missing", "empty", "text"])
def test_bad_videos_are_one_line_and_write_nothing(tmp_path, kind):
    video = tmp_path / "row.mp4"
    if kind == "empty":
        video.write_bytes(b"")
    elif kind == "text":
        video.write_text("not a video\n" * 50)
    proc = _bad(tmp_path, video)
    assert_user_error(proc, "row.mp4")
    assert not (tmp_path / "out").exists()


def test_a_segment_file_beyond_the_video_is_one_line(tmp_path, tiny_row):
    seg = tmp_path / "s.csv"
    seg.write_text("segment,first_frame,last_frame\nv1,0,10\nv2,11,400\n")
    proc = _bad(tmp_path, tiny_row / "video.mp4", "--segments", str(seg))
    assert_user_error(proc, "beyond the video")
    assert not (tmp_path / "out").exists()


def test_a_failure_midway_leaves_no_partial_output(tiny_row, tmp_path):
    def broken(frame, index):
        if index == 5:
            raise GrapeInputError("model failed")
        return FrameDetections(np.zeros((0, 4)), np.zeros(0), [], np.zeros((0, 2), int))

    out = tmp_path / "out"
    with pytest.raises(GrapeInputError):
        count_video(broken, tiny_row / "video.mp4", out, TrackingSettings(), progress=False)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_depth_frames_give_metric_sizes(tiny_row, tmp_path):
    """--depth-video: a flat wall 2 m away seen with fx = fy = 200 px: 1 px = 10 mm."""
    depth = tmp_path / "depth"
    depth.mkdir()
    for f in range(0, 100, 5):
        cv2.imwrite(str(depth / f"{f:06d}.png"), np.full((96, 160), 2000, np.uint16))
    camera = tmp_path / "camera.json"
    camera.write_text('{"fx": 200, "fy": 200}')
    from grape_instances.measure.depth import Camera

    dets = coco_detections(tiny_row / "annotations.json")
    out = tmp_path / "out"
    count_video(cached(dets), tiny_row / "video.mp4", out, TrackingSettings(min_frames=1),
                frame_step=5, depth_dir=depth, camera=Camera.from_json(camera),
                write_video=False, progress=False)
    tracks = list(csv.DictReader(open(out / "tracks.csv")))
    assert tracks
    for t in tracks:
        assert float(t["median_depth_mm"]) == 2000
        assert float(t["length_mm"]) == pytest.approx(10 * float(t["length_px"]), rel=0.02)
        assert float(t["area_cm2"]) == pytest.approx(float(t["area_px"]), rel=0.02)
