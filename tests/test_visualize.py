"""tools/visualize.py draws overlays and writes COCO results for files, folders and globs."""

import json

import cv2
import pytest
from pycocotools import mask as mask_utils

from tests.helpers import DEMO_CONFIG, assert_user_error, run_tool


def test_visualize_writes_overlays_and_results(trained_model, tiny_synth, tmp_path):
    images = sorted((tiny_synth / "images" / "val").glob("*.jpg"))
    out = tmp_path / "vis"
    proc = run_tool(
        "visualize.py", "--config-file", DEMO_CONFIG,
        "--input", str(images[0]), str(tiny_synth / "images" / "train" / "train_0000[01].jpg"),
        "--output", str(out), "--confidence-threshold", "0.0",
        "--opts", "MODEL.WEIGHTS", str(trained_model), "INPUT.MIN_SIZE_TEST", "96",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    pngs = sorted(out.glob("*.png"))
    assert [p.stem for p in pngs] == sorted([images[0].stem, "train_00000", "train_00001"])
    for png in pngs:
        overlay = cv2.imread(str(png))
        assert overlay.shape[:2] == (128, 128)
    # At threshold 0 even the 4-iteration model keeps its best boxes after NMS: every input
    # gets detections (at most TEST.DETECTIONS_PER_IMAGE, 20), numbered in input order.
    results = json.loads((out / "coco_results.json").read_text())
    train = tiny_synth / "images" / "train"
    inputs = [images[0], train / "train_00000.jpg", train / "train_00001.jpg"]
    ids = {(r["image_id"], r["file_name"]) for r in results}
    assert ids == {(i, str(path)) for i, path in enumerate(inputs, start=1)}
    for image_id in (1, 2, 3):
        scores = [r["score"] for r in results if r["image_id"] == image_id]
        assert 1 <= len(scores) <= 20 and scores == sorted(scores, reverse=True)
    for r in results:
        assert r["category_id"] == 1 and 0.0 <= r["score"] <= 1.0
        x, y, w, h = r["bbox"]
        assert min(x, y, w, h) >= 0 and x + w <= 128 + 1e-3 and y + h <= 128 + 1e-3, r["bbox"]
        assert mask_utils.decode(r["segmentation"]).shape == (128, 128)


def test_visualize_folder_input(trained_model, tiny_synth, tmp_path):
    proc = run_tool(
        "visualize.py", "--config-file", DEMO_CONFIG, "--input", str(tiny_synth / "images" / "val"),
        "--output", str(tmp_path), "--opts", "MODEL.WEIGHTS", str(trained_model),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list(tmp_path.glob("*.png"))) == 4


def test_visualize_bad_inputs_are_one_line_errors(trained_model, tmp_path):
    proc = run_tool("visualize.py", "--config-file", DEMO_CONFIG, "--input",
                    str(tmp_path / "missing.jpg"), "--output", str(tmp_path / "o"),
                    "--opts", "MODEL.WEIGHTS", str(trained_model))
    assert_user_error(proc, "missing.jpg", "no such file")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    proc = run_tool("visualize.py", "--config-file", DEMO_CONFIG, "--input", str(broken),
                    "--output", str(tmp_path / "o"), "--opts", "MODEL.WEIGHTS", str(trained_model))
    assert_user_error(proc, "broken.jpg", "not a readable image")
    proc = run_tool("visualize.py", "--config-file", DEMO_CONFIG, "--input", str(broken),
                    "--output", str(tmp_path / "o"), "--opts", "MODEL.WEIGHTS",
                    str(tmp_path / "nope.pth"))
    assert_user_error(proc, "nope.pth", "not found")


def _vis(trained_model, *args: str, weights: bool = True):
    opts = ["--opts", "MODEL.WEIGHTS", str(trained_model)] if weights else []
    return run_tool("visualize.py", "--config-file", DEMO_CONFIG, *args, *opts)


@pytest.mark.slow
def test_visualize_refuses_random_weights(tiny_synth, tmp_path):
    image = sorted((tiny_synth / "images" / "val").glob("*.jpg"))[0]
    proc = _vis(None, "--input", str(image), "--output", str(tmp_path / "o"), weights=False)
    assert_user_error(proc, "MODEL.WEIGHTS is empty")
    assert not (tmp_path / "o").exists()


def test_visualize_never_writes_into_the_input_folder(trained_model, tiny_synth, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for src in sorted((tiny_synth / "images" / "val").glob("*.jpg"))[:2]:
        (photos / src.name.replace(".jpg", ".png")).write_bytes(
            cv2.imencode(".png", cv2.imread(str(src)))[1].tobytes())
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    proc = _vis(trained_model, "--input", str(photos), "--output", str(photos))
    assert_user_error(proc, "folder of the input")
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == before


def test_visualize_rerun_replaces_the_whole_output_folder(trained_model, tiny_synth, tmp_path):
    images = sorted((tiny_synth / "images" / "val").glob("*.jpg"))
    out = tmp_path / "vis"
    assert _vis(trained_model, "--input", *map(str, images[:3]), "--output", str(out)
                ).returncode == 0
    assert len(list(out.glob("*.png"))) == 3
    proc = _vis(trained_model, "--input", str(images[3]), "--output", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [p.name for p in out.glob("*.png")] == [f"{images[3].stem}.png"]  # no stale overlay
    assert {r["file_name"] for r in json.loads((out / "coco_results.json").read_text())} <= {
        str(images[3])}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left
    (out / "notes.txt").write_text("mine")
    assert_user_error(_vis(trained_model, "--input", str(images[0]), "--output", str(out)),
                      "notes.txt")


def test_visualize_output_file_for_one_input(trained_model, tiny_synth, tmp_path):
    images = sorted((tiny_synth / "images" / "val").glob("*.jpg"))
    proc = _vis(trained_model, "--input", str(images[0]), "--output", str(tmp_path / "one.png"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "one.png").is_file() and cv2.imread(str(tmp_path / "one.png")) is not None
    assert json.loads((tmp_path / "one_results.json").read_text()) is not None
    proc = _vis(trained_model, "--input", *map(str, images[:2]), "--output",
                str(tmp_path / "two.png"))
    assert_user_error(proc, "two.png", "give a folder")


def test_one_bad_image_does_not_stop_the_batch(trained_model, tiny_synth, tmp_path):
    images = sorted((tiny_synth / "images" / "val").glob("*.jpg"))[:2]
    broken = tmp_path / "in" / "broken.jpg"
    broken.parent.mkdir()
    broken.write_bytes(images[0].read_bytes()[:200])
    proc = _vis(trained_model, "--input", str(broken), *map(str, images),
                "--output", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.stem for p in (tmp_path / "o").glob("*.png")) == [p.stem for p in images]
    assert "broken.jpg" in proc.stdout + proc.stderr and "skipped 1 unreadable" in proc.stdout


def test_video_input_writes_an_annotated_video_and_counts(trained_model, tiny_synth, tmp_path):
    frames = [cv2.imread(str(p)) for p in sorted((tiny_synth / "images" / "val").glob("*.jpg"))]
    video = tmp_path / "row.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (128, 128))
    for frame in frames:
        writer.write(frame)
    writer.release()
    proc = _vis(trained_model, "--video-input", str(video), "--output", str(tmp_path / "out"),
                "--confidence-threshold", "0.0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = cv2.VideoCapture(str(tmp_path / "out" / "row.mp4"))
    assert int(out.get(cv2.CAP_PROP_FRAME_COUNT)) == len(frames)
    rows = (tmp_path / "out" / "row_counts.csv").read_text().splitlines()
    assert rows[0] == "frame,time_s,bunches" and len(rows) == len(frames) + 1
    assert rows[2].startswith("1,0.200,")


def _tiny_video(path, frames: int = 4):
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 64))
    for i in range(frames):
        writer.write(np.full((64, 64, 3), 40 * i, np.uint8))
    writer.release()


def test_an_interrupted_video_leaves_neither_file_nor_temporary(tmp_path, monkeypatch):
    """Ctrl-C on the third frame: no video, no counts CSV, no hidden temporary; a video
    already there from an earlier run is left whole (issue 18)."""
    import pytest

    from grape_instances.data.build import build_config
    from grape_instances.inference import writers as predict

    video = tmp_path / "row.avi"
    _tiny_video(video)
    out = tmp_path / "out"
    out.mkdir()
    (out / "row.mp4").write_bytes(b"earlier video")
    cfg = build_config(DEMO_CONFIG, ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "64",
                                     "INPUT.MAX_SIZE_TEST", "64"])
    real_draw, calls = predict.draw_predictions, []

    def draw_then_interrupt(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_draw(*args)

    monkeypatch.setattr(predict, "draw_predictions", draw_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        predict.visualize_video(cfg, video, out, allow_random_weights=True)
    assert sorted(p.name for p in out.iterdir()) == ["row.mp4"]
    assert (out / "row.mp4").read_bytes() == b"earlier video"
    monkeypatch.undo()
    done = predict.visualize_video(cfg, video, out, allow_random_weights=True)
    assert done["frames"] == 4
    assert sorted(p.name for p in out.iterdir()) == ["row.mp4", "row_counts.csv"]


def test_visualize_runs_the_photo_loader_and_draws_what_the_predictor_draws(
        sharp_model, tiny_synth, tmp_path, monkeypatch):
    """A folder goes through tools/predict.py's photo loader (which decodes every photo; on a
    CPU in this process, batch.default_workers): the overlays, results and predicted-images
    list are byte for byte those of the Predictor called photo by photo, and an undecodable
    photo among them is a counted warning, not a stop (issue 17)."""
    import os

    import numpy as np
    from detectron2.evaluation.coco_evaluation import instances_to_coco_json

    from grape_instances.convert.predictions import (
        predicted_images_file,
        predicted_images_record,
    )
    from grape_instances.core.images import expand_inputs
    from grape_instances.inference.batch import UNDECODABLE
    from grape_instances.inference.draw import draw_predictions
    from grape_instances.inference.predictor import Predictor, prediction_config
    from grape_instances.inference.writers import category_ids_of, visualize_files
    from tests.helpers import photo_by_photo, photos_with_a_broken_one, record_decoding_processes

    photos = photos_with_a_broken_one(tiny_synth, tmp_path / "photos")
    cfg = prediction_config(DEMO_CONFIG, ["MODEL.WEIGHTS", str(sharp_model), "INPUT.MIN_SIZE_TEST",
                                          "96", "INPUT.MAX_SIZE_TEST", "128"],
                            confidence_threshold=0.05)
    inputs = expand_inputs([str(tmp_path / "photos")])
    assert inputs == photos and inputs[2].name == "p3.jpg"
    record_decoding_processes(monkeypatch, tmp_path / "decoders.txt")
    np.random.seed(0)  # Detectron2's Visualizer draws instance colours from numpy's generator
    summary = visualize_files(cfg, inputs, tmp_path / "vis")
    decoders = (tmp_path / "decoders.txt").read_text().split()
    assert len(decoders) == len(inputs) and set(decoders) == {str(os.getpid())}
    assert summary["warnings"] == {UNDECODABLE: 1}
    assert len(summary["skipped"]) == 1 and "p3.jpg" in summary["skipped"][0]

    predictor = Predictor(cfg)
    ids = category_ids_of(predictor.metadata)
    overlays, results, predicted = {}, [], []
    done = photo_by_photo(predictor, inputs)
    np.random.seed(0)
    for image_id, path, image, outputs in done:
        overlays[f"{path.stem}.png"] = cv2.imencode(
            ".png", draw_predictions(image, outputs, predictor.metadata))[1].tobytes()
        for r in instances_to_coco_json(outputs["instances"], image_id):
            results.append({**r, "file_name": str(path),
                            "category_id": ids.get(r["category_id"], r["category_id"] + 1)})
        predicted.append((image_id, str(path), *image.shape[:2]))
    assert len(overlays) == len(inputs) - 1 and len(results) >= len(overlays)
    out = tmp_path / "vis"
    assert json.loads((out / "coco_results.json").read_text()) == json.loads(json.dumps(results))
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == overlays
    assert json.loads(predicted_images_file(out / "coco_results.json").read_text()) == \
        json.loads(json.dumps(predicted_images_record(
            predicted, predictor.metadata.get("thing_classes") or [])))
