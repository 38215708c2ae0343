"""tools/compare.py: five models, same split and budget, three output files."""

import csv
import json
from collections import Counter

import pytest

from grape_instances.data.build import build_config
from grape_instances.experiments.compare import aggregate, budget_opts, render_csv, render_markdown
from tests.helpers import assert_user_error, run_tool

MODELS = {"Mask R-CNN", "SegNet", "PSPNet", "UNet", "FCN-8s"}
TINY = ["INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96",
        "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96",
        "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0"]


def test_budget_sets_iterations_and_scales_the_schedule():
    config = "configs/semantic/segnet_grapes_cpu_demo.yaml"  # 360 it, steps 250/320
    base = build_config(config)
    cfg = build_config(config, budget_opts(base, 720))  # batch 4 -> 180 it, half the schedule
    assert cfg.SOLVER.MAX_ITER == 180
    assert tuple(cfg.SOLVER.STEPS) == (125, 160)
    assert cfg.SOLVER.WARMUP_ITERS == 25
    cfg = build_config(config, budget_opts(base, 8))  # 2 it: steps at or past the end dropped
    assert cfg.SOLVER.MAX_ITER == 2 and tuple(cfg.SOLVER.STEPS) == (1,)
    assert budget_opts(base, None) == []


def test_run_config_is_built_whole_with_the_reference_data(tiny_synth, tmp_path):
    """The run's config is the builder's output (frozen, class count from the data), with
    the reference's datasets: nothing is patched into it after it was built and checked."""
    from grape_instances.experiments.compare import ModelSpec, run_config

    reference = build_config("configs/mask_rcnn_grapes_cpu_demo.yaml",
                             ["DATASETS.SYNTHETIC_ROOT", str(tiny_synth)])
    spec = ModelSpec("configs/semantic/segnet_grapes_cpu_demo.yaml", "segnet", "SegNet")
    cfg = run_config(spec, reference, [], 8, 3, tmp_path / "run")
    assert cfg.is_frozen()
    assert cfg.DATASETS.SYNTHETIC_ROOT == str(tiny_synth)
    assert tuple(cfg.DATASETS.TRAIN) == tuple(reference.DATASETS.TRAIN)
    assert (cfg.SOLVER.MAX_ITER, cfg.SEED, cfg.TEST.EVAL_PERIOD) == (2, 3, 0)
    assert cfg.OUTPUT_DIR == str(tmp_path / "run")


def table_rows(md: str) -> list[list[str]]:
    """The body rows of the ranking table in comparison.md, as lists of cell texts."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in md.splitlines() if line.startswith("|")]
    return [r for r in rows if r[0].isdigit()]


def run_row(model, seed, iou, **extra):
    row = {"model": model, "config": f"{model}.yaml", "seed": seed, "iterations": 10,
           "images_per_batch": 4, "iou_bunch": iou, "dice_bunch": iou + 10, "miou": 90.0,
           "segm_ap": None,
           "count_mae": None, "params_m": 1.5, "train_s": 100.0 + seed, "s_per_iter": 1.0,
           "infer_ms": 20.0}
    row.update(extra)
    return row


def test_seeds_are_averaged_and_models_ranked_by_bunch_iou():
    # A has the higher mIoU (the background dominates it) but the lower bunch IoU.
    rows = aggregate([run_row("A", 0, 50.0, miou=95.0), run_row("A", 1, 54.0, miou=95.0),
                      run_row("B", 0, 70.0, segm_ap=30.0, count_mae=0.5),
                      run_row("B", 1, 60.0, segm_ap=34.0, count_mae=1.5)])
    assert [r["model"] for r in rows] == ["B", "A"]
    b, a = rows
    assert (b["rank"], b["seeds"], b["iou_bunch"]) == (1, 2, 65.0)
    assert b["iou_bunch_std"] == pytest.approx(7.0710678)  # sample std of 70, 60
    assert a["segm_ap"] is None and b["segm_ap"] == 32.0 and b["count_mae"] == 1.0
    context = {"title": "T", "devices": {"cpu"}, "train": "tr", "test": "te", "budget": "b",
               "seeds": 2, "semantic_thresh": 0.5, "count_thresh": 0.5, "machine": "m",
               "wall_s": 1.0}
    md = render_markdown(rows, context)
    table = table_rows(md)
    assert table[0][:7] == ["1", "B", "65.0 ± 7.1", "75.0 ± 7.1", "90.0 ± 0.0", "32.0 ± 2.8",
                            "1.00 ± 0.71"]
    assert table[1][:7] == ["2", "A", "52.0 ± 2.8", "62.0 ± 2.8", "95.0 ± 0.0", "-", "-"]
    assert "CPU smoke comparison" in md
    parsed = list(csv.DictReader(render_csv(rows).splitlines()))
    assert [r["model"] for r in parsed] == ["B", "A"] and parsed[1]["segm_ap"] == ""


def run_compare(*args):
    return run_tool("compare.py", *map(str, args), timeout=400, check=True)


@pytest.mark.slow
def test_compare_writes_three_files_with_five_rows(tiny_synth, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny models; one thread suffers least from
    # other processes on the 2 shared cores
    out = tmp_path / "compare"
    opts = ["DATASETS.SYNTHETIC_ROOT", tiny_synth,
            "DATASETS.SEMANTIC_CACHE_DIR", tmp_path / "cache", *TINY]
    proc = run_compare("--output-dir", out, "--images-seen", 4, *opts)
    assert "CPU smoke comparison" in proc.stdout
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert {r["model"] for r in rows} == MODELS and len(rows) == 5
    by_model = {r["model"]: r for r in rows}
    # Ranked 1..5 by bunch IoU, best first.
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4, 5]
    ious = [float(r["iou_bunch"]) for r in rows]
    assert ious == sorted(ious, reverse=True)
    folders = {"Mask R-CNN": "mask_rcnn", "SegNet": "segnet", "PSPNet": "pspnet",
               "UNet": "unet", "FCN-8s": "fcn8s"}
    for model, row in by_model.items():
        assert row["iterations"] == "2" and row["seeds"] == "1"  # 4 images / batch 2
        # Each cell is the model's own evaluation (run.json keeps Detectron2's results).
        sem = json.loads((out / folders[model] / "seed0" / "run.json").read_text())[
            "results"]["sem_seg"]
        assert float(row["iou_bunch"]) == pytest.approx(sem["IoU-bunch"])
        assert float(row["miou"]) == pytest.approx(sem["mIoU"])
        assert float(row["dice_bunch"]) == pytest.approx(sem["Dice-bunch"])
        # Same confusion matrix: mIoU is the mean of the two IoUs, Dice = 2 IoU / (1 + IoU).
        assert sem["mIoU"] == pytest.approx((sem["IoU-bunch"] + sem["IoU-background"]) / 2)
        iou = sem["IoU-bunch"] / 100
        assert sem["Dice-bunch"] == pytest.approx(200 * iou / (1 + iou), abs=1e-3)
        for key in ("params_m", "train_s", "s_per_iter", "infer_ms"):
            assert float(row[key]) > 0, (model, key)
    assert all(by_model[m]["segm_ap"] == by_model[m]["count_mae"] == ""
               for m in MODELS - {"Mask R-CNN"})
    # Mask R-CNN's count MAE, recomputed from its written detections and the val annotations.
    mask_rcnn = json.loads((out / "mask_rcnn" / "seed0" / "run.json").read_text())["results"]
    assert float(by_model["Mask R-CNN"]["segm_ap"]) == pytest.approx(mask_rcnn["segm"]["AP"])
    detections = json.loads(
        (out / "mask_rcnn" / "seed0" / "inference" / "coco_instances_results.json").read_text())
    gt = json.loads((tiny_synth / "annotations" / "instances_val.json").read_text())
    true = Counter(a["image_id"] for a in gt["annotations"] if not a["iscrowd"])
    found = Counter(d["image_id"] for d in detections if d["score"] >= 0.5)
    mae = sum(abs(found[i["id"]] - true[i["id"]]) for i in gt["images"]) / len(gt["images"])
    assert float(by_model["Mask R-CNN"]["count_mae"]) == pytest.approx(mae)
    md = (out / "comparison.md").read_text()
    assert md.startswith("# Grape model comparison: CPU smoke comparison")
    table = table_rows(md)
    assert [cells[:2] for cells in table] == [[r["rank"], r["model"]] for r in rows]
    assert [cells[2] for cells in table] == [f"{float(r['iou_bunch']):.1f}" for r in rows]
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for folder in ("mask_rcnn", "segnet", "pspnet", "unet", "fcn8s"):
        run = out / folder / "seed0"
        assert (run / "log.txt").stat().st_size > 0
        assert (run / "model_final.pth").is_file()
        assert json.loads((run / "run.json").read_text())["iterations"] == 2

    # --eval-only scores the same checkpoints again: same metrics, training times kept.
    run_compare("--output-dir", out, "--images-seen", 4, "--eval-only", *opts)
    again = {r["model"]: r for r in csv.DictReader((out / "comparison.csv").open())}
    for model in MODELS:
        assert float(again[model]["miou"]) == pytest.approx(float(by_model[model]["miou"]))
        assert again[model]["train_s"] == by_model[model]["train_s"]


def test_compare_rejects_a_missing_checkpoint(tiny_synth, tmp_path):
    proc = run_tool("compare.py", "--output-dir", str(tmp_path / "empty"), "--eval-only",
                    "--configs", "configs/semantic/segnet_grapes_cpu_demo.yaml",
                    "DATASETS.SYNTHETIC_ROOT", str(tiny_synth),
                    "DATASETS.SEMANTIC_CACHE_DIR", str(tmp_path / "cache"))
    assert_user_error(proc, "model_final.pth: checkpoint not found")
