"""make peer-real's own parts, without Ultralytics: the budget, YOLO masks -> COCO results ->
the project's evaluators, the table, and Ultralytics kept out of the package's imports."""

import ast
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from grape_instances.core.errors import GrapeInputError
from grape_instances.experiments.peer_real import (
    INSTALL_HINT,
    masks_to_coco_results,
    peer_table,
    recipe_budget,
    require_ultralytics,
    results_to_instances,
)
from tests.helpers import REPO, assert_user_error, run_tool

H, W = 40, 60


def test_budget_is_the_recipes_recorded_training_time(tmp_path):
    (tmp_path / "training_time.json").write_text('{"iterations": 1800, "seconds": 2400.5}')
    assert recipe_budget(tmp_path) == {"seconds": 2400.5,
                                       "source": str(tmp_path / "training_time.json")}
    assert recipe_budget(tmp_path, 1.5)["seconds"] == 90.0
    # a run resumed part way: its record may hold only the part after the resume
    (tmp_path / "real_summary.json").write_text(
        '{"iterations": 1800, "resumed_from_iteration": 1200}')
    assert "resumed at iteration 1200 of 1800" in recipe_budget(tmp_path)["note"]
    (tmp_path / "real_summary.json").write_text(
        '{"iterations": 1800, "resumed_from_iteration": 1800}')  # a finished run reused
    assert "note" not in recipe_budget(tmp_path)

    log_only = tmp_path / "log_only"
    log_only.mkdir()
    (log_only / "log.txt").write_text("... Total training time: 0:41:05 (0:00:12 on hooks)\n")
    assert recipe_budget(log_only)["seconds"] == 41 * 60 + 5
    with pytest.raises(GrapeInputError, match="pass --budget-minutes"):
        recipe_budget(tmp_path / "missing")
    with pytest.raises(GrapeInputError, match="must be > 0"):
        recipe_budget(tmp_path, 0)


def _box(x0, y0, x1, y1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def _tiny_dataset(tmp_path) -> tuple[str, dict]:
    """Two photos, category id 5, bunches as RLE; registered as Detectron2 registers them."""
    from grape_instances.core.masks import mask_to_rle
    from grape_instances.data.datasets import register_coco_dataset

    truth = {1: [_box(2, 2, 20, 30), _box(30, 5, 55, 25)], 2: [_box(10, 10, 40, 35)]}
    images, anns = [], []
    for image_id, masks in truth.items():
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / f"{image_id}.png")
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": H, "width": W})
        for m in masks:
            ys, xs = np.nonzero(m)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 5,
                         "segmentation": mask_to_rle(m), "iscrowd": 0, "area": int(m.sum()),
                         "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1,
                                  int(np.ptp(ys)) + 1]})
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": 5, "name": "bunch"}]}
    (tmp_path / "val.json").write_text(json.dumps(coco))
    register_coco_dataset("peer_tiny_val", str(tmp_path / "val.json"), str(tmp_path))
    return "peer_tiny_val", truth


def test_yolo_masks_become_coco_results_the_project_scores(tmp_path):
    from detectron2.data import DatasetCatalog

    from grape_instances.experiments.fragments import score_outputs

    dataset, truth = _tiny_dataset(tmp_path)
    ids = [5]

    def boxes_of(masks):
        out = []
        for m in masks:
            ys, xs = np.nonzero(m)
            out.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        return out

    per_image = {}
    for image_id, masks in truth.items():
        extra = [_box(45, 30, 58, 39)] if image_id == 2 else []  # one background FP at 0.3
        found = [*masks, *extra]
        scores = [0.9] * len(masks) + [0.3] * len(extra)
        per_image[image_id] = masks_to_coco_results(iter(found), boxes_of(found), scores,
                                                    [0] * len(found), image_id, ids)
    first = per_image[1][0]
    assert first["category_id"] == 5 and first["bbox"] == [2.0, 2.0, 18.0, 28.0]
    assert isinstance(first["segmentation"]["counts"], str)  # JSON-ready RLE
    json.dumps(per_image[1])
    inst = results_to_instances(per_image[1], H, W, ids)
    assert inst.pred_classes.tolist() == [0, 0]
    assert np.array_equal(inst.pred_masks[1].numpy(), truth[1][1])

    records = [{k: r[k] for k in ("file_name", "image_id", "height", "width")}
               for r in DatasetCatalog.get(dataset)]
    batches = (([rec], [{"instances": results_to_instances(per_image[rec["image_id"]], H, W,
                                                           ids)}]) for rec in records)
    low, high = score_outputs(dataset, batches, [0.0], [0.25, 0.5])
    assert high["segm"]["AP"] == pytest.approx(100.0)
    assert high["instance"]["F1@50"] == pytest.approx(100.0)
    assert high["count"]["MAE"] == 0.0
    assert low["instance"]["FP@50"] == 1 and low["count"]["bias"] == pytest.approx(0.5)
    assert low["fp_kinds"]["background"] == 1


def test_the_table_has_one_row_per_model_and_score():
    row = {"model": "yolo11n-seg", "params_m": 2.88, "train_min": 40.2, "trained": "31 ep (best)",
           "imgsz": 1024, "score": 0.25, "segm": {"AP": 30.12, "AP50": 65.0},
           "instance": {"F1@30": 70.0, "F1@50": 60.0, "P@50": 55.0, "R@50": 66.0,
                        "F1@80": 20.0},
           "count": {"MAE": 2.5, "bias": -1.25},
           "speed": {"photos_per_s": 3.456, "cpu_s_per_photo": 0.5}}
    lines = peer_table([row, {**row, "score": 0.5, "speed": None}]).splitlines()
    assert lines[0].startswith("| model ") and "photos/s" in lines[0]
    cells = [c.strip() for c in lines[2].split("|")[1:-1]]
    assert cells == ["yolo11n-seg", "2.9", "40.2", "31 ep (best)",
                                          "1024", "0.25", "30.1", "65.0", "70.0", "60.0",
                                          "55.0", "66.0", "20.0", "2.50", "-1.25", "3.46",
                                          "0.50"]
    assert [c.strip() for c in lines[3].split("|")[-3:-1]] == ["", ""]  # no speed: blank


def test_ultralytics_missing_is_one_line(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(GrapeInputError, match="^ultralytics is not installed: make "
                                              "install-peers$"):
        require_ultralytics()


def test_the_tool_refuses_missing_weights_in_one_line(tmp_path):
    proc = run_tool("peer_real.py", "--data-dir", str(tmp_path), "--recipe-dir",
                    str(tmp_path), "--weights", str(tmp_path / "w.pth"), "--output-dir",
                    str(tmp_path / "out"))
    installed = importlib.util.find_spec("ultralytics") is not None
    assert_user_error(proc, "w.pth: the recipe's weights not found" if installed
                      else INSTALL_HINT)
    assert not (tmp_path / "out").exists()


def test_only_the_peer_experiment_imports_ultralytics_and_only_inside_functions():
    """AGPL-3.0 stays an optional extra: the package imports it nowhere else, the benchmark
    only lazily, and no test imports it."""
    for path in [*(REPO / "grape_instances").rglob("*.py"), *(REPO / "tests").glob("*.py"),
                 *(REPO / "tools").glob("*.py")]:
        tree = ast.parse(path.read_text())
        top_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] == "ultralytics" for n in names):
                assert path == REPO / "grape_instances" / "experiments" / "peer_real.py", path
                assert id(node) not in top_level, f"{path}:{node.lineno}"
    assert Path(REPO / "requirements-peers.txt").read_text().count("ultralytics==8.4.190") == 1
