"""``make pretrain-ablation``: does pretraining on synthetic vineyard rows beat random weights?

The real recipe (``configs/mask_rcnn_grapes_cpu_real.yaml``) starts from random weights: no
model zoo offline. This measures the alternative at the same total CPU time on the same
machine: render photo-like vineyard rows (:mod:`grape_instances.synthetic.vineyard`),
pretrain the recipe's model on them, then fine-tune on the real training part for whatever
time is left of the scratch run's budget. Both arms are scored on the held-out part
(validation) exactly as ``make real`` scores the scratch run, and the pretrained model is
also scored before fine-tuning (how far synthetic alone gets).

The budget is the scratch run's measured training time (``make real`` trains it first when
``output/real`` has no finished run); the fine-tune gets ``budget - render - pretrain``
seconds, turned into iterations at the scratch run's own seconds per iteration (same data,
same model, same input size).
"""

from __future__ import annotations

import logging
import os

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.logger import setup_logger

from ..core import paths as layout
from ..core.errors import GrapeInputError
from ..core.fileio import write_json_atomic
from ..core.tables import markdown_table
from ..data.build import build_config
from ..data.datasets import register_from_config
from ..engine.trainer import Trainer
from ..synthetic.export import ensure_dataset, generate_vineyard_dataset
from ..synthetic.vineyard import VineyardConfig
from .real import (
    DEFAULT_ROOT,
    DEFAULT_TILE,
    REAL_CONFIG,
    real_config,
    run_real,
    train_unless_finished,
    training_seconds,
)

logger = logging.getLogger(__name__)

def scaled_schedule(steps: tuple[int, ...], max_iter: int, new_max: int) -> tuple[int, ...]:
    """The recipe's LR drops at the same fractions of a shorter (or longer) run."""
    return tuple(max(1, round(s * new_max / max_iter)) for s in steps)


def schedule_opts(cfg, iters: int) -> list[str]:
    """Config overrides that run ``cfg``'s recipe for ``iters`` iterations."""
    steps = scaled_schedule(tuple(cfg.SOLVER.STEPS), cfg.SOLVER.MAX_ITER, iters)
    return ["SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", repr(steps),
            "SOLVER.WARMUP_ITERS", str(min(cfg.SOLVER.WARMUP_ITERS, max(1, iters // 10))),
            "SOLVER.CHECKPOINT_PERIOD", str(max(1, iters // 4))]


def finetune_iterations(budget_s: float, render_s: float, pretrain_s: float,
                        per_iter_s: float) -> int:
    """Iterations on real photos that fill what rendering and pretraining left of the budget."""
    iters = int(round((budget_s - render_s - pretrain_s) / per_iter_s))
    if iters < 1:
        raise GrapeInputError(f"rendering ({render_s:.0f} s) and pretraining ({pretrain_s:.0f} s) "
                              f"use the scratch run's whole budget ({budget_s:.0f} s): pretrain "
                              "for fewer iterations")
    return iters


def render_vineyard(data_dir: str, images: int, seed: int = 0) -> float:
    """Render ``images`` vineyard rows under ``data_dir`` (reused when its stamp records the
    same count, frame and seed: synthetic.export.ensure_dataset); returns the seconds
    rendering took, when it happened."""
    frame = VineyardConfig()
    return ensure_dataset(
        data_dir, layout.dataset_stamp("vineyard", {"train": images}, seed,
                                       (frame.width, frame.height)),
        lambda: generate_vineyard_dataset(data_dir, {"train": images}, seed=seed,
                                          overwrite=True),
        other="replace")


def pretrain(data_dir: str, output_dir: str, iters: int, config_file: str = REAL_CONFIG,
             opts: list[str] | None = None) -> tuple[str, float]:
    """Train the recipe's model on the vineyard rows for ``iters`` iterations (a finished run
    in ``output_dir`` is reused). Returns the final checkpoint and the training seconds."""
    base = build_config(config_file, opts or [])
    register = [["vineyard_synth_train", str(layout.coco_json(data_dir, "train")),
                 str(layout.images_dir(data_dir, "train"))]]
    cfg = build_config(config_file, [
        *(opts or []), "DATASETS.REGISTER", repr(register),
        "DATASETS.TRAIN", "('vineyard_synth_train',)", "DATASETS.TEST", "()",
        "OUTPUT_DIR", output_dir, *schedule_opts(base, iters)])
    register_from_config(cfg)
    os.makedirs(output_dir, exist_ok=True)
    train_unless_finished(cfg)
    seconds = training_seconds(output_dir)
    if seconds is None:
        raise GrapeInputError(f"{output_dir}: a finished run without its training time; delete "
                              "the folder and pretrain again")
    return os.path.join(output_dir, "model_final.pth"), seconds


def score_weights(root: str, splits: dict, weights: str, output_dir: str,
                  config_file: str = REAL_CONFIG, opts: list[str] | None = None) -> dict:
    """COCO AP and instance P / R / F1 of ``weights`` on the held-out part, whole photos."""
    cfg = real_config(root, splits, output_dir, config_file, ["MODEL.WEIGHTS", weights,
                                                              *(opts or [])])
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model).load(weights)
    return {k: dict(v) for k, v in Trainer.test(cfg, model).items()}


def run_pretrain_ablation(
    root: str = DEFAULT_ROOT,
    output_dir: str = "output/pretrain",
    data_dir: str = layout.VINEYARD_ROOT,
    scratch_dir: str = "output/real",
    real_data_dir: str = layout.REAL_DATA_DIR,
    pretrain_iters: int = 600,
    images: int = 400,
    config_file: str = REAL_CONFIG,
    tile: int = DEFAULT_TILE,
    opts: list[str] | None = None,
    finetune_iters: int | None = None,
) -> dict:
    """Both arms at the scratch run's time budget; writes and returns ``pretrain_summary.json``.

    ``real_data_dir`` receives the converted WGISD split (as in ``make real``);
    ``finetune_iters`` fixes the fine-tune's length instead of filling the budget (tests)."""
    setup_logger(name="grape_instances")
    setup_logger(name="detectron2")
    scratch = run_real(root, scratch_dir, real_data_dir, config_file, tile, num_overlays=0,
                       opts=opts)
    budget = training_seconds(scratch_dir)
    if budget is None:
        raise GrapeInputError(f"{scratch_dir}: a finished run without its training time; "
                              "delete the folder so that the scratch run trains again")
    per_iter = budget / scratch["iterations"]

    render_s = render_vineyard(data_dir, images)
    weights, pretrain_s = pretrain(data_dir, os.path.join(output_dir, "synthetic"),
                                   pretrain_iters, config_file, opts)
    filled = finetune_iters is None
    if filled:
        finetune_iters = finetune_iterations(budget, render_s, pretrain_s, per_iter)
    splits = scratch["splits"]
    zero_shot = score_weights(root, splits, weights, os.path.join(output_dir, "zero_shot"),
                              config_file, opts)
    base = build_config(config_file, opts or [])
    finetuned = run_real(root, os.path.join(output_dir, "finetune"), real_data_dir, config_file,
                         tile, num_overlays=0,
                         opts=[*(opts or []), "MODEL.WEIGHTS", weights,
                               *schedule_opts(base, finetune_iters)])
    finetune_s = training_seconds(os.path.join(output_dir, "finetune"))
    summary = {
        "budget_s": budget,
        "budget_filled": filled,
        "scratch": {"iterations": scratch["iterations"], "train_s": budget,
                    "results": scratch["results"]},
        "pretrained": {
            "images": images, "render_s": render_s,
            "pretrain_iterations": pretrain_iters, "pretrain_s": pretrain_s,
            "finetune_iterations": finetune_iters, "finetune_s": finetune_s,
            "total_s": render_s + pretrain_s + (finetune_s or 0.0),
            "zero_shot": zero_shot, "results": finetuned["results"],
        },
    }
    write_json_atomic(os.path.join(output_dir, "pretrain_summary.json"), summary, indent=2,
                      nan_as_null=True)
    return summary


def print_pretrain_summary(summary: dict) -> None:
    """Scratch against pretrained + fine-tuned, whole photos and tiles, with their times."""
    nan = float("nan")
    pre = summary["pretrained"]

    def row(label, results, seconds):
        segm, inst = results.get("segm", {}), results.get("instance", {})
        return [label, f"{segm.get('AP', nan):.1f}", f"{segm.get('AP50', nan):.1f}",
                f"{inst.get('F1@50', nan):.1f}", f"{seconds / 60:.1f}"]

    rows = [row("scratch, whole photo", summary["scratch"]["results"]["whole"],
                summary["scratch"]["train_s"]),
            row("scratch, tiles", summary["scratch"]["results"]["tiled"],
                summary["scratch"]["train_s"]),
            row("synthetic only (zero-shot), whole photo", pre["zero_shot"],
                pre["render_s"] + pre["pretrain_s"]),
            row("synthetic + fine-tune, whole photo", pre["results"]["whole"], pre["total_s"]),
            row("synthetic + fine-tune, tiles", pre["results"]["tiled"], pre["total_s"])]
    print("\n=== pretraining on synthetic vineyard rows vs scratch (held-out validation part) ===")
    print(markdown_table(["start", "segm AP", "AP50", "F1@0.5", "CPU min"], rows,
                         ["left"] + ["right"] * 4))
    print(f"\nscratch: {summary['scratch']['iterations']} it; pretrained: {pre['images']} images "
          f"rendered in {pre['render_s']:.0f}s, {pre['pretrain_iterations']} it on them "
          f"({pre['pretrain_s']:.0f}s), then {pre['finetune_iterations']} it on real photos "
          f"({(pre['finetune_s'] or 0):.0f}s)")
