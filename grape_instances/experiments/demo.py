"""The CPU demo behind ``make demo``: synthesize, train, evaluate, draw, summarize."""

from __future__ import annotations

import logging
import os
import time

from detectron2.utils.logger import setup_logger

from ..core import paths as layout
from ..core.fileio import write_json_atomic
from ..core.tables import markdown_table
from ..data.build import build_config
from ..data.datasets import register_from_config
from ..engine import run_training
from ..engine.trainer import Trainer
from ..inference.predictor import prediction_config
from ..inference.writers import visualize_files
from ..synthetic.export import ensure_dataset, generate_dataset
from ..synthetic.render import SynthConfig

logger = logging.getLogger(__name__)

DEMO_CONFIG = "configs/mask_rcnn_grapes_cpu_demo.yaml"
# The demo's synthetic split (also what `make compare` trains on).
DEMO_TRAIN_IMAGES, DEMO_VAL_IMAGES, DEMO_IMAGE_SIZE, DEMO_SEED = 300, 50, 256, 0


def ensure_synthetic(root: str, num_train: int = DEMO_TRAIN_IMAGES,
                     num_val: int = DEMO_VAL_IMAGES, size: int = DEMO_IMAGE_SIZE,
                     seed: int = DEMO_SEED, other: str = "replace") -> None:
    """Generate the demo dataset once (synthetic.export.ensure_dataset): reused when its
    stamp records these counts, size and seed; a dataset of other counts, size or seed is
    generated again (``other="replace"``), or used as it is (``"use"``)."""
    splits = {"train": num_train, "val": num_val}
    ensure_dataset(root, layout.dataset_stamp("synthetic", splits, seed, (size, size)),
                   lambda: generate_dataset(root, splits, seed=seed,
                                            cfg=SynthConfig(height=size, width=size),
                                            overwrite=True),
                   other=other)


def format_ap_table(results: dict) -> str:
    """A short AP / AP50 / AP75 table for the bbox and segm tasks."""
    metrics = ("AP", "AP50", "AP75")
    rows = ([task, *(f"{results.get(task, {}).get(m, float('nan')):.1f}" for m in metrics)]
            for task in ("bbox", "segm"))
    return markdown_table(["task", *metrics], rows, ["left", "right", "right", "right"])


def run_demo(
    output_dir: str = "output/demo",
    config_file: str = DEMO_CONFIG,
    num_train: int = DEMO_TRAIN_IMAGES,
    num_val: int = DEMO_VAL_IMAGES,
    image_size: int = DEMO_IMAGE_SIZE,
    num_overlays: int = 6,
    seed: int = DEMO_SEED,
    opts: list[str] | None = None,
) -> dict:
    """Run the whole demo in this process and return (and write) its summary."""
    setup_logger(name="grape_instances")
    setup_logger(name="detectron2")
    overrides = ["OUTPUT_DIR", output_dir, "SEED", str(seed), *(opts or [])]
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    root = build_config(config_file, overrides).DATASETS.SYNTHETIC_ROOT
    ensure_synthetic(root, num_train, num_val, image_size, seed)
    timings["synthesize_s"] = time.perf_counter() - t0
    cfg = build_config(config_file, overrides)  # its class count follows the data now there
    register_from_config(cfg)
    os.makedirs(output_dir, exist_ok=True)

    t0 = time.perf_counter()
    trainer = run_training(cfg, resume=False)  # the OUTPUT_DIR lock and the pre-run checks
    timings["train_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    results = Trainer.test(cfg, trainer.model)
    timings["evaluate_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    weights = os.path.join(output_dir, "model_final.pth")
    vis_cfg = prediction_config(config_file, [*overrides, "MODEL.WEIGHTS", weights],
                                confidence_threshold=0.5)  # draw confident bunches only
    val_images = sorted(layout.images_dir(cfg.DATASETS.SYNTHETIC_ROOT, "val").glob("*.jpg"))
    vis = visualize_files(vis_cfg, val_images[:num_overlays], os.path.join(output_dir, "overlays"))
    timings["visualize_s"] = time.perf_counter() - t0
    timings["total_s"] = sum(timings.values())

    summary = {
        "config": config_file,
        "iterations": cfg.SOLVER.MAX_ITER,
        "images_per_batch": cfg.SOLVER.IMS_PER_BATCH,
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0") or 0),
        "results": {k: dict(v) for k, v in results.items()},
        "timings": timings,
        "overlays": vis["overlays"],
        "checkpoint": weights,
    }
    write_json_atomic(os.path.join(output_dir, "demo_summary.json"), summary, indent=2,
                      nan_as_null=True)  # Detectron2 reports an AP without instances as NaN
    return summary


def print_summary(summary: dict) -> None:
    """What ``make demo`` ends with: the AP table, the times, the semantic, count and instance
    F1 metrics, and where the pictures are."""
    t = summary["timings"]
    nan = float("nan")
    print("\n=== grape_instances CPU demo ===")
    print(format_ap_table(summary["results"]))
    print(f"time: synthesize {t['synthesize_s']:.0f}s, train {t['train_s']:.0f}s "
          f"({summary['iterations']} it), evaluate {t['evaluate_s']:.0f}s, "
          f"visualize {t['visualize_s']:.0f}s, total {t['total_s']:.0f}s")
    sem = summary["results"].get("sem_seg", {})
    count = summary["results"].get("count", {})
    if sem:
        print(f"semantic (instances merged): mIoU {sem.get('mIoU', float('nan')):.1f}, "
              f"bunch Dice {sem.get('Dice-bunch', float('nan')):.1f}; "
              f"bunch-count MAE {count.get('MAE', float('nan')):.2f} per image")
    inst = summary["results"].get("instance", {})
    if inst:
        print(f"instances (Santos et al. 2020) at mask IoU 0.5: P {inst.get('P@50', nan):.1f}, "
              f"R {inst.get('R@50', nan):.1f}, F1 {inst.get('F1@50', nan):.1f} "
              f"(F1@30 {inst.get('F1@30', nan):.1f}, F1@80 {inst.get('F1@80', nan):.1f})")
    print(f"overlays: {os.path.dirname(summary['overlays'][0]) if summary['overlays'] else '-'}")
    print(f"checkpoint: {summary['checkpoint']}")
