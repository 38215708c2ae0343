"""``make real``: the CPU recipe on real vineyard photos, from WGISD folder to scores and overlays.

Convert a WGISD root, split it by image with every variety in both parts, train
``configs/mask_rcnn_grapes_cpu_real.yaml`` (resuming a finished run instead of repeating it),
score the held-out part on whole photos and with tiled inference, and draw full-resolution
overlays. The held-out part is a validation split: report WGISD's own test split separately.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

from detectron2.engine import HookBase
from detectron2.utils.logger import setup_logger

from ..convert.split import split_coco_file
from ..convert.wgisd import convert_wgisd
from ..core import paths
from ..core.fileio import read_json, write_json_atomic
from ..core.tables import markdown_table
from ..data.build import build_config
from ..data.datasets import register_from_config
from ..engine import run_training
from ..engine.trainer import Trainer
from ..inference.writers import visualize_files
from .demo import format_ap_table

logger = logging.getLogger(__name__)

REAL_CONFIG = "configs/mask_rcnn_grapes_cpu_real.yaml"
DEFAULT_ROOT = paths.WGISD_ROOT
# Tiles of the test-resized photo (1024 x 683 for a 2048 x 1365 photo): 3 x 2 windows.
DEFAULT_TILE = 512
TRAINING_TIME = "training_time.json"
_TOTAL_TIME = re.compile(r"Total training time: (\d+):(\d\d):(\d\d)")


def prepare_real_splits(root: str, data_dir: str, val: float = 0.2, seed: int = 0) -> dict:
    """WGISD root -> ``data_dir/converted/wgisd_*.json`` -> a stratified train / val split of
    its first split (``wgisd_train.json`` for WGISD's train list). Returns the split paths."""
    summary = convert_wgisd(root, Path(data_dir) / "converted", overwrite=True)
    source = next(p for p in summary.outputs if not p.name.endswith("_boxes.json"))
    return split_coco_file(source, Path(data_dir) / "split", val=val, seed=seed,
                           stratify_by="variety", overwrite=True)


def run_real(
    root: str = DEFAULT_ROOT,
    output_dir: str = "output/real",
    data_dir: str = paths.REAL_DATA_DIR,
    config_file: str = REAL_CONFIG,
    tile: int = DEFAULT_TILE,
    num_overlays: int = 2,
    opts: list[str] | None = None,
) -> dict:
    """Run every step in this process; return (and write ``real_summary.json``) the numbers."""
    setup_logger(name="grape_instances")
    setup_logger(name="detectron2")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    splits = prepare_real_splits(root, data_dir)
    timings["prepare_s"] = time.perf_counter() - t0

    image_root = os.path.abspath(root)
    cfg = real_config(root, splits, output_dir, config_file, opts)
    os.makedirs(output_dir, exist_ok=True)

    t0 = time.perf_counter()
    # A finished run in output_dir is reused (its last checkpoint is model_final.pth), so a
    # second `make real` only re-scores; delete output_dir to train again.
    trainer, resumed_from = train_unless_finished(cfg)
    timings["train_s"] = time.perf_counter() - t0

    results = {}
    for mode, tile_size in (("whole", 0), ("tiled", tile)):
        t0 = time.perf_counter()
        test_cfg = real_config(root, splits, output_dir, config_file,
                               [*(opts or []), "TEST.TILE_SIZE", str(tile_size)])
        results[mode] = Trainer.test(test_cfg, trainer.model)
        timings[f"evaluate_{mode}_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    weights = os.path.join(output_dir, "model_final.pth")
    overlays = []
    if num_overlays > 0:
        vis_cfg = real_config(root, splits, output_dir, config_file, [
            *(opts or []), "TEST.TILE_SIZE", str(tile), "MODEL.WEIGHTS", weights,
            # draw what F1 counts
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(cfg.TEST.F1_SCORE_THRESH)])
        val_images = [Path(image_root, img) for img in _file_names(splits["val"])][:num_overlays]
        overlays = visualize_files(vis_cfg, val_images,
                                   os.path.join(output_dir, "overlays"))["overlays"]
    timings["visualize_s"] = time.perf_counter() - t0
    timings["total_s"] = sum(timings.values())

    summary = {
        "config": config_file,
        "iterations": cfg.SOLVER.MAX_ITER,
        "resumed_from_iteration": resumed_from,
        "splits": {k: str(v) for k, v in splits.items()},
        "tile": tile,
        "results": {mode: {k: dict(v) for k, v in r.items()} for mode, r in results.items()},
        "timings": timings,
        "overlays": overlays,
        "checkpoint": weights,
    }
    write_json_atomic(os.path.join(output_dir, "real_summary.json"), summary, indent=2,
                      nan_as_null=True)  # Detectron2 reports an AP without instances as NaN
    return summary


def train_unless_finished(cfg) -> tuple[Trainer, int]:
    """Train ``cfg`` through the guarded path (``engine.run_training``, resuming what
    ``OUTPUT_DIR`` holds; a finished run is not trained again) and keep the training's wall
    time in ``OUTPUT_DIR/training_time.json``, where :func:`training_seconds` finds it.
    Returns the trainer and the iteration it started at."""
    earlier = training_seconds(cfg.OUTPUT_DIR) if os.path.isdir(cfg.OUTPUT_DIR) else None
    t0 = time.perf_counter()
    trainer = run_training(cfg, resume=True)
    start = trainer.start_iter
    if start < cfg.SOLVER.MAX_ITER:
        seconds = ((earlier or 0.0) if start > 0 else 0.0) + time.perf_counter() - t0
        write_json_atomic(os.path.join(cfg.OUTPUT_DIR, TRAINING_TIME),
                          {"iterations": cfg.SOLVER.MAX_ITER, "seconds": seconds}, indent=2)
    return trainer, start


def training_seconds(output_dir: str | os.PathLike) -> float | None:
    """Wall time of the finished training in ``output_dir``: the record of
    :func:`train_unless_finished`, else Detectron2's own 'Total training time' log line."""
    record = Path(output_dir, TRAINING_TIME)
    if record.is_file():
        return float(read_json(record)["seconds"])
    log = Path(output_dir, "log.txt")
    found = _TOTAL_TIME.findall(log.read_text(errors="replace")) if log.is_file() else []
    if not found:
        return None
    h, m, sec = map(int, found[-1])
    return float(h * 3600 + m * 60 + sec)


def real_config(root: str, splits: dict, output_dir: str, config_file: str = REAL_CONFIG,
                opts: list[str] | None = None):
    """The recipe's config with the split registered as ``wgisd_train`` / ``wgisd_val``."""
    image_root = os.path.abspath(root)
    register = [["wgisd_train", str(splits["train"]), image_root],
                ["wgisd_val", str(splits["val"]), image_root]]
    overrides = ["DATASETS.REGISTER", repr(register), "DATASETS.TRAIN", "('wgisd_train',)",
                 "DATASETS.TEST", "('wgisd_val',)", "OUTPUT_DIR", output_dir, *(opts or [])]
    cfg = build_config(config_file, overrides)
    register_from_config(cfg)
    return cfg


def _file_names(coco_json) -> list[str]:
    return [img["file_name"] for img in read_json(coco_json)["images"]]


def print_real_summary(summary: dict) -> None:
    """The end of ``make real``: AP and the paper's P / R / F1, whole photo against tiles."""
    nan = float("nan")
    t = summary["timings"]
    print("\n=== grape_instances on real photos (held-out validation part) ===")
    for mode, results in summary["results"].items():
        label = "whole photo" if mode == "whole" else f"tiles of {summary['tile']} px"
        print(f"\n-- {label} --")
        print(format_ap_table(results))
        inst = results.get("instance", {})
        print(markdown_table(
            ["mask IoU", "P", "R", "F1"],
            ([f"0.{iou[0]}", *(f"{inst.get(f'{m}@{iou}', nan):.1f}" for m in ("P", "R", "F1"))]
             for iou in ("30", "50", "80")),
            ["right"] * 4,
        ))
    trained = ("reused a finished run" if summary["resumed_from_iteration"] >= summary["iterations"]
               else f"{summary['iterations']} it")
    print(f"\ntime: prepare {t['prepare_s']:.0f}s, train {t['train_s']:.0f}s ({trained}), "
          f"evaluate {t['evaluate_whole_s']:.0f}s whole + {t['evaluate_tiled_s']:.0f}s tiled, "
          f"overlays {t['visualize_s']:.0f}s, total {t['total_s']:.0f}s")
    print(f"overlays: {os.path.dirname(summary['overlays'][0]) if summary['overlays'] else '-'}")
    print(f"checkpoint: {summary['checkpoint']}")


class _SpeedHook(HookBase):
    """Wall time and CPU seconds (trainer process; its data-loader workers) at the end of
    iteration ``warmup`` and of the last iteration."""

    def __init__(self, warmup: int) -> None:
        import psutil

        self.warmup = warmup
        self.process = psutil.Process()
        self.marks: list[tuple[float, float, float]] = []

    def _cpu(self) -> tuple[float, float]:
        own = self.process.cpu_times()
        workers = 0.0
        for child in self.process.children(recursive=True):
            try:
                t = child.cpu_times()
                workers += t.user + t.system
            except Exception:  # a worker that just exited
                pass
        return own.user + own.system, workers

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if done in (self.warmup, self.trainer.max_iter):
            self.marks.append((time.perf_counter(), *self._cpu()))


def measure_training_speed(root: str = DEFAULT_ROOT, output_dir: str = "output/real_speed",
                           data_dir: str = "datasets/real", config_file: str = REAL_CONFIG,
                           iterations: int = 40, warmup: int = 10,
                           opts: list[str] | None = None) -> dict:
    """Train the recipe for ``iterations`` from scratch (seed of the config) and return s/it
    and CPU seconds per iteration of the trainer and of its data-loader workers over the
    iterations after ``warmup`` (worker start-up and one-time caches excluded), with the
    machine's load average, so that runs on a shared machine can be compared."""
    import psutil

    setup_logger(name="grape_instances")
    setup_logger(name="detectron2")
    splits = prepare_real_splits(root, data_dir)
    cfg = real_config(root, splits, output_dir, config_file,
                      [*(opts or []), "SOLVER.MAX_ITER", str(iterations),
                       "SOLVER.CHECKPOINT_PERIOD", str(10 * iterations)])
    os.makedirs(output_dir, exist_ok=True)
    load_before = os.getloadavg()
    hook = _SpeedHook(warmup)

    class TimedTrainer(Trainer):
        def build_hooks(self):
            return [*super().build_hooks(), hook]

    run_training(cfg, resume=False, trainer_cls=TimedTrainer)
    (t0, own0, work0), (t1, own1, work1) = hook.marks
    n = iterations - warmup
    others = sorted(
        ((p.info["cpu_times"].user + p.info["cpu_times"].system, p.info["name"], p.pid)
         for p in psutil.process_iter(["cpu_times", "name"])
         if p.info["cpu_times"] is not None and p.pid != os.getpid()),
        reverse=True,
    )[:5]
    result = {
        "opts": list(opts or []),
        "iterations_measured": n,
        "s_per_it": (t1 - t0) / n,
        "trainer_cpu_s_per_it": (own1 - own0) / n,
        "workers_cpu_s_per_it": (work1 - work0) / n,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "busiest_processes_cpu_s": [[round(c), name, pid] for c, name, pid in others],
    }
    result["cpu_s_per_it"] = result["trainer_cpu_s_per_it"] + result["workers_cpu_s_per_it"]
    result["workers_cpu_share"] = result["workers_cpu_s_per_it"] / max(result["cpu_s_per_it"],
                                                                       1e-9)
    write_json_atomic(os.path.join(output_dir, "speed.json"), result, indent=2)
    return result
