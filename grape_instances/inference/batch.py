"""Batch prediction over a season of photos: a folder tree (or a list file) in, one COCO
results file, the measurement tables and optional overlays out (``tools/predict.py``).

* **One engine.** :func:`predict_photos` runs a :class:`~.runtime.Runtime` (eager or
  exported) over photos through a torch DataLoader (on a GPU its workers decode and resize
  the next photos while the model computes; see :func:`default_workers`), under a progress
  bar, an undecodable photo a counted
  warning; tools/predict.py, tools/visualize.py and tools/measure.py all run their models
  over photos through it (RGB-D models, whose depth images the loader does not carry, are
  the one exception: see ``writers`` and ``measure``).
* **Resumable.** Photos are cut, in sorted order, into shards of ``shard_size``; a finished
  shard is written as one JSON file through a rename (complete or absent) under
  ``OUT/.shards/``. A rerun skips the shards already there and says how many photos that
  was; the final merge reads the shards in order, so an interrupted and resumed run gives
  the same files as an uninterrupted one. Memory holds one shard, not the season.
* **Many processes.** Under Detectron2's ``launch`` rank ``r`` of ``w`` takes the shards
  ``k`` with ``k % w == r``; rank 0 merges after a barrier. Image ids are positions in the
  sorted photo list, so the merged files do not depend on the number of processes.
* An undecodable photo is a counted warning (listed in ``summary.json``), not a stop.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from tqdm import tqdm

from ..core.errors import GrapeInputError
from ..core.fileio import atomic_open, read_json, write_json_atomic
from ..core.images import IMAGE_EXTENSIONS, decode_image
from ..core.warning_counter import WarningCounter
from .coco_results import instances_to_coco_results
from .runtime import Runtime

logger = logging.getLogger(__name__)

SHARD_DIR = ".shards"
MANIFEST = "manifest.json"
RESULTS = "results.json"
SUMMARY = "summary.json"
TABLE = "bunches.csv"  # + bunches_images.csv, bunches_folders.csv, bunches_images.json
OVERLAYS = "overlays"
UNDECODABLE = "undecodable photos (skipped)"
EMPTY_MASK = "empty masks (not measured)"
# What predict writes at the top of OUT: anything else there is the user's.
OUR_NAMES = {SHARD_DIR, RESULTS, SUMMARY, OVERLAYS, "bunches.csv", "bunches_images.csv",
             "bunches_folders.csv", "bunches_images.json"}


# --------------------------------------------------------------------------- photo lists

def list_photos(input_dir: str | os.PathLike, list_file: str | os.PathLike | None = None
                ) -> list[str]:
    """Photos under ``input_dir`` as sorted '/'-separated relative paths: the whole folder
    tree (hidden folders left out), or the lines of ``list_file`` (paths relative to
    ``input_dir``, or absolute inside it; '#' comments and blank lines ignored)."""
    root = Path(input_dir)
    if not root.is_dir():
        raise GrapeInputError(f"{root}: --input folder not found")
    if list_file is not None:
        return _photos_from_list(root, Path(list_file))
    photos = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS and not name.startswith("."):
                photos.append(Path(dirpath, name).relative_to(root).as_posix())
    if not photos:
        raise GrapeInputError(f"{root}: no photos ({', '.join(IMAGE_EXTENSIONS)}) in this "
                              "folder tree")
    return sorted(photos)


def _photos_from_list(root: Path, list_file: Path) -> list[str]:
    if not list_file.is_file():
        raise GrapeInputError(f"{list_file}: --list file not found")
    photos = []
    resolved = root.resolve()
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path = Path(line)
        full = path if path.is_absolute() else root / path
        try:
            rel = full.resolve().relative_to(resolved).as_posix()
        except ValueError:
            raise GrapeInputError(f"{list_file}:{number}: {line} is not under --input "
                                  f"{root}") from None
        photos.append(rel)
    if not photos:
        raise GrapeInputError(f"{list_file}: the list names no photo")
    return sorted(dict.fromkeys(photos))


def check_output_dir(input_dir: str | os.PathLike, output_dir: str | os.PathLike) -> Path:
    """Refuse an output folder inside the input tree (its overlays would be photos of the
    next run), the input folder itself or one of its parents, a file, and a folder holding
    files predict did not write."""
    inp, out = Path(input_dir).resolve(), Path(output_dir).resolve()
    if out == inp or inp in out.parents:
        raise GrapeInputError(f"{output_dir}: --output is inside the input tree {input_dir}; "
                              "choose a folder outside it")
    if out in inp.parents:
        raise GrapeInputError(f"{output_dir}: --output holds the input folder {input_dir}; "
                              "choose another folder")
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise GrapeInputError(f"{output_dir}: --output exists and is not a folder")
    if output_dir.is_dir():
        foreign = sorted(p.name for p in output_dir.iterdir() if p.name not in OUR_NAMES)
        if foreign:
            raise GrapeInputError(f"{output_dir}: holds {foreign[0]}, which predict did not "
                                  "write; choose a new or empty --output folder")
    return output_dir


# --------------------------------------------------------------------------- the engine

class _Photos(torch.utils.data.Dataset):
    """Decodes and test-resizes photo ``i`` (in a loader worker); an undecodable one comes
    back as an ``error``."""

    def __init__(self, paths: Sequence[Path], indices: Sequence[int], prepare,
                 keep_image: bool) -> None:
        self.paths, self.indices = list(paths), list(indices)
        self.prepare, self.keep_image = prepare, keep_image

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        start = time.perf_counter()
        item = {"index": self.indices[i], "path": self.paths[i]}
        try:
            image = decode_image(self.paths[i], format="BGR")
        except GrapeInputError as e:
            return {**item, "error": str(e), "decode_s": time.perf_counter() - start}
        item.update(self.prepare(image))
        item["original"] = image if self.keep_image else None
        item["decode_s"] = time.perf_counter() - start
        return item


def _first(batch: list[dict]) -> dict:
    return batch[0]


@dataclass
class Prediction:
    """One photo through the engine: ``outputs`` is None (and ``error`` says why) when the
    photo could not be decoded."""

    index: int
    path: Path
    image: np.ndarray | None
    outputs: dict | None
    error: str | None
    decode_s: float
    model_s: float


def default_workers(runtime: Runtime) -> int:
    """Loader processes that pay: 2 where the model runs on a GPU (the CPU decodes the next
    photos meanwhile), none on a CPU. There the model's threads already take every core, and
    a worker only competes with them: OpenVINO's threads wait for work spinning, which starves
    the worker until the model is done, so decoding ends up after the model anyway, with the
    cost of a process on top (measured on 2 cores, README "Predict a season": OpenVINO int8
    2.06 photos/s with one worker, 2.57 with none; eager 1.23 and 1.21)."""
    device = getattr(runtime, "device", None)  # a Predictor-like object may have none
    return 2 if device is not None and torch.device(device).type == "cuda" else 0


def iter_predictions(runtime: Runtime, paths: Sequence[Path], *, indices: Sequence[int] | None
                     = None, workers: int | None = None, keep_image: bool = True
                     ) -> Iterator[Prediction]:
    """Predict every photo of ``paths``, in order; ``workers`` loader processes decode ahead
    (0: in this process; None: :func:`default_workers`).

    The workers are forked, and must not call OpenCV: a process that has used OpenCV's
    thread pool (visualize or measure drawing, a training run's experiments) leaves it
    mid-state in the fork, and ``cv2.setNumThreads`` there waits forever. Decoding and the
    test-time resize are PIL, numpy and torch, and torch sets each worker to one thread."""
    indices = list(range(len(paths))) if indices is None else list(indices)
    dataset = _Photos(paths, indices, runtime.prepare, keep_image)
    if workers is None:
        workers = default_workers(runtime)
    workers = max(0, min(workers, len(dataset)))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=1, shuffle=False, num_workers=workers, collate_fn=_first,
        prefetch_factor=2 if workers else None)
    for item in loader:
        if "error" in item:
            yield Prediction(item["index"], item["path"], None, None, item["error"],
                             item["decode_s"], 0.0)
            continue
        start = time.perf_counter()
        outputs = runtime.run([{k: item[k] for k in ("image", "height", "width")}])[0]
        if "instances" in outputs:
            outputs["instances"] = outputs["instances"].to("cpu")
        yield Prediction(item["index"], item["path"], item["original"], outputs, None,
                         item["decode_s"], time.perf_counter() - start)


def predict_photos(runtime: Runtime, paths: Sequence[Path], *, desc: str = "predict",
                   warnings: WarningCounter | None = None, names: Sequence[str] | None = None,
                   indices: Sequence[int] | None = None, workers: int | None = None,
                   keep_image: bool = True, progress: bool = True) -> Iterator[Prediction]:
    """:func:`iter_predictions` as every tool runs it: a tqdm bar (photos/s) named ``desc``,
    and an undecodable photo logged and, with ``warnings``, counted as :data:`UNDECODABLE`
    (first example: its entry of ``names``, else its path). It is still yielded, with
    ``outputs`` None, so that the caller can list it and go on: one bad photo never stops
    a run. Callers close it (``contextlib.closing``) so that an error raised in their loop
    ends the bar's line before the one-line error is printed."""
    bar = tqdm(total=len(paths), desc=desc, unit="photo", disable=not progress,
               dynamic_ncols=True, mininterval=0.5 if os.isatty(2) else 5.0)
    try:
        for position, pred in enumerate(iter_predictions(
                runtime, paths, indices=indices, workers=workers, keep_image=keep_image)):
            if pred.error is not None:
                logger.warning("skipped: %s", pred.error)
                if warnings is not None:
                    warnings.add(UNDECODABLE, names[position] if names is not None
                                 else str(pred.path))
            yield pred
            bar.update()
    finally:
        bar.close()


# --------------------------------------------------------------------------- one photo

def photo_results(pred: Prediction, rel: str, runtime: Runtime) -> list[dict]:
    """COCO results of one photo: ``image_id`` = position + 1 in the sorted photo list,
    ``file_name`` relative to --input, the dataset's own category ids."""
    results = instances_to_coco_results(pred.outputs["instances"], pred.index + 1)
    for r in results:
        r["category_id"] = runtime.category_ids[r["category_id"]]
        r["file_name"] = rel
    return results


def photo_measurements(pred: Prediction, rel: str, runtime: Runtime,
                       warnings: WarningCounter) -> tuple[list[dict], dict]:
    """The measure package's per-bunch rows and per-image row of one photo (pixels only)."""
    from ..measure.geometry import shape_features
    from ..measure.table import image_row

    inst = pred.outputs["instances"]
    folder = str(PurePosixPath(rel).parent)
    names = runtime.metadata.get("thing_classes") or []
    rows = []
    if inst.has("pred_masks"):
        for number, (mask, score, label) in enumerate(
                zip(inst.pred_masks.numpy(), inst.scores.tolist(), inst.pred_classes.tolist(),
                    strict=True), start=1):
            if not mask.any():
                warnings.add(EMPTY_MASK, f"{rel} #{number}")
                continue
            rows.append({"image": rel, "folder": folder, "instance": number,
                         "category": names[label] if label < len(names) else str(label),
                         "score": score, **shape_features(mask.astype(bool), pred.image)})
    return rows, image_row(rel, folder, pred.image.shape[:2], rows, None, False)


def write_overlay(pred: Prediction, path: Path, runtime: Runtime) -> None:
    from .draw import draw_predictions
    from .writers import write_image_atomic

    write_image_atomic(path, draw_predictions(pred.image, pred.outputs, runtime.metadata))


# --------------------------------------------------------------------------- shards

@dataclass
class BatchOptions:
    """What tools/predict.py asks for, beside the runtime and the photos."""

    overlays: bool = False
    measure: bool = False
    shard_size: int = 32
    workers: int | None = None  # None: default_workers
    progress: bool = True


def shard_ranges(count: int, shard_size: int) -> list[range]:
    return [range(s, min(s + shard_size, count)) for s in range(0, count, shard_size)]


def shard_path(output_dir: Path, k: int) -> Path:
    return output_dir / SHARD_DIR / f"shard_{k:06d}.json"


def manifest_for(photos: Sequence[str], input_dir, runtime: Runtime, exported,
                 options: BatchOptions) -> dict:
    """What a run's shards depend on: the photo list, the model and its settings."""
    digest = hashlib.sha256("\n".join(photos).encode()).hexdigest()
    config = hashlib.sha256(runtime.cfg.dump().encode()).hexdigest()
    return {"input": str(Path(input_dir).resolve()), "photos": len(photos),
            "photos_sha256": digest, "shard_size": options.shard_size,
            "runtime": runtime.name, "exported": str(Path(exported).resolve()) if exported
            else None, "config_sha256": config, "overlays": options.overlays,
            "measure": options.measure}


def check_manifest(output_dir: Path, manifest: dict) -> None:
    """A rerun must be the same run: same photos, model and settings."""
    path = output_dir / SHARD_DIR / MANIFEST
    if not path.is_file():
        if (output_dir / SHARD_DIR).is_dir() and any((output_dir / SHARD_DIR).glob("shard_*")):
            raise GrapeInputError(f"{output_dir}: shards without {MANIFEST}; choose a new "
                                  "--output folder")
        return
    old = read_json(path, expect=dict)
    for key, value in manifest.items():
        if old.get(key) != value:
            raise GrapeInputError(f"{output_dir}: holds a run with another {key} "
                                  f"({old.get(key)} there, {value} now); give a new --output "
                                  "folder to start over, or the same settings to resume")


@dataclass
class _Shard:
    indices: range
    results: list = field(default_factory=list)
    bunches: list = field(default_factory=list)
    images: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    warnings: WarningCounter = field(default_factory=WarningCounter)
    done: int = 0


@dataclass
class Timing:
    """Seconds spent per stage, summed over photos (decode runs in the loader workers, if
    any)."""

    photos: int = 0
    decode_s: float = 0.0
    model_s: float = 0.0
    post_s: float = 0.0
    write_s: float = 0.0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0

    def as_dict(self) -> dict:
        d = {k: round(v, 4) if isinstance(v, float) else v for k, v in vars(self).items()}
        d["photos_per_s"] = round(self.photos / self.wall_s, 4) if self.wall_s else None
        return d


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def predict_shards(runtime: Runtime, input_dir: str | os.PathLike, photos: Sequence[str],
                   output_dir: str | os.PathLike, options: BatchOptions, *,
                   rank: int = 0, world_size: int = 1) -> dict:
    """Predict this rank's missing shards into ``output_dir/.shards`` (the manifest must be
    written already). Returns ``{"skipped_done", "predicted", "timing"}``."""
    output_dir, root = Path(output_dir), Path(input_dir)
    shards = shard_ranges(len(photos), options.shard_size)
    mine = [k for k in range(len(shards)) if k % world_size == rank]
    pending = [k for k in mine if not shard_path(output_dir, k).is_file()]
    done_photos = sum(len(shards[k]) for k in mine if k not in pending)
    if done_photos:
        logger.info("resuming: %d photo(s) already done in %d shard(s), skipped", done_photos,
                    len(mine) - len(pending))
    buffers = {k: _Shard(shards[k]) for k in pending}
    shard_of = {i: k for k in pending for i in shards[k]}
    order = [i for k in pending for i in shards[k]]
    warnings = WarningCounter()
    timing = Timing()
    start_wall, start_cpu = time.perf_counter(), cpu_seconds()
    keep_image = options.overlays or options.measure
    with closing(predict_photos(
            runtime, [root / photos[i] for i in order],
            desc=f"predict[{rank}]" if world_size > 1 else "predict", warnings=warnings,
            names=[photos[i] for i in order], indices=order, workers=options.workers,
            keep_image=keep_image, progress=options.progress)) as predictions:
        for pred in predictions:
            rel = photos[pred.index]
            shard = buffers[shard_of[pred.index]]
            timing.decode_s += pred.decode_s
            if pred.error is not None:
                shard.warnings.add(UNDECODABLE, rel)
                shard.skipped.append({"file_name": rel, "error": pred.error})
            else:
                timing.model_s += pred.model_s
                t0 = time.perf_counter()
                shard.results += photo_results(pred, rel, runtime)
                if options.measure:
                    rows, image = photo_measurements(pred, rel, runtime, shard.warnings)
                    shard.bunches += rows
                    shard.images.append(image)
                t1 = time.perf_counter()
                timing.post_s += t1 - t0
                if options.overlays:
                    write_overlay(pred, output_dir / OVERLAYS / rel, runtime)
                timing.write_s += time.perf_counter() - t1
                timing.photos += 1
            shard.done += 1
            if shard.done == len(shard.indices):
                t0 = time.perf_counter()
                k = shard_of[pred.index]
                write_json_atomic(shard_path(output_dir, k), {
                    "shard": k, "photos": [photos[i] for i in shard.indices],
                    "results": shard.results, "bunches": shard.bunches, "images": shard.images,
                    "skipped": shard.skipped, "warnings": shard.warnings.as_dict()})
                for kind, n in shard.warnings.as_dict().items():
                    if kind != UNDECODABLE:
                        warnings.add(kind, shard.warnings.examples.get(kind, ""), count=n)
                del buffers[k]
                timing.write_s += time.perf_counter() - t0
    timing.wall_s = time.perf_counter() - start_wall
    timing.cpu_s = cpu_seconds() - start_cpu
    timing.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    warnings.log(logger, prefix="predict: ")
    return {"skipped_done": done_photos, "ran": len(order), "timing": timing.as_dict(),
            "run_warnings": warnings.as_dict()}


def merge_shards(output_dir: str | os.PathLike, photos: Sequence[str], options: BatchOptions,
                 manifest: dict) -> dict:
    """Read every shard in order and write ``results.json``, the tables (``--measure``) and
    ``summary.json``; the same bytes whatever the number of processes or interruptions."""
    output_dir = Path(output_dir)
    shards = shard_ranges(len(photos), options.shard_size)
    missing = [k for k in range(len(shards)) if not shard_path(output_dir, k).is_file()]
    if missing:
        raise GrapeInputError(f"{output_dir}: {len(missing)} shard(s) missing (first "
                              f"{shard_path(output_dir, missing[0]).name}); run again to "
                              "finish them")
    detections, skipped, images, bunches = 0, [], [], []
    warnings = WarningCounter()
    with atomic_open(output_dir / RESULTS, "w") as f:
        f.write("[")
        first = True
        for k in range(len(shards)):
            shard = read_json(shard_path(output_dir, k), expect=dict)
            for r in shard["results"]:
                f.write(("" if first else ",\n") + json.dumps(r))
                first = False
            detections += len(shard["results"])
            skipped += shard["skipped"]
            for kind, n in shard["warnings"].items():
                warnings.add(kind, count=n)
            images += shard["images"]
            bunches += shard["bunches"]
        f.write("]\n")
    summary = {"input": manifest["input"], "photos": len(photos),
               "predicted": len(photos) - len(skipped), "detections": detections,
               "runtime": manifest["runtime"], "skipped": skipped,
               "warnings": warnings.as_dict(), "results": RESULTS}
    if options.measure:
        from ..measure.table import write_tables

        paths = write_tables(output_dir / TABLE, bunches, images,
                             {"source": "tools/predict.py", "warnings": warnings.as_dict(),
                              "skipped": [s["file_name"] for s in skipped]}, overwrite=True)
        summary["tables"] = {k: p.name for k, p in paths.items()}
    write_json_atomic(output_dir / SUMMARY, summary, indent=1)
    return summary


def predict_folder(runtime: Runtime, input_dir: str | os.PathLike, photos: Sequence[str],
                   output_dir: str | os.PathLike, options: BatchOptions, *,
                   exported=None, rank: int = 0, world_size: int = 1,
                   synchronize=lambda: None) -> dict:
    """The whole run of one process (rank): manifest, this rank's shards, and on rank 0 the
    merge once every rank is done (``synchronize`` is the barrier between processes)."""
    output_dir = Path(output_dir)
    manifest = manifest_for(photos, input_dir, runtime, exported, options)
    check_manifest(output_dir, manifest)
    synchronize()
    if rank == 0:
        write_json_atomic(output_dir / SHARD_DIR / MANIFEST, manifest, indent=1)
    run = predict_shards(runtime, input_dir, photos, output_dir, options, rank=rank,
                         world_size=world_size)
    synchronize()
    if rank != 0:
        return run
    summary = merge_shards(output_dir, photos, options, manifest)
    return {**summary, **run}
