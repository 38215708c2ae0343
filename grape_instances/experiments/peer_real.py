"""``make peer-real``: issue 15's head-to-head with Ultralytics YOLO-seg on the real photos.

The peer is what most people would pick instead: YOLO11n-seg and YOLO11s-seg, built from
their model YAML (random weights: nothing can be downloaded here, and the recipe starts from
random weights too), trained on the training part of ``make real``'s split (the project's own
split files, converted by ``convert.py yolo``) for the recipe's training wall time on the same
CPU (Ultralytics' ``time=`` argument: it re-plans its epochs to end within the budget), with
Ultralytics' default augmentation and settings except ``plots=False`` (no fonts to fetch).

Both sides are scored on the validation part by the project's evaluators
(:func:`~grape_instances.experiments.fragments.score_outputs`: COCO segm / bbox AP through
pycocotools, instance P / R / F1 at mask IoU 0.3 / 0.5 / 0.8, count error, false positives by
kind). YOLO's predictions become a COCO results file first (masks at the photo's own size as
RLE, score = box confidence, category ids of the dataset), and that file is what is scored.
Speed: whole pipeline (decode -> model -> masks at photo size -> COCO results) over the
validation photos scaled to 1024 px wide, each model in a fresh process on the same threads.

Ultralytics (AGPL-3.0) is an optional extra (``make install-peers``): this module imports it
only inside the functions that run it, in spawned processes, and says so in one line when it
is missing. Its settings and downloads are kept inside the output folder
(``YOLO_CONFIG_DIR``), offline, without auto-installs.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import resource
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ..core.errors import GrapeInputError
from ..core.fileio import atomic_open, read_json, write_json_atomic
from ..core.fresh_process import in_fresh_process
from ..core.masks import mask_to_rle, rle_to_mask
from ..core.tables import markdown_table
from .real import REAL_CONFIG, TRAINING_TIME, training_seconds

logger = logging.getLogger(__name__)

PEER_MODELS = ("yolo11n-seg", "yolo11s-seg")
DEFAULT_IMGSZ = 1024
#: score thresholds of P / R / F1 and the count: Ultralytics' predict default and the recipe's
DEFAULT_SCORES = (0.25, 0.5)
#: YOLO's predictions for AP: its validator's confidence floor, at most as many as the recipe
AP_CONF = 0.001
#: Ultralytics' predict default: the confidence of the timed YOLO pipeline
PREDICT_CONF = 0.25
MAX_DET = 100
INSTALL_HINT = "ultralytics is not installed: make install-peers"
TRAIN_RECORD = "peer_train.json"


# --------------------------------------------------------------------------- pure parts

def require_ultralytics() -> None:
    """One line, before any work, when the optional extra is missing."""
    if importlib.util.find_spec("ultralytics") is None:
        raise GrapeInputError(INSTALL_HINT)


def split_files(data_dir: str | os.PathLike) -> dict[str, Path]:
    """``make real``'s train / val split files under ``data_dir`` (its ``--data-dir``)."""
    splits = {k: Path(data_dir, "split", f"wgisd_train_{k}.json") for k in ("train", "val")}
    for path in splits.values():
        if not path.is_file():
            raise GrapeInputError(f"{path}: split file not found; run `make real` first, or "
                                  "pass the --data-dir it used")
    return splits


def recipe_budget(recipe_dir: str | os.PathLike, budget_minutes: float | None = None) -> dict:
    """The training budget in seconds: ``budget_minutes`` when given, else the recipe's
    training wall time recorded in ``recipe_dir`` (``training_time.json``, or Detectron2's
    'Total training time' log line). ``note`` warns when the recipe's run was resumed part
    way, whose record may hold only the part after the resume."""
    if budget_minutes is not None:
        if not budget_minutes > 0:
            raise GrapeInputError(f"--budget-minutes {budget_minutes}: must be > 0")
        return {"seconds": 60.0 * budget_minutes, "source": "--budget-minutes"}
    recipe_dir = Path(recipe_dir)
    seconds = training_seconds(recipe_dir) if recipe_dir.is_dir() else None
    if seconds is None:
        raise GrapeInputError(f"{recipe_dir}: no {TRAINING_TIME} nor 'Total training time' in "
                              "log.txt (the recipe's training time); pass --budget-minutes")
    source = recipe_dir / TRAINING_TIME
    budget = {"seconds": seconds,
              "source": str(source if source.is_file() else recipe_dir / "log.txt")}
    summary = recipe_dir / "real_summary.json"
    if summary.is_file():
        record = read_json(summary)
        resumed = int(record.get("resumed_from_iteration") or 0)
        total = int(record.get("iterations") or 0)
        if 0 < resumed < total:
            budget["note"] = (f"the recipe's run in {recipe_dir} was resumed at iteration "
                              f"{resumed} of {total}: its record may hold only the time after "
                              "the resume; pass --budget-minutes with the whole training's time")
    return budget


def masks_to_coco_results(masks: Iterable[np.ndarray], boxes_xyxy: Sequence[Sequence[float]],
                          scores: Sequence[float], classes: Sequence[int], image_id,
                          category_ids: Sequence[int]) -> list[dict]:
    """COCO results of one photo from masks at the photo's size (one H x W array at a time),
    boxes (x0, y0, x1, y1 in photo pixels), scores and class indices (``category_ids[cls]``
    is the dataset's id)."""
    out = []
    for mask, box, score, cls in zip(masks, boxes_xyxy, scores, classes, strict=True):
        x0, y0, x1, y1 = (float(v) for v in box)
        out.append({"image_id": image_id, "category_id": int(category_ids[int(cls)]),
                    "segmentation": mask_to_rle(np.asarray(mask, bool)),
                    "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score)})
    return out


def results_to_instances(results: Sequence[dict], height: int, width: int,
                         category_ids: Sequence[int]):
    """Detectron2 ``Instances`` of one photo's COCO results (what the evaluators take):
    masks decoded from the RLE, classes contiguous (position in ``category_ids``)."""
    import torch
    from detectron2.structures import Boxes, Instances

    contiguous = {cid: i for i, cid in enumerate(category_ids)}
    inst = Instances((height, width))
    masks = np.zeros((len(results), height, width), bool)
    for i, r in enumerate(results):
        masks[i] = rle_to_mask(r["segmentation"]) > 0
    inst.pred_masks = torch.from_numpy(masks)
    boxes = [[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in results)]
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.scores = torch.tensor([r["score"] for r in results], dtype=torch.float32)
    inst.pred_classes = torch.tensor([contiguous[r["category_id"]] for r in results],
                                     dtype=torch.int64)
    return inst


COLUMNS = ["model", "params (M)", "train min", "trained", "input px", "score", "segm AP",
           "AP50", "F1@0.3", "F1@0.5", "P@0.5", "R@0.5", "F1@0.8", "count MAE", "bias",
           "photos/s", "CPU-s/photo"]


def peer_table(rows: Sequence[dict]) -> str:
    """One markdown row per (model, score threshold): accuracy on the validation part and
    whole-pipeline speed."""
    nan = float("nan")

    def num(value, fmt):
        return "" if value is None else format(value, fmt)

    body = []
    for r in rows:
        inst, segm, speed = r["instance"], r["segm"], r.get("speed") or {}
        body.append([r["model"], num(r.get("params_m"), ".1f"), num(r.get("train_min"), ".1f"),
                     r.get("trained", ""), r.get("imgsz", ""), f"{r['score']:.2f}",
                     f"{segm.get('AP', nan):.1f}", f"{segm.get('AP50', nan):.1f}",
                     *(f"{inst.get(k, nan):.1f}" for k in ("F1@30", "F1@50", "P@50", "R@50",
                                                            "F1@80")),
                     f"{r['count']['MAE']:.2f}", f"{r['count']['bias']:+.2f}",
                     num(speed.get("photos_per_s"), ".2f"),
                     num(speed.get("cpu_s_per_photo"), ".2f")])
    return markdown_table(COLUMNS, body, ["left", *["right"] * (len(COLUMNS) - 1)])


# --------------------------------------------------------------------------- Ultralytics

def _ultralytics(config_dir: str, threads: int):
    """Import Ultralytics in this (fresh, spawned) process: settings in ``config_dir``, offline,
    no auto-install, integrations and sync off, no font download (fonts are for plots), and
    ``threads`` torch threads like the recipe (Ultralytics would take one core fewer)."""
    os.environ.update({"YOLO_CONFIG_DIR": str(config_dir), "YOLO_OFFLINE": "true",
                       "YOLO_AUTOINSTALL": "false"})
    import torch

    torch.set_num_threads(threads)
    try:
        import ultralytics
        from ultralytics import settings
    except ImportError:
        raise GrapeInputError(INSTALL_HINT) from None
    settings.update({k: False for k, v in settings.items() if isinstance(v, bool)})
    import ultralytics.data.utils as data_utils
    import ultralytics.utils.torch_utils as torch_utils

    data_utils.check_font = lambda *args, **kwargs: None
    # select_device() sets torch to min(8, cores - 1) threads: 1 on 2 cores; the recipe has 2
    torch_utils.NUM_THREADS = threads
    return ultralytics


def _train_job(job: dict) -> dict:
    _ultralytics(job["config_dir"], job["threads"])
    from ultralytics import YOLO

    model = YOLO(f"{job['model']}.yaml", task="segment")
    params = sum(p.numel() for p in model.model.parameters())
    kwargs = dict(data=job["data"], imgsz=job["imgsz"], batch=job["batch"], device="cpu",
                  project=job["project"], name=job["model"], exist_ok=True, plots=False,
                  amp=False, pretrained=False, seed=job["seed"], verbose=True)
    if job["epochs"]:
        kwargs["epochs"] = job["epochs"]
    else:
        kwargs["time"] = job["budget_s"] / 3600.0
    from ..inference.batch import cpu_seconds

    cpu0, t0 = cpu_seconds(), time.perf_counter()
    model.train(**kwargs)
    trainer = model.trainer
    return {"wall_s": time.perf_counter() - t0, "cpu_s": cpu_seconds() - cpu0,
            "epochs": int(trainer.epoch) + 1, "params": int(params),
            "best": str(trainer.best), "last": str(trainer.last),
            "best_fitness": float(trainer.best_fitness or 0.0)}


def _photo_results(result, image_id, category_ids: Sequence[int]) -> list[dict]:
    """COCO results of one Ultralytics ``Results``: each mask taken from the network's
    letterboxed input back to the photo's size by Ultralytics' own ``scale_masks`` (one at a
    time: 100 masks of a 2048 px photo as floats would take 1 GB)."""
    from ultralytics.utils import ops

    if result.masks is None or not len(result.boxes):
        return []
    height, width = result.orig_shape
    data = result.masks.data

    def masks() -> Iterator[np.ndarray]:
        for i in range(len(data)):
            scaled = ops.scale_masks(data[i][None, None].float(), (height, width))[0, 0]
            yield (scaled > 0.5).numpy()

    boxes = result.boxes
    return masks_to_coco_results(masks(), boxes.xyxy.tolist(), boxes.conf.tolist(),
                                 boxes.cls.int().tolist(), image_id, category_ids)


def _predict_job(job: dict) -> dict:
    """COCO results per image id of the validation photos, at the AP confidence floor."""
    _ultralytics(job["config_dir"], job["threads"])
    from ultralytics import YOLO

    model = YOLO(job["weights"], task="segment")
    out = {}
    for rec in job["records"]:
        result = model.predict(rec["file_name"], imgsz=job["imgsz"], conf=AP_CONF,
                               max_det=MAX_DET, device="cpu", verbose=False)[0]
        if tuple(result.orig_shape) != (rec["height"], rec["width"]):
            raise GrapeInputError(f"{rec['file_name']}: Ultralytics read it as "
                                  f"{result.orig_shape[1]} x {result.orig_shape[0]} px, the "
                                  f"dataset says {rec['width']} x {rec['height']}")
        out[rec["image_id"]] = _photo_results(result, rec["image_id"], job["category_ids"])
    return out


def _speed_job(job: dict) -> dict:
    """Whole pipeline over a photo folder: Ultralytics decodes each file, predicts at its
    default confidence, and the masks become COCO results at the photo's size, written to
    ``job["results"]``; one photo first as warm-up (not timed)."""
    _ultralytics(job["config_dir"], job["threads"])
    from ultralytics import YOLO

    from ..core.images import list_image_files

    model = YOLO(job["weights"], task="segment")
    photos = list_image_files(job["photos"])
    kwargs = dict(imgsz=job["imgsz"], conf=job["conf"], max_det=MAX_DET, device="cpu",
                  verbose=False)
    model.predict(str(photos[0]), **kwargs)
    from ..inference.batch import cpu_seconds

    cpu0, t0 = cpu_seconds(), time.perf_counter()
    results = []
    for i, photo in enumerate(photos):
        found = _photo_results(model.predict(str(photo), **kwargs)[0], i + 1,
                               job["category_ids"])
        results += [{**r, "file_name": photo.name} for r in found]
    write_json_atomic(job["results"], results)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    n = len(photos)
    return {"photos": n, "photos_per_s": n / wall, "ms_per_photo": 1000 * wall / n,
            "cpu_s_per_photo": cpu / n, "detections": len(results), "threads": job["threads"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def train_or_reuse(job: dict, retrain: bool = False) -> dict:
    """Train one YOLO model (:func:`_train_job` in a fresh process) unless ``project/model``
    holds a finished run with the same settings (its record, :data:`TRAIN_RECORD`)."""
    run_dir = Path(job["project"], job["model"])
    record = run_dir / TRAIN_RECORD
    settings = {k: job[k] for k in ("model", "imgsz", "batch", "epochs", "budget_s", "seed",
                                    "threads")}
    if not retrain and record.is_file():
        done = read_json(record)
        if done.get("settings") == settings and Path(done["best"]).is_file():
            logger.info("%s: reusing the finished run in %s", job["model"], run_dir)
            return {**done, "reused": True}
    if run_dir.exists():
        shutil.rmtree(run_dir)
    done = {"settings": settings, **in_fresh_process(_train_job, job)}
    write_json_atomic(record, done, indent=2)
    return {**done, "reused": False}


# --------------------------------------------------------------------------- the run

def run_peer_real(
    root: str,
    data_dir: str,
    recipe_dir: str,
    weights: str,
    output_dir: str,
    *,
    models: Sequence[str] = PEER_MODELS,
    budget_minutes: float | None = None,
    epochs: int | None = None,
    imgsz: int = DEFAULT_IMGSZ,
    batch: int = 4,
    threads: int = 2,
    scores: Sequence[float] = DEFAULT_SCORES,
    seed: int = 0,
    checkpoint: str = "best",
    config_file: str = REAL_CONFIG,
    retrain: bool = False,
    opts: Sequence[str] = (),
    log=print,
) -> dict:
    """Train, score and time every peer model against the recipe's ``weights``; write
    ``peer_real.json`` and ``peer_real.md`` in ``output_dir`` and return the summary."""
    import torch
    from detectron2.data import DatasetCatalog

    from ..convert.yolo import category_ids as yolo_category_ids
    from ..convert.yolo import convert_yolo
    from ..engine.trainer import Trainer
    from .fragments import score_outputs, score_settings
    from .predict_benchmark import PredictBenchSpec, run_row, shrink_photos
    from .real import real_config

    require_ultralytics()
    if checkpoint not in ("best", "last"):
        raise GrapeInputError(f"--checkpoint {checkpoint!r}: best or last")
    if not Path(weights).is_file():
        raise GrapeInputError(f"{weights}: the recipe's weights not found (make real trains "
                              "them)")
    splits = split_files(data_dir)
    budget = recipe_budget(recipe_dir, budget_minutes)
    if "note" in budget:
        logger.warning("%s", budget["note"])
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)

    log(f"converting the split for Ultralytics -> {out / 'yolo_data'}")
    yolo_data = convert_yolo(splits["train"], root, out / "yolo_data", val_json=splits["val"],
                             overwrite=True)
    ids = yolo_category_ids(read_json(splits["val"]))
    cfg = real_config(root, splits, str(out / "recipe"), config_file, list(opts))
    iou_thresholds = tuple(cfg.TEST.F1_IOU_THRESHOLDS)
    records = [{k: r[k] for k in ("file_name", "image_id", "height", "width")}
               for r in DatasetCatalog.get("wgisd_val")]

    log(f"scoring the recipe ({weights}) on {len(records)} validation photos")
    recipe_params = sum(p.numel() for p in Trainer.build_model(cfg).parameters())
    recipe_rows = score_settings(cfg, weights, "wgisd_val", [cfg.TEST.CONTAINMENT_THRESH],
                                 list(scores))
    recipe = {"model": "project recipe (Mask R-CNN R18-FPN)", "params_m": recipe_params / 1e6,
              "train_min": budget["seconds"] / 60, "trained": f"{cfg.SOLVER.MAX_ITER} it",
              "imgsz": cfg.INPUT.MAX_SIZE_TEST}
    rows = [{**recipe, **r} for r in recipe_rows]

    config_dir = str(out / "ultralytics_config")
    peers = {}
    for name in models:
        job = {"model": name, "data": str(yolo_data.data_yaml), "imgsz": imgsz, "batch": batch,
               "epochs": epochs, "budget_s": budget["seconds"], "seed": seed,
               "threads": threads, "project": str(out / "yolo"), "config_dir": config_dir}
        log(f"training {name} from its YAML, "
            + (f"{epochs} epoch(s)" if epochs else f"{budget['seconds'] / 60:.1f} min")
            + f" at imgsz {imgsz}, batch {batch}, {threads} threads")
        trained = train_or_reuse(job, retrain)
        chosen = trained[checkpoint]
        log(f"predicting the validation photos with {chosen}")
        per_image = in_fresh_process(_predict_job, {
            "weights": chosen, "records": records, "imgsz": imgsz, "threads": threads,
            "category_ids": ids, "config_dir": config_dir})
        results_file = out / f"{name}_val_results.json"
        write_json_atomic(results_file, [r for rs in per_image.values() for r in rs])
        batches = (([rec], [{"instances": results_to_instances(per_image[rec["image_id"]],
                                                               rec["height"], rec["width"],
                                                               ids)}])
                   for rec in records)
        scored = score_outputs("wgisd_val", batches, [0.0], list(scores), iou_thresholds)
        info = {"model": name, "params_m": trained["params"] / 1e6,
                "train_min": trained["wall_s"] / 60,
                "trained": f"{trained['epochs']} ep ({checkpoint})", "imgsz": imgsz}
        rows += [{**info, **r} for r in scored]
        peers[name] = {**trained, "weights": chosen, "results": str(results_file)}

    log("timing the whole pipeline on the validation photos at 1024 px wide")
    photos = out / "photos_1024"
    if photos.exists():
        shutil.rmtree(photos)
    shrink_photos(Path(yolo_data.out_dir) / "images" / "val", photos, width=1024)
    speed = {}
    project_speed = run_row(PredictBenchSpec(
        config_file, weights, str(photos), "eager", None, threads, 1,
        [*opts, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(cfg.TEST.F1_SCORE_THRESH)], warmup=1))
    speed[recipe["model"]] = project_speed
    for name, peer in peers.items():
        speed[name] = in_fresh_process(_speed_job, {
            "weights": peer["weights"], "photos": str(photos), "imgsz": imgsz,
            "conf": PREDICT_CONF, "threads": threads, "category_ids": ids,
            "config_dir": config_dir, "results": str(out / f"{name}_speed_results.json")})
    for row in rows:
        row["speed"] = speed.get(row["model"])

    summary = {"budget": budget, "imgsz": imgsz, "batch": batch, "epochs": epochs,
               "threads": threads, "scores": list(scores), "checkpoint": checkpoint,
               "splits": {k: str(v) for k, v in splits.items()}, "weights": weights,
               "yolo_data": str(yolo_data.out_dir), "peers": peers, "rows": rows,
               "speed_photos": str(photos), "recipe_predict_score": cfg.TEST.F1_SCORE_THRESH}
    table = peer_table(rows)
    write_json_atomic(out / "peer_real.json", summary, indent=2, nan_as_null=True)
    with atomic_open(out / "peer_real.md") as f:
        f.write(table + "\n")
    summary["table"] = table
    return summary
