"""The pretraining ablation: budget arithmetic, and the whole tool on four shared photos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from grape_instances.core.errors import GrapeInputError
from grape_instances.experiments.pretrain import finetune_iterations, scaled_schedule
from grape_instances.experiments.real import training_seconds
from tests.helpers import REAL_DATA, assert_user_error, run_tool

REAL = REAL_DATA
PHOTOS = ("CDY_2017", "CDY_2019", "SVB_1946", "SVB_1947")


def test_finetune_fills_what_rendering_and_pretraining_left_of_the_budget():
    # 2,654 s scratch run of 1,800 it (1.4744 s/it); 100 s rendering, 900 s pretraining.
    assert finetune_iterations(2654.0, 100.0, 900.0, 2654.0 / 1800) == 1122
    with pytest.raises(GrapeInputError, match=r"whole budget \(1000 s\): pretrain for fewer"):
        finetune_iterations(1000.0, 100.0, 900.0, 1.0)


def test_schedule_keeps_the_recipe_lr_drops_at_the_same_fractions():
    assert scaled_schedule((1400, 1700), 1800, 1200) == (933, 1133)
    assert scaled_schedule((1400, 1700), 1800, 3) == (2, 3)
    assert scaled_schedule((), 1800, 600) == ()


def test_training_seconds_reads_the_record_else_detectron2s_last_total_line(tmp_path):
    assert training_seconds(tmp_path) is None
    (tmp_path / "log.txt").write_text(
        "[11/30 06:55:29] d2.engine.hooks INFO: Total training time: 0:00:07 (0:00:00 on hooks)\n"
        "[11/30 07:55:29] d2.engine.hooks INFO: Total training time: 1:44:14 (0:00:01 on hooks)\n")
    assert training_seconds(tmp_path) == 6254.0
    (tmp_path / "training_time.json").write_text('{"iterations": 4, "seconds": 12.5}')
    assert training_seconds(tmp_path) == 12.5  # the run's own record wins
    (tmp_path / "training_time.json").unlink()
    (tmp_path / "log.txt").write_text("killed before the end\n")
    assert training_seconds(tmp_path) is None


def _tiny_wgisd(root: Path) -> Path:
    """Four shared photos (two varieties, so the stratified split has both in each part)."""
    data = root / "data"
    data.mkdir(parents=True)
    for stem in PHOTOS:
        for suffix in (".jpg", ".txt", ".npz"):
            (data / f"{stem}{suffix}").symlink_to(REAL / "data" / f"{stem}{suffix}")
    (root / "train_masked.txt").write_text("\n".join(PHOTOS) + "\n")
    return root


def _distance(a: dict, b: dict) -> float:
    return sum(float(((a[k].float() - b[k].float()) ** 2).sum())
               for k in a if a[k].is_floating_point()) ** 0.5


TINY_REAL = ["INPUT.SCALE_CROP.TARGET_SIZE", "(128, 128)", "INPUT.SCALE_CROP.CROP_SIZE",
             "(64, 64)", "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "128",
             "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "()",
             "SOLVER.WARMUP_ITERS", "1", "DATALOADER.NUM_WORKERS", "0"]


@pytest.mark.slow
@pytest.mark.shared("real-data/wgisd-train")
def test_tool_pretrains_on_vineyard_rows_then_fine_tunes_from_that_checkpoint(tmp_path):
    root, out = _tiny_wgisd(tmp_path / "wgisd"), tmp_path / "out"
    args = ["--root", str(root), "--scratch-dir", str(tmp_path / "scratch"),
            "--output-dir", str(out), "--data-dir", str(tmp_path / "vineyard"),
            "--real-data-dir", str(tmp_path / "real"), "--images", "3",
            "--pretrain-iters", "3", "--finetune-iters", "2", *TINY_REAL]
    proc = run_tool("pretrain_ablation.py", *args, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((out / "pretrain_summary.json").read_text())
    pre = summary["pretrained"]
    assert summary["scratch"]["iterations"] == 2 and summary["budget_filled"] is False
    assert (pre["pretrain_iterations"], pre["finetune_iterations"], pre["images"]) == (3, 2, 3)
    assert summary["budget_s"] >= 0 and pre["pretrain_s"] >= 0 and pre["render_s"] > 0
    for arm in (summary["scratch"], pre):
        assert {"whole", "tiled"} <= set(arm["results"]) and "segm" in arm["results"]["whole"]
    assert "segm" in pre["zero_shot"] and "instance" in pre["zero_shot"]
    # The pretraining ran on the rendered rows, for its own iteration count ...
    coco = json.loads((tmp_path / "vineyard" / "annotations" / "instances_train.json")
                      .read_text())
    assert len(coco["images"]) == 3 and coco["images"][0]["width"] == 1024
    synthetic = torch.load(out / "synthetic" / "model_final.pth", map_location="cpu",
                           weights_only=False)
    assert synthetic["iteration"] == 2  # 3 iterations: 0, 1, 2
    # ... and the fine-tune started from that checkpoint, not from random weights: two small
    # steps away from it, while the scratch run is a whole random init away.
    finetuned = torch.load(out / "finetune" / "model_final.pth", map_location="cpu",
                           weights_only=False)["model"]
    scratch = torch.load(tmp_path / "scratch" / "model_final.pth", map_location="cpu",
                         weights_only=False)["model"]
    assert _distance(finetuned, synthetic["model"]) < 0.01 * _distance(scratch, synthetic["model"])
    assert (proc.stdout + proc.stderr).count("Starting training") == 3
    assert "synthetic + fine-tune, tiles" in proc.stdout and "CPU min" in proc.stdout

    # A rerun reuses the rendered rows and every finished run: nothing is trained again.
    proc = run_tool("pretrain_ablation.py", *args, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Starting training" not in proc.stdout + proc.stderr
    assert "synthesize vineyard" not in proc.stderr


@pytest.mark.slow
def test_a_missing_wgisd_root_is_one_line_before_anything_trains(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    proc = run_tool("pretrain_ablation.py", "--root", str(tmp_path / "missing"),
                    "--scratch-dir", str(scratch), "--output-dir", str(tmp_path / "out"))
    assert_user_error(proc, str(tmp_path / "missing"))
    assert not (tmp_path / "out").exists() and not any(scratch.iterdir())
