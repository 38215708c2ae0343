"""Whole-pipeline prediction speed per runtime (``make bench``'s prediction rows).

Each row runs :func:`grape_instances.inference.batch.predict_folder` (decode -> model ->
post-processing -> results file) over the same photos in a fresh spawned process (a clean
peak-memory reading), one runtime after another: eager PyTorch and the exported TorchScript,
ONNX Runtime, OpenVINO (f32, int8) models. Reported per photo: wall time, and the split
decode / model / post / write (with loader workers, decoding overlaps the model, so the
parts can sum to more than the wall time), CPU-seconds of the process and its workers,
and the peak resident memory of the predicting process.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core.fresh_process import in_fresh_process
from ..inference.cli import RUNTIME_MODEL

PREDICT_COLUMNS = [
    ("runtime", "runtime", "s"), ("photos", "photos", "d"), ("processes", "proc", "d"),
    ("threads", "threads", "d"), ("photos_per_s", "photos/s", ".2f"),
    ("ms_per_photo", "ms/photo", ".0f"), ("decode_ms", "decode ms", ".0f"),
    ("model_ms", "model ms", ".0f"), ("post_ms", "post ms", ".0f"),
    ("write_ms", "write ms", ".0f"), ("cpu_s_per_photo", "CPU-s/photo", ".2f"),
    ("peak_rss_mb", "peak RSS (MB)", ".0f"), ("detections", "bunches", "d"),
]


@dataclass
class PredictBenchSpec:
    config: str
    weights: str
    photos: str
    runtime: str = "eager"
    exported: str | None = None
    threads: int = 2
    workers: int | None = None  # None: batch.default_workers
    opts: list[str] = field(default_factory=list)
    #: photos predicted once before the timed run (lazy set-up and first-call costs left out)
    warmup: int = 0


def shrink_photos(src: str | os.PathLike, dst: str | os.PathLike, width: int = 1024,
                  limit: int | None = None) -> Path:
    """JPEG copies of the photos under ``src`` scaled to ``width`` px wide (the working
    scale of the real-photo recipe), for a benchmark at that photo size."""
    import cv2

    from ..core.images import decode_image, list_image_files

    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for path in list_image_files(src, recursive=True)[:limit]:
        image = decode_image(path, format="BGR")
        h, w = image.shape[:2]
        small = cv2.resize(image, (width, round(h * width / w)), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(dst / f"{path.stem}.jpg"), small, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return dst


def _cpu(kind) -> float:
    r = resource.getrusage(kind)
    return r.ru_utime + r.ru_stime


def _run_one(spec: PredictBenchSpec) -> dict:
    import torch

    torch.set_num_threads(spec.threads)
    from detectron2.utils.logger import setup_logger

    import grape_instances.modeling  # noqa: F401
    from grape_instances.data.build import build_config
    from grape_instances.inference.batch import BatchOptions, list_photos, predict_folder
    from grape_instances.inference.runtime import build_runtime

    setup_logger(name="grape_instances")
    cfg = build_config(spec.config, ["MODEL.WEIGHTS", spec.weights, *spec.opts])
    runtime = build_runtime(cfg, spec.runtime, spec.exported)
    photos = list_photos(spec.photos)
    with tempfile.TemporaryDirectory(prefix="predict_bench.") as tmp:
        if spec.warmup:
            predict_folder(runtime, spec.photos, photos[:spec.warmup], Path(tmp) / "warmup",
                           BatchOptions(workers=0, shard_size=16, progress=False))
        cpu0 = _cpu(resource.RUSAGE_SELF) + _cpu(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        summary = predict_folder(runtime, spec.photos, photos, Path(tmp) / "out", BatchOptions(
            workers=spec.workers, shard_size=16, progress=False))
        wall = time.perf_counter() - start
        cpu = _cpu(resource.RUSAGE_SELF) + _cpu(resource.RUSAGE_CHILDREN) - cpu0
    t = summary["timing"]
    n = max(1, t["photos"])
    return {
        "runtime": spec.runtime, "photos": t["photos"], "processes": 1, "threads": spec.threads,
        "photos_per_s": t["photos"] / wall, "ms_per_photo": 1000 * wall / n,
        "decode_ms": 1000 * t["decode_s"] / n, "model_ms": 1000 * t["model_s"] / n,
        "post_ms": 1000 * t["post_s"] / n, "write_ms": 1000 * t["write_s"] / n,
        "cpu_s_per_photo": cpu / n,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "detections": summary["detections"], "wall_s": wall,
    }


def run_row(spec: PredictBenchSpec) -> dict:
    """One row in a fresh spawned process."""
    return {**in_fresh_process(_run_one, spec), "spec": asdict(spec)}


def run_processes_row(spec: PredictBenchSpec, processes: int, threads: int) -> dict:
    """tools/predict.py with ``processes`` processes x ``threads`` threads, timed from
    outside (start-up and merge included), its CPU-seconds from the children's rusage."""
    repo = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory(prefix="predict_bench.") as tmp:
        cmd = [sys.executable, str(repo / "tools" / "predict.py"), "--config-file", spec.config,
               "--input", spec.photos, "--output", str(Path(tmp) / "out"), "--no-progress",
               "--threads", str(threads),
               *(["--workers", str(spec.workers)] if spec.workers is not None else []),
               "--num-gpus", str(processes), "MODEL.WEIGHTS", spec.weights, *spec.opts]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        cpu0 = _cpu(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        # the caller's working folder: the spec's relative paths are the caller's, as for
        # the in-process rows
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        cpu = _cpu(resource.RUSAGE_CHILDREN) - cpu0
        import json

        summary = json.loads((Path(tmp) / "out" / "summary.json").read_text())
    n = max(1, summary["predicted"])
    return {"runtime": f"{spec.runtime} (CLI)", "photos": n, "processes": processes,
            "threads": threads, "photos_per_s": n / wall, "ms_per_photo": 1000 * wall / n,
            "cpu_s_per_photo": cpu / n, "detections": summary["detections"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "wall_s": wall}


def export_all(config: str, weights: str, export_dir: str, calibration: str | None,
               opts: list[str], formats=("torchscript", "onnx", "openvino")) -> None:
    """Export the model once per format (and int8 when ``calibration`` is given)."""
    repo = Path(__file__).resolve().parents[2]
    jobs = [["--format", f] for f in formats]
    if calibration:
        jobs.append(["--format", "openvino", "--int8", "--calibration", calibration])
    for job in jobs:
        subprocess.run([sys.executable, str(repo / "tools" / "export_model.py"), "--config-file",
                        config, *job, "--output", export_dir, "MODEL.WEIGHTS", weights, *opts],
                       check=True, capture_output=True)


def predict_rows(config: str, weights: str, photos_src: str, work_dir: str | os.PathLike, *,
                 runtimes: list[str], count: int, width: int, threads: int, workers: int | None,
                 opts: list[str], calibration: str | None, processes_table: bool,
                 log=print) -> list[dict]:
    """Shrink ``count`` photos to ``width`` px, export the model for every runtime asked
    for, then one row per runtime (fresh process each), and with ``processes_table`` the
    1 process x ``threads`` threads against ``threads`` processes x 1 thread rows."""
    work = Path(work_dir)
    photos = work / f"photos_{width}"
    if not photos.is_dir():
        shrink_photos(photos_src, photos, width, count)
    exported = str(work / "exported")
    entries = {RUNTIME_MODEL[r] for r in runtimes if r != "eager"}
    formats = sorted({e.replace("_int8", "") for e in entries})
    if formats:
        log(f"exporting {', '.join(formats)} to {exported}")
        export_all(config, weights, exported, calibration if "openvino_int8" in entries
                   else None, opts, formats=[f for f in ("torchscript", "onnx", "openvino")
                                             if f in formats])
    rows = []
    for runtime in runtimes:
        log(f"predicting with {runtime}")
        spec = PredictBenchSpec(config, weights, str(photos), runtime,
                                None if runtime == "eager" else exported, threads, workers, opts)
        rows.append(run_row(spec))
    if processes_table and threads > 1:
        spec = PredictBenchSpec(config, weights, str(photos), "eager", None, threads, workers,
                                opts)
        for processes, per in ((1, threads), (threads, 1)):
            log(f"tools/predict.py: {processes} process(es) x {per} thread(s)")
            rows.append(run_processes_row(spec, processes, per))
    return rows
