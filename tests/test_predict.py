"""tools/predict.py: batch prediction over a folder tree, resumable, on one or two processes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from pycocotools import mask as mask_utils

from tests.helpers import DEMO_CONFIG, REPO, assert_user_error, run_tool

FILES = ("results.json", "summary.json", "bunches.csv", "bunches_images.csv",
         "bunches_folders.csv", "bunches_images.json")


@pytest.fixture(scope="module")
def season(tiny_synth, tmp_path_factory):
    """A season tree: vine_a/row_1, vine_a/row_2, vine_b (30 photos) and one broken photo."""
    root = tmp_path_factory.mktemp("season") / "photos"
    photos = sorted((tiny_synth / "images").glob("*/*.jpg"))
    folders = ["vine_a/row_1", "vine_a/row_2", "vine_b"]
    for n in range(30):
        target = root / folders[n % 3] / f"p{n:02d}{photos[n % len(photos)].suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(photos[n % len(photos)], target)
    (root / "vine_b" / "broken.jpg").write_bytes(b"not a jpeg")
    return root


def predict_args(sharp_model, season, out, *extra):
    return ["--config-file", DEMO_CONFIG, "--input", str(season), "--output", str(out),
            "--confidence-threshold", "0.05", "--threads", "1", "--workers", "1",
            "--no-progress", *extra, "MODEL.WEIGHTS", str(sharp_model),
            "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128"]


@pytest.fixture(scope="module")
def single_run(sharp_model, season, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "out"
    proc = run_tool("predict.py", *predict_args(sharp_model, season, out, "--measure",
                                                "--shard-size", "4"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_predict_writes_results_tables_and_keeps_layout(single_run, season, tmp_path):
    out, proc = single_run
    results = json.loads((out / "results.json").read_text())
    photos = sorted(p.relative_to(season).as_posix() for p in season.rglob("*.jpg"))
    assert len(photos) == 31
    # image ids are positions in the sorted list; file names relative to --input
    assert {(r["image_id"], r["file_name"]) for r in results} <= {
        (i, name) for i, name in enumerate(photos, start=1)}
    # every decodable photo predicted (summary below); the sharpened 4-iteration model (its
    # class scores raised: detections whatever 4 iterations learnt) finds bunches in every folder
    names = {r["file_name"] for r in results}
    assert names <= set(photos) - {"vine_b/broken.jpg"}
    assert {n.rsplit("/", 1)[0] for n in names} == {"vine_a/row_1", "vine_a/row_2", "vine_b"}
    assert all(r["category_id"] == 1 and r["score"] > 0.05 for r in results)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["photos"] == 31 and summary["predicted"] == 30
    assert summary["warnings"]["undecodable photos (skipped)"] == 1
    assert [s["file_name"] for s in summary["skipped"]] == ["vine_b/broken.jpg"]
    assert "30 of 31 photos predicted" in proc.stdout
    # the measure package's tables: one row per bunch (non-empty mask), per photo, per folder
    folders = (out / "bunches_folders.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in folders[1:]] == ["vine_a/row_1", "vine_a/row_2",
                                                           "vine_b"]
    bunch_rows = (out / "bunches.csv").read_text().splitlines()[1:]
    nonempty = sum(int(mask_utils.area(r["segmentation"])) > 0 for r in results)
    assert len(bunch_rows) == nonempty  # a mask may be empty: not measured, counted
    assert summary["warnings"].get("empty masks (not measured)", 0) == len(results) - nonempty
    # measure.py reads the results file as it is (file names relative to the photo root)
    proc = run_tool("measure.py", "--coco", str(out / "results.json"), "--images", str(season),
                    "--out", str(tmp_path / "m.csv"), "--confidence-threshold", "0.05")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len((tmp_path / "m.csv").read_text().splitlines()) == len(bunch_rows) + 1


def test_killed_run_resumes_to_the_same_files(single_run, sharp_model, season, tmp_path):
    out = tmp_path / "out"
    args = predict_args(sharp_model, season, out, "--measure", "--shard-size", "2")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(REPO / "tools" / "predict.py"), *args],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    first = out / ".shards" / "shard_000000.json"
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # the tool and its loader worker
    proc.wait()
    shards = sorted((out / ".shards").glob("shard_*.json"))
    assert 1 <= len(shards) < 16 and not (out / "results.json").exists()
    for shard in shards:  # complete or absent: every shard there parses
        json.loads(shard.read_text())
    done = sum(len(json.loads(s.read_text())["photos"]) for s in shards)
    again = run_tool("predict.py", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed: {done} photo(s) already done were skipped" in again.stdout
    for name in FILES:
        assert (out / name).read_bytes() == (single_run[0] / name).read_bytes(), name
    # a third run has nothing left to do and writes the same files again
    third = run_tool("predict.py", *args)
    assert "resumed: 31 photo(s) already done" in third.stdout


def test_two_processes_give_the_single_process_files(single_run, sharp_model, season,
                                                     tmp_path):
    out = tmp_path / "out"
    proc = run_tool("predict.py", *predict_args(sharp_model, season, out, "--measure",
                                                 "--shard-size", "4", "--num-gpus", "2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "by 2 processes" in proc.stdout
    shards = sorted((out / ".shards").glob("shard_*.json"))
    assert len(shards) == 8
    for name in FILES:
        assert (out / name).read_bytes() == (single_run[0] / name).read_bytes(), name


def test_bad_inputs_are_one_line_errors(sharp_model, season, tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("no photos")
    proc = run_tool("predict.py", *predict_args(sharp_model, empty, tmp_path / "o"))
    assert_user_error(proc, "no photos")
    proc = run_tool("predict.py", *predict_args(sharp_model, season, season / "vine_b" / "o"))
    assert_user_error(proc, "inside the input tree")
    assert not (season / "vine_b" / "o").exists()
    proc = run_tool("predict.py", *predict_args(sharp_model, season, tmp_path / "o",
                                                "--runtime", "onnx"))
    assert_user_error(proc, "--exported")
    assert not (tmp_path / "o").exists()


def test_photo_measurements_use_the_measure_package():
    import numpy as np
    import torch
    from detectron2.structures import Boxes, Instances

    from grape_instances.core.warning_counter import WarningCounter
    from grape_instances.inference.batch import Prediction, photo_measurements, photo_results

    class FakeRuntime:
        metadata = {"thing_classes": ["bunch"]}
        category_ids = [7]

    image = np.full((40, 60, 3), 90, np.uint8)
    masks = torch.zeros((2, 40, 60), dtype=torch.bool)
    masks[0, 5:15, 10:30] = True  # 10 x 20 px; the second mask is empty
    inst = Instances((40, 60), pred_masks=masks, scores=torch.tensor([0.9, 0.4]),
                     pred_classes=torch.tensor([0, 0]),
                     pred_boxes=Boxes(torch.tensor([[10.0, 5, 30, 15], [0, 0, 1, 1]])))
    pred = Prediction(4, None, image, {"instances": inst}, None, 0.0, 0.0)
    warnings = WarningCounter()
    rows, image_row = photo_measurements(pred, "vine/row/p.jpg", FakeRuntime(), warnings)
    assert [(r["instance"], r["area_px"], r["folder"]) for r in rows] == [(1, 200, "vine/row")]
    assert image_row["bunches"] == 1 and image_row["area_px"] == 200
    assert warnings.as_dict() == {"empty masks (not measured)": 1}
    results = photo_results(pred, "vine/row/p.jpg", FakeRuntime())
    assert [(r["image_id"], r["category_id"], r["file_name"]) for r in results] == [
        (5, 7, "vine/row/p.jpg")] * 2


LOADER_AFTER_OPENCV = """
import sys, time
from pathlib import Path

import cv2
import numpy as np
import torch

from grape_instances.inference.batch import iter_predictions

big = np.random.default_rng(0).integers(0, 255, (3000, 3000, 3), np.uint8)
for _ in range(3):
    cv2.warpAffine(big, np.float32([[1, 0.1, 3], [0.1, 1, 4]]), (3000, 3000))
time.sleep(0.5)  # OpenCV's pool threads now wait on their condition variable


class Sizes:
    def prepare(self, image):
        return {"image": torch.zeros(1), "height": image.shape[0], "width": image.shape[1]}

    def run(self, inputs):
        return [{"size": [x["height"], x["width"]]} for x in inputs]


paths = [Path(p) for p in sys.argv[1:]]
print([p.outputs["size"] for p in iter_predictions(Sizes(), paths, workers=2)])
"""


def test_the_photo_loader_runs_in_a_process_that_used_opencv_threads(tmp_path):
    """visualize and measure start the loader in processes that have drawn with OpenCV (a
    training run's experiments, the test suite): its forked workers must not touch OpenCV,
    whose thread pool the fork copies mid-wait (cv2.setNumThreads there hung for ever)."""
    import cv2
    import numpy as np

    paths = []
    for n in range(3):
        paths.append(str(tmp_path / f"p{n}.png"))
        cv2.imwrite(paths[-1], np.zeros((20 + n, 30, 3), np.uint8))
    proc = subprocess.Popen([sys.executable, "-c", LOADER_AFTER_OPENCV, *paths], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)},
                            start_new_session=True)  # its hung workers go with it
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the photo loader hung: a forked worker waits for ever")
    assert proc.returncode == 0, err[-2000:]
    assert out.strip() == "[[20, 30], [21, 30], [22, 30]]"


def test_loader_workers_default_to_none_on_cpu_and_two_on_a_gpu():
    """On a CPU the model's threads take every core and a decoding worker only competes with
    them (README "Predict a season"); a GPU leaves the CPU free to decode ahead."""
    from types import SimpleNamespace

    import torch

    from grape_instances.inference.batch import default_workers

    assert default_workers(SimpleNamespace(device=torch.device("cpu"))) == 0
    assert default_workers(SimpleNamespace(device=torch.device("cuda", 0))) == 2
