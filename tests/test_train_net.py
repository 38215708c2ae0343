"""tools/train_net.py end to end on tiny synthetic images: train, eval, resume, 2 processes."""

import contextlib
import io
import json
import math
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tests.helpers import DEMO_CONFIG, REPO, assert_user_error, run_tool, tiny_training_opts

SEGNET_CPU_CONFIG = str(REPO / "configs" / "semantic" / "segnet_grapes_cpu_demo.yaml")


@pytest.fixture
def trained(trained_run):
    return trained_run


def test_training_writes_detectron2_outputs(trained):
    out, _ = trained
    for name in ("model_final.pth", "last_checkpoint", "metrics.json", "config.yaml"):
        assert (out / name).is_file(), name
    assert list(out.glob("events.out.tfevents.*")), "no TensorBoard events"
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert any("total_loss" in m for m in metrics)
    assert all(torch.isfinite(torch.tensor(m["total_loss"])) for m in metrics if "total_loss" in m)
    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert any(k.startswith("roi_heads.mask_head") for k in state["model"])


def check_coco_results(results: list[dict], gt_json, score_thresh: float,
                       per_image: int) -> None:
    """Every detection names a ground-truth image and category, scores at least the
    threshold, and its box and mask fit that image; at most ``per_image`` per image."""
    gt = json.loads(gt_json.read_text())
    images = {i["id"]: i for i in gt["images"]}
    categories = {c["id"] for c in gt["categories"]}
    for r in results:
        image = images[r["image_id"]]  # KeyError: an id that is not in the GT
        assert r["category_id"] in categories, r["category_id"]
        assert score_thresh <= r["score"] <= 1.0, r["score"]
        x, y, w, h = r["bbox"]
        assert x >= 0 and y >= 0 and w >= 0 and h >= 0, r["bbox"]
        assert x + w <= image["width"] + 1e-3 and y + h <= image["height"] + 1e-3, r["bbox"]
        assert r["segmentation"]["size"] == [image["height"], image["width"]]
        mask_utils.decode(r["segmentation"])  # a valid RLE
    counts = Counter(r["image_id"] for r in results)
    assert max(counts.values(), default=0) <= per_image, counts


def logged_metrics(log: str, task: str) -> dict[str, float]:
    """The ``copypaste`` lines Detectron2 logs for ``task`` as {metric: value}."""
    lines = [ln.split("copypaste: ", 1)[1] for ln in log.splitlines() if "copypaste: " in ln]
    at = lines.index(f"Task: {task}")
    return dict(zip(lines[at + 1].split(","), map(float, lines[at + 2].split(",")), strict=True))


def test_training_ends_with_coco_evaluation(trained, tiny_synth):
    out, proc = trained
    log = proc.stderr + proc.stdout
    assert "Start inference on 4 batches" in log
    results = json.loads((out / "inference" / "coco_instances_results.json").read_text())
    gt_json = tiny_synth / "annotations" / "instances_val.json"
    check_coco_results(results, gt_json, score_thresh=0.05, per_image=20)
    # The logged segm AP is the one pycocotools gives the written results on the images
    # that were predicted (LoadedImagesCOCOEvaluator); NaN when nothing was predicted.
    logged = logged_metrics(log, "segm")["AP"]
    if not results:
        assert math.isnan(logged)
        return
    gt = COCO(str(gt_json))
    evaluation = COCOeval(gt, gt.loadRes(results), "segm")
    evaluation.params.imgIds = sorted({r["image_id"] for r in results})
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert logged == pytest.approx(max(evaluation.stats[0], 0.0) * 100, abs=1e-3)


@pytest.mark.slow
def test_eval_only_on_checkpoint(trained, tiny_synth, tmp_path):
    out, _ = trained
    opts = tiny_training_opts(tiny_synth, tmp_path / "eval")
    proc = run_tool("train_net.py", "--config-file", DEMO_CONFIG, "--eval-only", *opts,
                    "MODEL.WEIGHTS", str(out / "model_final.pth"),
                    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    assert "Start inference on 4 batches" in log
    # At score threshold 0 even a 4-iteration model keeps its best boxes after NMS: every
    # val image gets detections, up to TEST.DETECTIONS_PER_IMAGE (20).
    results = json.loads(
        (tmp_path / "eval" / "inference" / "coco_instances_results.json").read_text())
    gt_json = tiny_synth / "annotations" / "instances_val.json"
    check_coco_results(results, gt_json, score_thresh=0.0, per_image=20)
    assert {r["image_id"] for r in results} == {1, 2, 3, 4}
    assert not (tmp_path / "eval" / "model_final.pth").exists()


@pytest.mark.slow
def test_resume_continues_an_interrupted_run(tiny_synth, tmp_path):
    out = tmp_path / "resume"
    cmd = [sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file", DEMO_CONFIG,
           *tiny_training_opts(tiny_synth, out, max_iter=1000)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not (out / "last_checkpoint").is_file() and time.time() < deadline:
            time.sleep(0.5)
        assert (out / "last_checkpoint").is_file(), "no checkpoint written before the deadline"
        time.sleep(0.5)  # let the rename of the checkpoint finish
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    saved = (out / "last_checkpoint").read_text().strip()
    saved_iter = int(re.search(r"model_(\d+)\.pth", saved).group(1))
    assert not (out / "model_final.pth").exists()

    resumed = run_tool("train_net.py", "--config-file", DEMO_CONFIG, "--resume",
                       *tiny_training_opts(tiny_synth, out, max_iter=saved_iter + 3),
                       "TEST.EVAL_PERIOD", "0")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    log = resumed.stdout + resumed.stderr
    assert f"Starting training from iteration {saved_iter + 1}" in log
    assert (out / "model_final.pth").is_file()


@pytest.mark.slow
def test_two_processes_through_launch(tiny_synth, tmp_path):
    out = tmp_path / "ddp"
    proc = run_tool("train_net.py", "--config-file", DEMO_CONFIG, "--num-gpus", "2",
                    *tiny_training_opts(tiny_synth, out, max_iter=2), timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    assert "Rank of current process: 0. World size: 2" in log
    assert (out / "model_final.pth").is_file()


@pytest.mark.slow
def test_semantic_baseline_in_two_processes(tiny_synth, tmp_path):
    """SegNet (the cheapest baseline) through DDP: one image per process, and the evaluation
    gathers the semantic predictions of both ranks."""
    out = tmp_path / "ddp_segnet"
    proc = run_tool("train_net.py", "--config-file", SEGNET_CPU_CONFIG, "--num-gpus", "2",
                    *tiny_training_opts(tiny_synth, out, max_iter=2), timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    assert "Rank of current process: 0. World size: 2" in log
    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert "backbone.conv1_1.weight" in state["model"] and state["iteration"] == 1
    mean_iou = logged_metrics(log, "sem_seg")["mIoU"]
    assert 0.0 <= mean_iou <= 100.0
    predicted = json.loads((out / "inference" / "sem_seg_predictions.json").read_text())
    assert sorted({Path(p["file_name"]).name for p in predicted}) == [
        f"val_0000{i}.jpg" for i in range(4)]


@pytest.mark.parametrize("outcome", ["finished", "failed"])
def test_each_process_leaves_its_process_group(outcome, tmp_path, monkeypatch):
    """A worker destroys its process groups whether its run finished or failed: left to
    interpreter teardown, gloo sometimes aborts a finished process (SIGABRT), as seen in CI."""
    import torch.distributed as dist

    from grape_instances.engine import trainer as engine

    def run(args, cfg, notes):
        if outcome == "failed":
            raise RuntimeError("training failed")
        return {"segm": {"AP": 1.0}}

    monkeypatch.setattr(engine, "_train_or_evaluate", run)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        if outcome == "failed":
            with pytest.raises(RuntimeError, match="training failed"):
                engine.train_or_evaluate(None)
        else:
            assert engine.train_or_evaluate(None) == {"segm": {"AP": 1.0}}
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.slow
def test_missing_config_is_one_line_error(tmp_path):
    proc = run_tool("train_net.py", "--config-file", str(tmp_path / "nope.yaml"))
    assert_user_error(proc, "nope.yaml", "not found")


@pytest.mark.parametrize("tool, args", [
    ("train_net.py", ["--config-file", "nope.yaml"]),
    ("visualize.py", ["--config-file", "nope.yaml", "--input", "x.jpg", "--output", "o"]),
    ("measure.py", ["--config-file", "nope.yaml", "--input", "x.jpg", "--out", "t.csv"]),
])
def test_a_one_line_error_is_the_only_line(tool, args, tmp_path):
    """No torch.jit FutureWarning from Detectron2's imports before the error (issue 18:
    it was printed twice)."""
    proc = run_tool(tool, *[str(tmp_path / a) if a.startswith("nope") else a for a in args])
    assert_user_error(proc, "nope.yaml")
    assert proc.stderr.strip().splitlines() == [
        ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")], proc.stderr


@pytest.mark.slow
def test_unknown_dataset_is_one_line_error(tiny_synth, tmp_path):
    proc = run_tool("train_net.py", "--config-file", DEMO_CONFIG, "--eval-only",
                    *tiny_training_opts(tiny_synth, tmp_path), "DATASETS.TEST", "('no_such_set',)")
    assert_user_error(proc, "no_such_set")


@pytest.mark.slow
def test_missing_image_is_one_line_error(tiny_synth, tmp_path):
    import shutil

    root = tmp_path / "synth"
    shutil.copytree(tiny_synth, root)
    victim = sorted((root / "images" / "train").glob("*.jpg"))[0]
    victim.unlink()
    proc = run_tool("train_net.py", "--config-file", DEMO_CONFIG,
                    *tiny_training_opts(root, tmp_path / "out"))
    assert_user_error(proc, victim.name, "not found")


def test_config_is_built_and_datasets_registered_once(trained_model, tiny_synth, tmp_path,
                                                      monkeypatch):
    """The launching process builds and checks the config; a one-process run uses that very
    config instead of building it (and registering the datasets) a second time."""
    import runpy

    from grape_instances.engine import trainer as engine

    calls = {"build_config": 0, "register_from_config": 0}

    def counted(name):
        original = getattr(engine, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)

        return wrapper

    from grape_instances.data import build
    from grape_instances.engine import checks

    for name in calls:
        wrapper = counted(name)
        # where each is called: train_net.py (data.build), the checks, the worker's setup
        for module in (engine, checks, build):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, wrapper)
    monkeypatch.setattr(sys, "argv", [
        "train_net.py", "--config-file", DEMO_CONFIG, "--eval-only",
        *tiny_training_opts(tiny_synth, tmp_path / "eval"), "MODEL.WEIGHTS", str(trained_model)])
    runpy.run_path(str(REPO / "tools" / "train_net.py"), run_name="__main__")
    assert calls == {"build_config": 1, "register_from_config": 1}
    assert (tmp_path / "eval" / "inference" / "coco_instances_results.json").is_file()


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_a_mask_rcnn_run_writes_only_into_output_dir(tiny_synth, tmp_path):
    """Training plus evaluation (which scores instance models as semantic maps too), started
    in an empty working folder with the default label-map cache: nothing appears there,
    nothing in the dataset folder changes; the cache lives in OUTPUT_DIR (issue 18)."""
    cwd, out = tmp_path / "cwd", tmp_path / "out"
    cwd.mkdir()
    opts = [o for pair in zip(*[iter(tiny_training_opts(tiny_synth, out, max_iter=2))] * 2,
                              strict=True)
            if pair[0] != "DATASETS.SEMANTIC_CACHE_DIR" for o in pair]
    before = _snapshot(tiny_synth)
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "train_net.py"),
                           "--config-file", DEMO_CONFIG, *opts], cwd=cwd, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in cwd.iterdir()) == []
    assert _snapshot(tiny_synth) == before
    assert list((out / "semantic_cache").rglob("*.png"))  # the maps evaluation derived


def test_flags_and_defaults_are_detectron2s():
    """train_net.py builds its parser without importing Detectron2 (a fast --help); it must
    still take Detectron2's flags with Detectron2's defaults."""
    import runpy

    from detectron2.engine import default_argument_parser

    tool = runpy.run_path(str(REPO / "tools" / "train_net.py"), run_name="train_net_flags")
    ours = {a.dest: a.default for a in tool["argument_parser"]()._actions}
    theirs = {a.dest: a.default for a in default_argument_parser()._actions}
    assert ours == theirs
