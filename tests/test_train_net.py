"""tools/train_net.py end to end on tiny synthetic images: train, eval, resume, 2 processes."""

import json
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.helpers import DEMO_CONFIG, REPO, assert_user_error, run_tool, tiny_training_opts


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


def test_training_ends_with_coco_evaluation(trained):
    out, proc = trained
    results = json.loads((out / "inference" / "coco_instances_results.json").read_text())
    assert isinstance(results, list)
    assert "Start inference on 4 batches" in proc.stderr + proc.stdout


def test_eval_only_on_checkpoint(trained, tiny_synth, tmp_path):
    out, _ = trained
    opts = tiny_training_opts(tiny_synth, tmp_path / "eval")
    proc = run_tool("train_net.py", "--config-file", DEMO_CONFIG, "--eval-only", *opts,
                    "MODEL.WEIGHTS", str(out / "model_final.pth"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    assert "Start inference on 4 batches" in log
    assert (tmp_path / "eval" / "inference" / "coco_instances_results.json").is_file()
    assert not (tmp_path / "eval" / "model_final.pth").exists()


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


def test_two_processes_through_launch(tiny_synth, tmp_path):
    out = tmp_path / "ddp"
    proc = run_tool("train_net.py", "--config-file", DEMO_CONFIG, "--num-gpus", "2",
                    *tiny_training_opts(tiny_synth, out, max_iter=2), timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    assert "Rank of current process: 0. World size: 2" in log
    assert (out / "model_final.pth").is_file()


def test_missing_config_is_one_line_error(tmp_path):
    proc = run_tool("train_net.py", "--config-file", str(tmp_path / "nope.yaml"))
    assert_user_error(proc, "nope.yaml", "not found")


def test_unknown_dataset_is_one_line_error(tiny_synth, tmp_path):
    proc = run_tool("train_net.py", "--config-file", DEMO_CONFIG, "--eval-only",
                    *tiny_training_opts(tiny_synth, tmp_path), "DATASETS.TEST", "('no_such_set',)")
    assert_user_error(proc, "no_such_set")


def test_missing_image_is_one_line_error(tiny_synth, tmp_path):
    import shutil

    root = tmp_path / "synth"
    shutil.copytree(tiny_synth, root)
    victim = sorted((root / "images" / "train").glob("*.jpg"))[0]
    victim.unlink()
    proc = run_tool("train_net.py", "--config-file", DEMO_CONFIG,
                    *tiny_training_opts(root, tmp_path / "out"))
    assert_user_error(proc, victim.name, "image not found")
