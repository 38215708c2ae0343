"""Side-by-side comparison of grape models (Mask R-CNN and the semantic baselines).

Every model trains in this process, one after another, on the same train / val split (the
first config's datasets are imposed on all) with the same budget in images seen (MAX_ITER =
images / IMS_PER_BATCH, LR steps and warm-up scaled with it), then is scored by the same
evaluators (``Trainer.build_evaluator``). Each run keeps its own folder
``<output_dir>/<model>/seed<k>/`` (log.txt, config.yaml, metrics.json, checkpoint,
inference/, run.json); the table goes to comparison.md / comparison.csv / comparison.png.
"""

from __future__ import annotations

import csv
import gc
import io
import logging
import math
import os
import platform
import statistics
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.engine import hooks
from detectron2.utils.env import seed_all_rng

from ..core import paths as layout
from ..core.errors import GrapeInputError
from ..core.fileio import atomic_open, read_json, write_json_atomic
from ..core.tables import markdown_table
from ..data.build import build_config
from ..data.datasets import register_from_config, synthetic_dataset_name
from ..engine import guard_run, run_training
from ..engine.checks import check_meta_architecture
from ..engine.trainer import Trainer
from .demo import ensure_synthetic

logger = logging.getLogger(__name__)

DEFAULT_CONFIGS = (
    "configs/mask_rcnn_grapes_cpu_demo.yaml",
    "configs/semantic/segnet_grapes_cpu_demo.yaml",
    "configs/semantic/pspnet_r50_grapes_cpu_demo.yaml",
    "configs/semantic/unet_vgg16_grapes_cpu_demo.yaml",
    "configs/semantic/fcn8s_grapes_cpu_demo.yaml",
)
DISPLAY_NAMES = {"GeneralizedRCNN": "Mask R-CNN", "FCN8s": "FCN-8s"}
FOLDER_NAMES = {"GeneralizedRCNN": "mask_rcnn"}
# The synthetic set `make demo` generates (grape_instances.demo.run_demo's defaults).
# Columns of comparison.csv / .md: (key in a run's metrics, header, format).
# Ranked by bunch IoU: the two-class mean IoU is dominated by the background (every model
# scores 85-94 there), so it is shown, but after the bunch's own scores.
METRICS = (
    ("iou_bunch", "bunch IoU", "{:.1f}"),
    ("dice_bunch", "bunch Dice", "{:.1f}"),
    ("miou", "mIoU", "{:.1f}"),
    ("segm_ap", "segm AP", "{:.1f}"),
    ("count_mae", "count MAE", "{:.2f}"),
    ("p_50", "P@50", "{:.1f}"),
    ("r_50", "R@50", "{:.1f}"),
    ("f1_50", "F1@50", "{:.1f}"),
    ("params_m", "params (M)", "{:.2f}"),
    ("train_s", "train wall (s)", "{:.0f}"),
    ("s_per_iter", "s/iter", "{:.3f}"),
    ("infer_ms", "infer ms/img", "{:.1f}"),
)


@dataclass
class ModelSpec:
    config_file: str
    key: str  # folder name under the output dir
    label: str  # name in the table


def model_specs(config_files: Sequence[str], opts: Sequence[str]) -> list[ModelSpec]:
    """One spec per config, named after its meta-architecture (the config's name on a clash)."""
    cfgs = [build_config(f, opts) for f in config_files]
    for cfg in cfgs:
        check_meta_architecture(cfg)
    archs = [cfg.MODEL.META_ARCHITECTURE for cfg in cfgs]
    specs = []
    for config_file, arch in zip(config_files, archs, strict=True):
        stem = Path(config_file).stem
        key = FOLDER_NAMES.get(arch, arch.lower()) if archs.count(arch) == 1 else stem
        label = DISPLAY_NAMES.get(arch, arch) if archs.count(arch) == 1 else stem
        specs.append(ModelSpec(config_file, key, label))
    if len({s.key for s in specs}) != len(specs):
        raise GrapeInputError("--configs: the same config is listed twice")
    return specs


def budget_opts(cfg: CfgNode, images_seen: int | None) -> list[str]:
    """Overrides for a schedule of ``images_seen`` images: MAX_ITER = images_seen /
    IMS_PER_BATCH, with ``cfg``'s LR steps and warm-up scaled alike (none for None)."""
    if images_seen is None:
        return []
    if images_seen < cfg.SOLVER.IMS_PER_BATCH:
        raise GrapeInputError(
            f"--images-seen {images_seen} is less than one batch ({cfg.SOLVER.IMS_PER_BATCH})"
        )
    max_iter = round(images_seen / cfg.SOLVER.IMS_PER_BATCH)
    scale = max_iter / cfg.SOLVER.MAX_ITER
    steps = sorted({round(s * scale) for s in cfg.SOLVER.STEPS})
    return ["SOLVER.STEPS", repr(tuple(s for s in steps if 0 < s < max_iter)),
            "SOLVER.WARMUP_ITERS", str(round(cfg.SOLVER.WARMUP_ITERS * scale)),
            "SOLVER.MAX_ITER", str(max_iter)]


def dataset_opts(reference: CfgNode) -> list[str]:
    """Overrides giving a config the reference's data (datasets, roots, semantic cache)."""
    return ["DATASETS.TRAIN", repr(tuple(reference.DATASETS.TRAIN)),
            "DATASETS.TEST", repr(tuple(reference.DATASETS.TEST)),
            "DATASETS.SYNTHETIC_ROOT", reference.DATASETS.SYNTHETIC_ROOT,
            "DATASETS.REGISTER", repr([list(map(str, e)) for e in reference.DATASETS.REGISTER]),
            "DATASETS.SEMANTIC_CACHE_DIR", reference.DATASETS.SEMANTIC_CACHE_DIR]


def run_config(
    spec: ModelSpec, reference: CfgNode, opts: Sequence[str], images_seen: int | None,
    seed: int, run_dir: Path,
) -> CfgNode:
    """The config of one run: its own model and schedule, the reference's data; built whole
    by ``build_config`` (so its class count follows that data), never patched afterwards."""
    base = build_config(spec.config_file, [*opts, *dataset_opts(reference)])
    return build_config(spec.config_file, [
        *opts, *dataset_opts(reference), *budget_opts(base, images_seen),
        "TEST.EVAL_PERIOD", "0", "SEED", str(seed), "OUTPUT_DIR", str(run_dir)])


class TrainOnlyTrainer(Trainer):
    """The Trainer without its evaluation hook: evaluation is run and timed separately."""

    def build_hooks(self):
        return [h for h in super().build_hooks() if not isinstance(h, hooks.EvalHook)]


class InferenceTimer:
    """Model forward time per image in eval mode (Detectron2's "pure compute time"),
    skipping the first ``warmup`` calls."""

    def __init__(self, model: torch.nn.Module, warmup: int = 2) -> None:
        self.model, self.warmup = model, warmup
        self.calls, self.images, self.seconds = 0, 0, 0.0
        self._handles: list = []
        self._start = 0.0

    def _sync(self) -> None:
        if torch.cuda.is_available() and next(self.model.parameters()).is_cuda:
            torch.cuda.synchronize()

    def _before(self, module, args) -> None:
        if not module.training:
            self._sync()
            self._start = time.perf_counter()

    def _after(self, module, args, output) -> None:
        if module.training:
            return
        self._sync()
        self.calls += 1
        if self.calls > self.warmup:
            self.seconds += time.perf_counter() - self._start
            self.images += len(args[0])

    def __enter__(self) -> InferenceTimer:
        self._handles = [self.model.register_forward_pre_hook(self._before),
                         self.model.register_forward_hook(self._after)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()

    @property
    def ms_per_image(self) -> float:
        return 1000 * self.seconds / self.images if self.images else float("nan")


@contextmanager
def log_to_file(path: Path):
    """Copy the project's and Detectron2's log records to ``path`` while the block runs."""
    handler = logging.FileHandler(path, mode="a")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(name)s %(levelname)s: %(message)s"))
    names = ("detectron2", "grape_instances", "fvcore")
    for name in names:
        logging.getLogger(name).addHandler(handler)
    try:
        yield
    finally:
        for name in names:
            logging.getLogger(name).removeHandler(handler)
        handler.close()


def single_dataset_results(results: dict, cfg: CfgNode) -> dict:
    """Trainer.test nests results by dataset name when there are several test sets."""
    first = cfg.DATASETS.TEST[0]
    return results[first] if first in results and len(cfg.DATASETS.TEST) > 1 else results


def foreground_iou(sem: dict) -> float | None:
    """IoU of the bunch class; with several foreground classes, their mean."""
    ious = [v for k, v in sem.items() if k.startswith("IoU-") and k != "IoU-background"]
    return sum(ious) / len(ious) if ious else None


def summarize_results(results: dict) -> dict[str, float | None]:
    """The table's metrics of one run; None where the model has none (semantic models have
    no segm AP, count or instance P / R / F1)."""
    sem, segm, count, inst = (results.get(k, {})
                              for k in ("sem_seg", "segm", "count", "instance"))
    return {
        "iou_bunch": foreground_iou(sem),
        "miou": sem.get("mIoU"),
        "dice_bunch": sem.get("Dice-bunch"),
        "segm_ap": segm.get("AP"),
        "count_mae": count.get("MAE"),
        "p_50": inst.get("P@50"),
        "r_50": inst.get("R@50"),
        "f1_50": inst.get("F1@50"),
    }


def train_or_load(cfg: CfgNode, run_dir: Path, eval_only: bool):
    """Train (returning the model and its timings) or load the run's checkpoint."""
    if eval_only:
        weights = run_dir / "model_final.pth"
        if not weights.is_file():
            raise GrapeInputError(f"{weights}: checkpoint not found (run without --eval-only)")
        guard_run(cfg, eval_only=True)  # the folder's lock: run.json and the log are rewritten
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model).load(str(weights))
        previous = run_dir / "run.json"
        timings = {}
        if previous.is_file():
            timings = {k: read_json(previous).get(k) for k in ("train_s", "s_per_iter")}
        return model, timings
    start = time.perf_counter()
    trainer = run_training(cfg, resume=False, trainer_cls=TrainOnlyTrainer)
    train_s = time.perf_counter() - start
    step_times = [t for t, _ in trainer.storage.history("time").values()] if (
        "time" in trainer.storage.histories()) else []
    s_per_iter = statistics.median(step_times) if step_times else train_s / cfg.SOLVER.MAX_ITER
    model = trainer.model
    del trainer  # frees its data-loader workers before the next model
    gc.collect()
    return model, {"train_s": train_s, "s_per_iter": s_per_iter}


def run_one(spec: ModelSpec, cfg: CfgNode, run_dir: Path, eval_only: bool) -> dict:
    """Train (or load) one model, evaluate it, and return (and save) its row."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with log_to_file(run_dir / "log.txt"):
        logger.info("%s (%s): %d iterations x %d images, seed %d", spec.label, spec.config_file,
                    cfg.SOLVER.MAX_ITER, cfg.SOLVER.IMS_PER_BATCH, cfg.SEED)
        with atomic_open(run_dir / "config.yaml") as f:
            f.write(cfg.dump())
        seed_all_rng(cfg.SEED)
        model, timings = train_or_load(cfg, run_dir, eval_only)
        with InferenceTimer(model) as timer:
            results = single_dataset_results(Trainer.test(cfg, model), cfg)
    row = {
        "model": spec.label,
        "config": spec.config_file,
        "seed": cfg.SEED,
        "device": cfg.MODEL.DEVICE,
        "iterations": cfg.SOLVER.MAX_ITER,
        "images_per_batch": cfg.SOLVER.IMS_PER_BATCH,
        **summarize_results(results),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "train_s": timings.get("train_s"),
        "s_per_iter": timings.get("s_per_iter"),
        "infer_ms": timer.ms_per_image,
        "results": {k: dict(v) for k, v in results.items()},
    }
    write_json_atomic(run_dir / "run.json", row, indent=2, nan_as_null=True)  # COCO APl: NaN
    del model
    gc.collect()
    return row


def mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the available values (std None for one)."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def aggregate(runs: list[dict]) -> list[dict]:
    """One row per model (mean and std over seeds), best bunch IoU first."""
    by_model: dict[str, list[dict]] = {}
    for run in runs:
        by_model.setdefault(run["model"], []).append(run)
    rows = []
    for model, model_runs in by_model.items():
        row = {"model": model, "config": model_runs[0]["config"], "seeds": len(model_runs),
               "iterations": model_runs[0]["iterations"],
               "images_per_batch": model_runs[0]["images_per_batch"]}
        for key, _, _ in METRICS:
            # .get: run.json files written before a column existed lack it
            row[key], row[f"{key}_std"] = mean_std([r.get(key) for r in model_runs])
        row["params_m_std"] = None  # the same for every seed
        rows.append(row)
    rows.sort(key=lambda r: -(r["iou_bunch"] if r["iou_bunch"] is not None else -math.inf))
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return rows


def format_cell(row: dict, key: str, fmt: str) -> str:
    if row[key] is None:
        return "-"
    text = fmt.format(row[key])
    std = row.get(f"{key}_std")
    return text + (" ± " + fmt.format(std) if std is not None else "")


def comparison_title(devices: set[str]) -> str:
    if devices == {"cpu"}:
        return "Grape model comparison: CPU smoke comparison (not a benchmark)"
    return f"Grape model comparison ({', '.join(sorted(devices))})"


def render_markdown(rows: list[dict], context: dict) -> str:
    lines = [f"# {context['title']}", ""]
    if context["devices"] == {"cpu"}:
        lines += [
            "**CPU smoke comparison.** Narrow CPU variants trained from scratch for a few "
            "minutes each on a few CPU threads: it shows that all five models train and are "
            "scored the same way, not which architecture is better. The real comparison is "
            "the same command with the full configs and several seeds on a GPU.", "",
        ]
    lines += [
        f"- train: {context['train']}; scored on: {context['test']}",
        f"- budget: {context['budget']}",
        f"- seeds: {context['seeds']} (mean ± sample std over seeds when > 1)",
        f"- instance models: semantic metrics on masks scoring >= "
        f"{context['semantic_thresh']}, bunch count of detections scoring >= "
        f"{context['count_thresh']} (mean |predicted - true| per image); P / R / F1@50 "
        f"(Santos et al. 2020) of detections scoring >= "
        f"{context.get('f1_thresh', 'TEST.F1_SCORE_THRESH')}, matched one-to-one to bunches "
        "at mask IoU >= 0.5; '-' where a model has no such metric",
        "- mIoU and Dice x 100 on pixels, ignore regions excluded; segm AP is COCO's; "
        "infer ms/img is the model's forward time at batch 1 (pure compute); "
        "s/iter is the median training step (data loading included)",
        f"- machine: {context['machine']}; total wall time {context['wall_s']:.0f} s",
        "",
        markdown_table(
            ["rank", "model", *(h for _, h, _ in METRICS), "seeds"],
            ([row["rank"], row["model"], *(format_cell(row, key, fmt) for key, _, fmt in METRICS),
              row["seeds"]] for row in rows),
            ["right", "left", *["right"] * len(METRICS), "right"],
        ),
    ]
    return "\n".join(lines) + "\n"


def render_csv(rows: list[dict]) -> str:
    columns = ["rank", "model", "config", "seeds", "iterations", "images_per_batch"]
    for key, _, _ in METRICS:
        columns += [key, f"{key}_std"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in columns})
    return out.getvalue()


def render_chart(rows: list[dict], title: str, path: Path) -> None:
    """Bar charts of mIoU, bunch Dice and inference time, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    panels = [("iou_bunch", "bunch IoU"), ("dice_bunch", "bunch Dice"),
              ("infer_ms", "inference ms / image")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.0))
    names = [r["model"] for r in rows]
    for ax, (key, label) in zip(axes, panels, strict=True):
        values = [r[key] if r[key] is not None else 0.0 for r in rows]
        errors = [r[f"{key}_std"] or 0.0 for r in rows]
        ax.bar(names, values, yerr=errors if any(errors) else None, color="#7b3f8c", capsize=3)
        ax.set_title(label)
        ax.tick_params(axis="x", labelrotation=30)
        if key != "infer_ms":
            ax.set_ylim(0, 100)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def ensure_data(reference: CfgNode) -> None:
    """Generate the demo's synthetic set when the configs use the synthetic splits and their
    root holds none; a finished synthetic set there is compared on as it is."""
    synthetic = {synthetic_dataset_name(s) for s in layout.SPLITS}
    if synthetic & set(reference.DATASETS.TRAIN) | synthetic & set(reference.DATASETS.TEST):
        ensure_synthetic(reference.DATASETS.SYNTHETIC_ROOT, other="use")


def run_comparison(
    output_dir: str | os.PathLike,
    config_files: Sequence[str] = DEFAULT_CONFIGS,
    images_seen: int | None = 1200,
    seeds: int = 1,
    eval_only: bool = False,
    opts: Sequence[str] = (),
) -> list[dict]:
    """Train / evaluate every config, write comparison.{md,csv,png}; returns the table rows."""
    if seeds < 1:
        raise GrapeInputError(f"--seeds must be at least 1, got {seeds}")
    start = time.perf_counter()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    specs = model_specs(config_files, opts)
    reference = build_config(config_files[0], opts)
    ensure_data(reference)
    register_from_config(reference)
    runs, devices = [], set()
    for spec in specs:
        for seed in range(seeds):
            run_dir = output_dir / spec.key / f"seed{seed}"
            cfg = run_config(spec, reference, opts, images_seen, seed, run_dir)
            register_from_config(cfg)
            devices.add(cfg.MODEL.DEVICE.split(":")[0])
            runs.append(run_one(spec, cfg, run_dir, eval_only))
            logger.info("%s seed %d: %s", spec.label, seed,
                        {k: runs[-1][k] for k, _, _ in METRICS})
    rows = aggregate(runs)
    first = runs[0]
    context = {
        "title": comparison_title(devices),
        "devices": devices,
        "train": ", ".join(reference.DATASETS.TRAIN),
        "test": reference.DATASETS.TEST[0],
        "budget": (f"{images_seen} images seen per model "
                   f"({first['iterations']} iterations x {first['images_per_batch']} images)"
                   if images_seen else "each config's own schedule")
        + (" (checkpoints evaluated, not retrained)" if eval_only else ""),
        "seeds": seeds,
        "semantic_thresh": reference.TEST.SEMANTIC_SCORE_THRESH,
        "count_thresh": reference.TEST.COUNT_SCORE_THRESH,
        "f1_thresh": reference.TEST.F1_SCORE_THRESH,
        "machine": (f"{platform.machine()}, {os.cpu_count()} CPUs, torch "
                    f"{torch.__version__} with {torch.get_num_threads()} threads"
                    + (f", {torch.cuda.get_device_name()}" if "cuda" in devices else "")),
        "wall_s": time.perf_counter() - start,
    }
    with atomic_open(output_dir / "comparison.md") as f:
        f.write(render_markdown(rows, context))
    with atomic_open(output_dir / "comparison.csv") as f:
        f.write(render_csv(rows))
    render_chart(rows, context["title"], output_dir / "comparison.png")
    return rows
