"""Measure every bunch of every image: the loop behind tools/measure.py.

Unreadable or missing images are skipped with a counted warning and the rest is written;
only when no image at all can be measured is it an error. Everything else the user gave
(a depth image of another size, an 8-bit depth image, a mask of the wrong size, a weight
model that needs depth without depth) stops the run with one line before anything is
written.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..convert.coco import DEFAULT_CATEGORY
from ..core.depth import find_depth, read_depth
from ..core.errors import GrapeInputError
from ..core.fileio import check_not_input, refuse_existing, replacing_folder
from ..core.images import decode_image
from ..core.warning_counter import WarningCounter
from ..measure.depth import Camera, metric_features
from ..measure.geometry import shape_features
from ..measure.sources import ImageJob
from ..measure.table import image_row, output_paths, write_tables
from ..measure.weight import WeightModel
from .batch import predict_photos
from .draw import draw_bunches, masks_as_instances
from .predictor import Predictor
from .runtime import Runtime, as_runtime
from .writers import check_output_folder, write_image_atomic

logger = logging.getLogger(__name__)

MISSING = "missing images (skipped)"
NO_MODEL_DEPTH = "images without the depth image the RGB-D model needs (skipped)"
UNREADABLE = "unreadable images (skipped)"
EMPTY_MASK = "empty masks (skipped)"
NO_DEPTH_FILE = "images without a depth image under --depth (no metric fields)"
NO_READING = "bunches without any depth reading (metric fields empty)"
NO_WEIGHT = "bunches without a weight (the model needs depth features they lack)"


def _check_outputs(out_csv: Path, overwrite: bool, inputs: Sequence[Path]) -> None:
    """Refuse, before any work, outputs that exist or that are one of the inputs."""
    for path in output_paths(out_csv).values():
        refuse_existing(path, overwrite, inputs)


def _photos(jobs: Sequence[ImageJob], predictor: Predictor | Runtime | None
            ) -> Iterator[tuple[ImageJob, np.ndarray | None, str | None, dict | None]]:
    """``(job, image, error, outputs)`` for every job, in order; ``image`` None (``error``
    says why) when it cannot be decoded. An RGB model runs here, through the photo loader
    of ``tools/predict.py`` (:func:`.batch.predict_photos`: the next photos decoded and
    resized while the model runs); the masks of a file, and an RGB-D model, which needs
    each photo's depth image (the loader carries none), get their photos decoded one at a
    time, ``outputs`` None: the caller predicts the latter once it has the depth."""
    if predictor is not None and not getattr(predictor, "needs_depth", False):
        for pred in predict_photos(as_runtime(predictor), [j.path for j in jobs],
                                   desc="measure"):
            yield jobs[pred.index], pred.image, pred.error, pred.outputs
        return
    for job in tqdm(jobs, desc="measure", unit="img"):
        try:
            image = decode_image(job.path, format="BGR")
        except GrapeInputError as e:
            yield job, None, str(e), None
            continue
        yield job, image, None, None


def _masks(job: ImageJob, image: np.ndarray, predictor: Predictor | Runtime | None,
           source: str, outputs: dict | None, depth: np.ndarray | None = None
           ) -> tuple[list[np.ndarray], list[float | None], list[str], dict | None]:
    """Masks, scores and categories of one image; plus the model's raw outputs: ``outputs``
    when the loader predicted them, else the predictor's on the image (and ``depth``, for an
    RGB-D model, INPUT.DEPTH.ENABLED)."""
    h, w = image.shape[:2]
    if predictor is None:
        masks = [m.decode(h, w, f"{source} ({job.name})") for m in job.masks]
        return (masks, [m.score for m in job.masks], [m.category for m in job.masks], None)
    if outputs is None:
        outputs = predictor(image) if depth is None else predictor(image, depth)
    if "instances" not in outputs:
        raise GrapeInputError("measure needs an instance model (Mask R-CNN): this config "
                              "predicts a semantic map, which has no bunches to count")
    inst = outputs["instances"].to("cpu")
    if not inst.has("pred_masks"):
        raise GrapeInputError("the model predicts boxes only; measure needs masks")
    names = predictor.metadata.get("thing_classes") or []
    classes = inst.pred_classes.tolist()
    return ([m.numpy().astype(bool) for m in inst.pred_masks], inst.scores.tolist(),
            [names[c] if c < len(names) else str(c) for c in classes], outputs)


def measure_jobs(
    jobs: Sequence[ImageJob],
    out_csv: str | os.PathLike,
    *,
    predictor: Predictor | Runtime | None = None,
    source: str = "",
    depth_dir: str | os.PathLike | None = None,
    camera: Camera | None = None,
    weight_model: WeightModel | None = None,
    overlays: str | os.PathLike | None = None,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike] = (),
    warnings: WarningCounter | None = None,
) -> dict:
    """Measure ``jobs`` (masks from a file, or from ``predictor``) and write the tables
    beside ``out_csv``; returns the summary (also in ``<stem>_images.json``). ``warnings``
    holds those of reading the jobs (crowd regions, images not predicted), logged and
    counted with the rest."""
    out_csv = Path(out_csv)
    inputs = [*inputs, *(j.path for j in jobs), *(j.depth_path for j in jobs if j.depth_path),
              *([depth_dir] if depth_dir is not None else []),
              *([weight_model.path] if weight_model is not None else [])]
    _check_outputs(out_csv, overwrite, inputs)
    warnings = warnings if warnings is not None else WarningCounter()
    depth_dir = Path(depth_dir) if depth_dir is not None else None
    model_needs_depth = bool(getattr(predictor, "needs_depth", False))
    if depth_dir is not None and not depth_dir.is_dir():
        raise GrapeInputError(f"{depth_dir}: depth folder not found")
    if model_needs_depth and depth_dir is None:
        raise GrapeInputError("INPUT.DEPTH.ENABLED: this RGB-D model needs --depth DIR (the "
                              "aligned depth images, same stem as each photo)")
    if depth_dir is not None and camera is None and not model_needs_depth:
        raise GrapeInputError("--depth needs the camera's focal lengths: --fx/--fy, "
                              "--fov-deg or --camera")
    use_coco_depth = depth_dir is None and any(j.depth_path for j in jobs)
    if use_coco_depth and camera is None:
        logger.warning("the images carry depth_file but no camera was given (--fx/--fy, "
                       "--fov-deg or --camera): no metric fields")
        use_coco_depth = False
    read_depths = depth_dir is not None or use_coco_depth
    metric = read_depths and camera is not None
    if weight_model is not None and weight_model.needs_depth and not metric:
        raise GrapeInputError(f"{weight_model.path}: this weight model uses depth features "
                              f"({', '.join(weight_model.features)}); give --depth (or a COCO "
                              "file with depth_file) and the camera")
    if overlays is not None:
        check_not_input(overlays, inputs, folder=True)
        check_output_folder(Path(overlays), [j.path for j in jobs])
    # the file's own category names, drawn on the overlays (in order of first appearance)
    file_classes = list(dict.fromkeys(m.category for j in jobs for m in (j.masks or [])))

    bunch_rows: list[dict] = []
    image_rows: list[dict] = []
    skipped: list[str] = []

    def measure_all(overlay_dir: Path | None) -> None:
        # closed on an error in the loop, so the progress bar's line ends before it
        with closing(_photos(jobs, predictor)) as photos:
            for job, image, error, outputs in photos:
                if error is not None:
                    if not job.path.is_file():
                        warnings.add(MISSING, str(job.path))
                        skipped.append(f"{job.path}: image not found")
                    else:
                        warnings.add(UNREADABLE, str(job.path))
                        skipped.append(error)
                    continue
                depth, depth_file = None, None
                if read_depths:
                    path = job.depth_path if depth_dir is None else find_depth(depth_dir, job.name)
                    if path is not None:
                        depth, depth_file = read_depth(path, image.shape[:2]), str(path)
                    elif model_needs_depth:
                        warnings.add(NO_MODEL_DEPTH, job.name)
                        skipped.append(f"{job.name}: no depth image under {depth_dir}")
                        continue
                    else:
                        warnings.add(NO_DEPTH_FILE, job.name)
                masks, scores, categories, outputs = _masks(job, image, predictor, source, outputs,
                                                            depth if model_needs_depth else None)
                if not metric:
                    depth, depth_file = None, None
                rows, kept = [], []
                for instance, mask in enumerate(masks, start=1):
                    if not mask.any():
                        warnings.add(EMPTY_MASK, f"{job.name} #{instance}")
                        continue
                    row = {"image": job.name, "folder": job.folder, "instance": instance,
                           "category": categories[instance - 1], "score": scores[instance - 1],
                           **shape_features(mask, image)}
                    if depth is not None:
                        fx, fy = camera.focal(image.shape[1])
                        sizes = metric_features(mask, depth, fx, fy)
                        if sizes is None:
                            warnings.add(NO_READING, f"{job.name} #{instance}")
                        else:
                            row.update(sizes)
                    rows.append(row)
                    kept.append((instance, mask))
                if weight_model is not None:
                    for row, grams in zip(rows, weight_model.predict(rows), strict=True):
                        row["weight_g"] = grams
                        if grams is None:
                            warnings.add(NO_WEIGHT, f"{job.name} #{row['instance']}")
                bunch_rows.extend(rows)
                image_rows.append(image_row(job.name, job.folder, image.shape[:2], rows,
                                            depth_file, weight_model is not None))
                if overlay_dir is not None:
                    if outputs is None:
                        classes = file_classes or [DEFAULT_CATEGORY]
                        outputs = {"instances": masks_as_instances(
                            [m for _, m in kept], [scores[i - 1] for i, _ in kept],
                            image.shape[:2],
                            [classes.index(categories[i - 1]) for i, _ in kept])}
                        metadata = _file_metadata(classes)
                    else:
                        metadata = predictor.metadata
                    drawn = draw_bunches(image, outputs, metadata, [m for _, m in kept],
                                         [i for i, _ in kept])
                    name = job.name.replace("/", "__")
                    write_image_atomic(overlay_dir / f"{Path(name).stem}.png", drawn)

    if overlays is not None:
        with replacing_folder(overlays) as tmp:
            measure_all(tmp)
            if not image_rows:  # keep the old overlays: nothing new was measured
                raise _nothing_measured(skipped)
    else:
        measure_all(None)
    if not image_rows:
        raise _nothing_measured(skipped)
    warnings.log(logger, prefix="measure: ")
    summary = {
        "source": source, "depth": (str(depth_dir) if depth_dir else "depth_file")
        if metric else None,
        "camera": vars(camera) if camera is not None else None,
        "weight_model": str(weight_model.path) if weight_model is not None else None,
        "warnings": warnings.as_dict(), "skipped": skipped,
    }
    paths = write_tables(out_csv, bunch_rows, image_rows, summary, overwrite=overwrite)
    categories: dict[str, int] = {}
    for row in bunch_rows:
        categories[row["category"]] = categories.get(row["category"], 0) + 1
    return {**summary, "images": len(image_rows), "bunches": len(bunch_rows),
            "categories": categories,
            "outputs": {k: str(v) for k, v in paths.items()},
            "overlays": str(overlays) if overlays is not None else None}


def _nothing_measured(skipped: list[str]) -> GrapeInputError:
    if not skipped:
        return GrapeInputError("no image to measure")
    more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
    return GrapeInputError(f"no image could be measured: {skipped[0]}{more}")


def _file_metadata(classes: list[str]):
    """Metadata for drawing masks read from a file: its own category names."""
    from detectron2.data import MetadataCatalog

    return MetadataCatalog.get("__grapes_measure|" + "|".join(classes)).set(
        thing_classes=list(classes))
