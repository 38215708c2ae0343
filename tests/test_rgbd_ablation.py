"""The RGB / RGB-D ablation driver (tools/rgbd_ablation.py): measured depth normalisation,
two variants that differ only in the depth input, and a table a user can rerun."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from grape_instances.core.errors import GrapeInputError
from grape_instances.experiments.rgbd import depth_statistics, variant_config
from tests.helpers import REPO, assert_user_error, run_tool

RGBD_CONFIG = str(REPO / "configs" / "mask_rcnn_grapes_rgbd_cpu_demo.yaml")


def test_depth_statistics_leave_out_holes_and_clip_far_readings(tmp_path):
    images = []
    for i, values in enumerate(([0, 1000, 1000, 2000], [0, 0, 500, 9000])):
        depth = np.array(values, np.uint16).reshape(2, 2)
        (tmp_path / "depth").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / "depth" / f"{i}.png"), depth)
        images.append({"id": i, "file_name": f"images/{i}.jpg", "height": 2, "width": 2,
                       "depth_file": f"depth/{i}.png"})
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"images": images, "annotations": [], "categories": []}))
    st = depth_statistics(coco, tmp_path, max_mm=3000)
    valid = np.array([1000, 1000, 2000, 500, 3000], float)  # 9000 clipped, zeros left out
    assert st["images"] == 2 and st["hole_fraction"] == pytest.approx(3 / 8)
    assert st["mean_mm"] == pytest.approx(valid.mean())
    assert st["std_mm"] == pytest.approx(valid.std())
    coco.write_text(json.dumps({"images": [{**images[0], "depth_file": None}]}))
    with pytest.raises(GrapeInputError, match="no image entry names a depth_file"):
        depth_statistics(coco, tmp_path, max_mm=3000)


def flat(cfg, prefix: str = "") -> dict:
    out = {}
    for key, value in cfg.items():
        if hasattr(value, "items"):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_the_variants_differ_only_in_the_depth_input(tmp_path):
    rgb = flat(variant_config("RGB", tmp_path / "a", tmp_path / "data", 100, 3,
                              config_file=RGBD_CONFIG))
    rgbd = flat(variant_config("RGB-D", tmp_path / "b", tmp_path / "data", 100, 3,
                               config_file=RGBD_CONFIG))
    differ = {k for k in rgb if rgb[k] != rgbd[k]}
    assert differ == {"INPUT.DEPTH.ENABLED", "MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD", "OUTPUT_DIR"}
    assert list(rgbd["MODEL.PIXEL_MEAN"][:3]) == list(rgb["MODEL.PIXEL_MEAN"])
    assert len(rgbd["MODEL.PIXEL_STD"]) == 4 and len(rgb["MODEL.PIXEL_STD"]) == 3
    assert rgb["SOLVER.MAX_ITER"] == 100 and rgb["SEED"] == 3
    assert rgb["DATASETS.TRAIN"] == ("grapes_rgbd_train",)


@pytest.mark.slow
def test_ablation_tool_trains_both_variants_and_writes_the_table(tmp_path):
    data, out = tmp_path / "scenes", tmp_path / "out"
    tiny = ["--data", str(data), "--train", "3", "--val", "2", "--frame", "96x72"]
    opts = ["SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN", "(72,)",
            "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.MIN_SIZE_TEST", "72", "INPUT.MAX_SIZE_TEST",
            "96", "DATALOADER.NUM_WORKERS", "0",
            "DATASETS.SEMANTIC_CACHE_DIR", str(tmp_path / "semantic_cache")]
    proc = run_tool("rgbd_ablation.py", *tiny, "--iters", "2", "--output-dir", str(out),
                    "--seeds", "0", *opts)  # overrides right after the greedy --seeds
    assert proc.returncode == 0, proc.stderr[-4000:]
    table = (out / "rgbd_ablation.md").read_text()
    assert "| RGB " in table and "| RGB-D " in table and "3 train / 2 val" in table
    result = json.loads((out / "rgbd_ablation.json").read_text())
    ap = {r["variant"]: r["segm_ap"] for r in result["runs"]}
    assert result["segm_ap_differences"] == [pytest.approx(ap["RGB-D"] - ap["RGB"])]
    for variant, channels in (("rgb", 3), ("rgbd", 4)):
        state = torch.load(out / variant / "seed0" / "model_final.pth", map_location="cpu",
                           weights_only=False)["model"]
        assert state["backbone.bottom_up.stem.conv1.weight"].shape[1] == channels

    # Rerun (e.g. after adding a seed): the finished runs are reused, not trained again.
    proc = run_tool("rgbd_ablation.py", *tiny, "--iters", "2", "--output-dir", str(out),
                    "--seeds", "0", *opts)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (proc.stdout + proc.stderr).count("finished with this config; reused") == 2
    assert "Starting training" not in proc.stdout + proc.stderr
    again = json.loads((out / "rgbd_ablation.json").read_text())
    assert [r["segm_ap"] for r in again["runs"]] == [r["segm_ap"] for r in result["runs"]]

    proc = run_tool("rgbd_ablation.py", "--depth-stats", "--data", str(data))
    assert proc.returncode == 0 and "3 depth images" in proc.stdout, proc.stderr[-2000:]
    # The scenes are reused only when they have the sizes asked for.
    assert_user_error(run_tool("rgbd_ablation.py", *tiny[:-4], "--val", "5",
                               "--output-dir", str(tmp_path / "o2")), str(data), "2 val")


@pytest.mark.slow
def test_depth_stats_of_a_missing_folder_is_one_line(tmp_path):
    assert_user_error(run_tool("rgbd_ablation.py", "--depth-stats", "--data",
                               str(tmp_path / "none")), str(Path(tmp_path / "none")))
