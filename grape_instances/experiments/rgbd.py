"""Segm AP with and without depth on the synthetic RGB-D scenes, at the same budget.

Issue 9 asks whether a depth channel helps Mask R-CNN separate touching bunches at different
depths (GrapesNet Dataset 3 style). Both variants are the RGB-D demo config
(``configs/mask_rcnn_grapes_rgbd_cpu_demo.yaml``) trained in this process one after the
other, with the same data, seed, iterations, image sizes and evaluators; they differ only in
``INPUT.DEPTH.ENABLED`` and the depth entry of ``MODEL.PIXEL_MEAN`` / ``MODEL.PIXEL_STD``.
Each run keeps its folder ``<output_dir>/<variant>/seed<k>/`` (log.txt, config.yaml,
checkpoint, inference/, run.json, via experiments.compare.run_one); the table goes to
``rgbd_ablation.md`` and everything to ``rgbd_ablation.json``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..core import paths as layout
from ..core.depth import read_depth
from ..core.errors import GrapeInputError
from ..core.fileio import atomic_open, read_json, write_json_atomic
from ..core.tables import markdown_table
from ..data.build import build_config
from ..data.datasets import register_from_config
from ..synthetic.export import ensure_dataset, generate_rgbd_scenes
from ..synthetic.rgbd import scene_config
from .compare import ModelSpec, budget_opts, mean_std, run_one

logger = logging.getLogger(__name__)

RGBD_CONFIG = "configs/mask_rcnn_grapes_rgbd_cpu_demo.yaml"
#: What the RGB-D demo config registers: ``make synth-rgbd`` writes it.
DEFAULT_DATA = layout.RGBD_ROOT
VARIANTS = ("RGB", "RGB-D")
#: Columns of the table: (key in a run's row, header, format).
METRICS = (
    ("segm_ap", "segm AP", "{:.1f}"),
    ("segm_ap50", "segm AP50", "{:.1f}"),
    ("segm_ap75", "segm AP75", "{:.1f}"),
    ("bbox_ap", "bbox AP", "{:.1f}"),
    ("count_mae", "count MAE", "{:.2f}"),
    ("f1_50", "F1@50", "{:.1f}"),
    ("train_s", "train wall (s)", "{:.0f}"),
)


def depth_statistics(coco_json: str | os.PathLike, image_root: str | os.PathLike,
                     max_mm: float) -> dict:
    """Mean and std (mm) of the valid (non-zero) depth readings of a COCO split's depth
    images, clipped to ``max_mm`` as the model sees them: what ``MODEL.PIXEL_MEAN`` /
    ``PIXEL_STD``'s fourth values should be for that data. Holes (0) are left out: they
    stay a value of their own after normalisation."""
    images = read_json(coco_json).get("images", [])
    depth_files = [im["depth_file"] for im in images if isinstance(im, dict)
                   and im.get("depth_file")]
    if not depth_files:
        raise GrapeInputError(f"{coco_json}: no image entry names a depth_file")
    total, total_sq, valid, pixels = 0.0, 0.0, 0, 0
    for name in tqdm(depth_files, desc="depth statistics", unit="img", leave=False):
        path = Path(image_root) / name
        depth = read_depth(path)  # one line for a missing, undecodable or 8-bit file
        values = np.minimum(depth[depth > 0].astype(np.float64), max_mm)
        total += float(values.sum())
        total_sq += float(np.square(values).sum())
        valid += values.size
        pixels += depth.size
    if not valid:
        raise GrapeInputError(f"{coco_json}: its depth images hold no valid reading")
    mean = total / valid
    return {"images": len(depth_files), "mean_mm": mean,
            "std_mm": math.sqrt(max(total_sq / valid - mean * mean, 0.0)),
            "hole_fraction": 1 - valid / pixels, "max_mm": max_mm}


def ensure_rgbd_scenes(root: str | os.PathLike, num_train: int, num_val: int,
                       frame: tuple[int, int] = (320, 240), seed: int = 0) -> None:
    """Generate the scenes once (``tools/make_synthetic.py --rgbd-scenes``); a set stamped
    with these split sizes, frame and seed is reused, any other is a one-line error (not
    replaced: it may be another experiment's) — synthetic.export.ensure_dataset."""
    sizes = {"train": num_train, "val": num_val}
    ensure_dataset(root, layout.dataset_stamp("rgbd", sizes, seed, frame),
                   lambda: generate_rgbd_scenes(
                       root, sizes, seed=seed,
                       cfg=scene_config(width=frame[0], height=frame[1]), overwrite=True),
                   other="refuse")


def data_opts(root: str | os.PathLike) -> list[str]:
    """Overrides registering the scenes under ``root`` with the names the config uses."""
    entries = [[f"grapes_rgbd_{s}", str(layout.coco_json(root, s)), str(root)]
               for s in layout.SPLITS]
    return ["DATASETS.REGISTER", json.dumps(entries),
            "DATASETS.TRAIN", "('grapes_rgbd_train',)", "DATASETS.TEST", "('grapes_rgbd_val',)"]


def variant_opts(variant: str, pixel_mean: Sequence[float], pixel_std: Sequence[float]
                 ) -> list[str]:
    """The only overrides between the two variants: depth on or off, and 4 or 3
    normalisation values (the same B, G, R ones)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}")
    channels = 4 if variant == "RGB-D" else 3
    return ["INPUT.DEPTH.ENABLED", str(variant == "RGB-D"),
            "MODEL.PIXEL_MEAN", str(list(pixel_mean)[:channels]),
            "MODEL.PIXEL_STD", str(list(pixel_std)[:channels])]


def variant_config(variant: str, run_dir: Path, data_root: str | os.PathLike, max_iter: int,
                   seed: int, opts: Sequence[str] = (), config_file: str = RGBD_CONFIG):
    """The frozen config of one run."""
    base = build_config(config_file, [*data_opts(data_root), *opts])
    return build_config(config_file, [
        *data_opts(data_root), *opts,
        *variant_opts(variant, base.MODEL.PIXEL_MEAN, base.MODEL.PIXEL_STD),
        *budget_opts(base, max_iter * base.SOLVER.IMS_PER_BATCH), "TEST.EVAL_PERIOD", "0",
        "OUTPUT_DIR", str(run_dir), "SEED", str(seed),
    ])


def run_row(row: dict) -> dict:
    """compare.run_one's row plus the COCO numbers this table shows."""
    results = row["results"]
    segm, bbox = results.get("segm", {}), results.get("bbox", {})
    return {**row, "variant": row["model"], "segm_ap": segm.get("AP"),
            "segm_ap50": segm.get("AP50"), "segm_ap75": segm.get("AP75"),
            "bbox_ap": bbox.get("AP")}


def format_cell(value: float | None, std: float | None, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value) + (" ± " + fmt.format(std) if std is not None else "")


def render_markdown(runs: list[dict], context: dict) -> str:
    """Per-run rows, the mean over seeds per variant, and the RGB-D - RGB difference of
    segm AP per seed (the paired comparison: same seed, same data order)."""
    headers = ["variant", "seed", *(h for _, h, _ in METRICS)]
    align = ["left", "right", *["right"] * len(METRICS)]
    rows = [[r["variant"], r["seed"], *(format_cell(r.get(k), None, f) for k, _, f in METRICS)]
            for r in runs]
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        if len(mine) > 1:
            rows.append([f"**{variant} mean ± std**", len(mine), *(
                format_cell(*mean_std([r.get(k) for r in mine]), f) for k, _, f in METRICS)])
    diffs = paired_differences(runs)
    lines = [
        f"# {context['title']}", "",
        f"- data: {context['data']} ({context['train_images']} train / "
        f"{context['val_images']} val scenes, {context['frame']}); scored on the val split",
        f"- budget per run: {context['iterations']} iterations x {context['images_per_batch']} "
        f"images; test size {context['test_size']}; config {context['config']}",
        f"- the variants differ only in INPUT.DEPTH.ENABLED and the depth entry of "
        f"PIXEL_MEAN / PIXEL_STD ({context['depth_norm']})",
        f"- machine: {context['machine']}; wall time of this invocation "
        f"{context['wall_s']:.0f} s (runs reused from an earlier one cost none)",
        "",
        markdown_table(headers, rows, align),
        "",
    ]
    if diffs:
        mean, std = mean_std(diffs)
        lines.append("segm AP, RGB-D minus RGB, per seed: "
                     + ", ".join(f"{d:+.1f}" for d in diffs)
                     + (f" (mean {mean:+.1f} ± {std:.1f})" if std is not None else
                        " (one seed: how much of it is noise is unknown; add --seeds)"))
    return "\n".join(lines) + "\n"


def paired_differences(runs: list[dict]) -> list[float]:
    """segm AP of RGB-D minus RGB for every seed that has both."""
    by_key = {(r["variant"], r["seed"]): r.get("segm_ap") for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    return [by_key[("RGB-D", s)] - by_key[("RGB", s)] for s in seeds
            if by_key.get(("RGB-D", s)) is not None and by_key.get(("RGB", s)) is not None]


def finished_run(run_dir: Path, cfg) -> dict | None:
    """The row of a run this folder already finished with exactly this config (its
    ``config.yaml`` is written before training, ``run.json`` after scoring), so that adding
    a seed, or rerunning after an interruption, trains only what is missing."""
    saved, row = run_dir / "config.yaml", run_dir / "run.json"
    if not (saved.is_file() and row.is_file()):
        return None
    if saved.read_text(encoding="utf-8") != cfg.dump():
        return None
    logger.info("%s: finished with this config; reused", run_dir)
    return read_json(row)


def run_rgbd_ablation(
    output_dir: str | os.PathLike,
    data_root: str | os.PathLike = DEFAULT_DATA,
    num_train: int = 200,
    num_val: int = 50,
    frame: tuple[int, int] = (320, 240),
    max_iter: int = 600,
    seeds: Sequence[int] = (0,),
    opts: Sequence[str] = (),
    config_file: str = RGBD_CONFIG,
) -> list[dict]:
    """Generate (once) the scenes, train and score RGB then RGB-D for each seed (runs already
    finished with the same config are reused), write ``rgbd_ablation.md`` / ``.json`` in
    ``output_dir``; returns the per-run rows."""
    if max_iter < 1 or not seeds:
        raise GrapeInputError(f"need --iters >= 1 and at least one seed, got {max_iter}, "
                              f"{list(seeds)}")
    start = time.perf_counter()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    ensure_rgbd_scenes(data_root, num_train, num_val, frame)
    runs = []
    for seed in seeds:
        for variant in VARIANTS:
            run_dir = output_dir / variant.lower().replace("-", "") / f"seed{seed}"
            cfg = variant_config(variant, run_dir, data_root, max_iter, seed, opts, config_file)
            register_from_config(cfg)
            row = finished_run(run_dir, cfg)
            if row is None:
                row = run_one(ModelSpec(config_file, variant, variant), cfg, run_dir,
                              eval_only=False)
            runs.append(run_row(row))
            logger.info("%s seed %d: segm AP %.1f (train %.0f s)", variant, seed,
                        runs[-1]["segm_ap"] or float("nan"), runs[-1]["train_s"] or 0)
    rgbd_cfg = variant_config("RGB-D", output_dir, data_root, max_iter, seeds[0], opts,
                              config_file)
    context = {
        "title": "Mask R-CNN with and without a depth channel (synthetic RGB-D scenes)",
        "data": str(data_root), "train_images": num_train, "val_images": num_val,
        "frame": f"{frame[0]}x{frame[1]}", "config": config_file,
        "iterations": runs[0]["iterations"], "images_per_batch": runs[0]["images_per_batch"],
        "test_size": f"{rgbd_cfg.INPUT.MIN_SIZE_TEST} px short side",
        "depth_norm": f"depth mean {rgbd_cfg.MODEL.PIXEL_MEAN[3]:g} mm, std "
                      f"{rgbd_cfg.MODEL.PIXEL_STD[3]:g} mm, clipped at "
                      f"{rgbd_cfg.INPUT.DEPTH.MAX_MM} mm",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
                   f"with {torch.get_num_threads()} threads",
        "wall_s": time.perf_counter() - start,
    }
    diffs = paired_differences(runs)
    with atomic_open(output_dir / "rgbd_ablation.md") as f:
        f.write(render_markdown(runs, context))
    write_json_atomic(output_dir / "rgbd_ablation.json", {
        "context": context, "segm_ap_differences": diffs,
        "segm_ap_difference_mean": statistics.fmean(diffs) if diffs else None,
        "runs": runs,
    }, indent=2, nan_as_null=True)
    return runs
