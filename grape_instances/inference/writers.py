"""Writers of a model's predictions: overlay folders (or one overlay file) with their COCO
results list, annotated videos with their per-frame counts, and the atomic image writer."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from pathlib import Path

import cv2
import numpy as np
from detectron2.config import CfgNode
from tqdm import tqdm

from ..convert.predictions import predicted_images_file, predicted_images_record
from ..core.depth import DEPTH_EXTENSIONS, find_depth, read_depth
from ..core.errors import GrapeInputError
from ..core.fileio import (
    atomic_open,
    atomic_outputs,
    check_not_input,
    make_parent,
    path_exists,
    refuse_existing,
    replacing_folder,
    write_json_atomic,
)
from ..core.images import IMAGE_EXTENSIONS, decode_image
from ..core.warning_counter import WarningCounter
from ..data.semantic import write_label_png
from .batch import UNDECODABLE, Prediction, predict_photos
from .coco_results import instances_to_coco_results
from .draw import draw_predictions
from .predictor import Predictor
from .runtime import Runtime, as_runtime

logger = logging.getLogger(__name__)

# What visualize writes into its folder: anything else there is the user's, not ours.
OUTPUT_SUFFIXES = {".png", ".json", ".csv"}
NO_DEPTH = "photos without a readable depth image (skipped)"


def check_output_folder(output_dir: Path, inputs: Sequence[Path]) -> None:
    """Refuse a folder visualize must not replace: a file, the inputs' own folder (overlays
    would mix with, or overwrite, the photos), or one holding files it did not write."""
    if not path_exists(output_dir):  # one line for a name too long
        return
    if output_dir.is_file() or (output_dir.exists() and not output_dir.is_dir()):
        raise GrapeInputError(f"{output_dir}: --output exists and is not a folder")
    if not output_dir.is_dir():
        return
    here = output_dir.resolve()
    for path in inputs:
        if path.resolve().parent == here:
            raise GrapeInputError(f"{output_dir}: --output is the folder of the input "
                                  f"{path.name}; choose another folder")
    for entry in output_dir.iterdir():
        if entry.is_dir() or entry.suffix.lower() not in OUTPUT_SUFFIXES:
            raise GrapeInputError(f"{output_dir}: holds {entry.name}, which visualize did not "
                                  "write; choose a new or empty --output folder")


def visualize_files(
    cfg: CfgNode,
    inputs: Iterable[Path],
    output: str | os.PathLike,
    allow_random_weights: bool = False,
    depth_dir: str | os.PathLike | None = None,
    predictor: Predictor | Runtime | None = None,
) -> dict[str, object]:
    """Predict on each input, write ``<stem>.png`` overlays and ``coco_results.json``.
    ``predictor``: an exported model's runtime (:func:`.runtime.build_runtime`) instead of
    the checkpoint's Predictor. Either runs through ``tools/predict.py``'s photo loader.

    The results JSON is a COCO results list (``image_id`` = position in the input list,
    plus ``file_name``) so it can be scored or turned back into annotations
    (``convert.py from-predictions``). Semantic models have no instances: their list stays
    empty and each image gets ``<stem>_labels.png`` instead, the predicted class index per
    pixel (0 = background).

    ``output`` is a folder, replaced whole at the end; or, for one input, an image file name
    (as in Detectron2's demo), with ``<stem>_results.json`` beside it. An image that cannot
    be read is skipped with a counted warning (the summary's ``warnings``); only when none
    can be drawn is it an error.

    An RGB-D model (``INPUT.DEPTH.ENABLED``) reads each photo's depth image from
    ``depth_dir``: ``<photo stem>.png``, 16-bit mm, aligned (a missing one skips the photo);
    its photos are read one at a time, not by the loader, which carries no depth image.
    """
    inputs = list(inputs)
    if cfg.INPUT.DEPTH.ENABLED and depth_dir is None:
        raise GrapeInputError("INPUT.DEPTH.ENABLED: give --depth DIR, the folder of the depth "
                              "PNGs (same file stem as each photo)")
    if depth_dir is not None:
        if not cfg.INPUT.DEPTH.ENABLED:
            raise GrapeInputError(f"{depth_dir}: --depth given but the config's "
                                  "INPUT.DEPTH.ENABLED is False (an RGB model)")
        if not os.path.isdir(depth_dir):
            raise GrapeInputError(f"{depth_dir}: --depth folder not found")
    output = Path(output)
    single_file = output.suffix.lower() in IMAGE_EXTENSIONS and not (
        path_exists(output) and output.is_dir())
    if single_file and len(inputs) != 1:
        raise GrapeInputError(f"{output}: --output names one image file but {len(inputs)} "
                              "images were given; give a folder")
    protected = [*inputs, *([depth_dir] if depth_dir is not None else [])]
    if single_file:  # neither the overlay nor the results JSON beside it may be an input
        refuse_existing(output, True, protected)
        refuse_existing(output.with_name(f"{output.stem}_results.json"), True, protected)
    else:
        check_output_folder(output, inputs)
        check_not_input(output, protected, folder=True)  # an input deeper inside, the depth
    if predictor is None:
        predictor = Predictor(cfg, allow_random_weights=allow_random_weights)
    if single_file:
        make_parent(output)  # one line when a file stands in the way
        return _draw_all(predictor, inputs, output.parent, output.parent,
                         overlay_name=output.name, results_name=f"{output.stem}_results.json",
                         depth_dir=depth_dir)
    with replacing_folder(output) as tmp:
        summary = _draw_all(predictor, inputs, tmp, output, depth_dir=depth_dir)
    return summary


def _draw_all(predictor: Predictor | Runtime, inputs: list[Path], write_dir: Path,
              final_dir: Path, overlay_name: str | None = None,
              results_name: str = "coco_results.json",
              depth_dir: str | os.PathLike | None = None) -> dict:
    """Draw every readable input into ``write_dir``; paths returned are under ``final_dir``.

    The photos go through the loader of ``tools/predict.py`` (:func:`.batch.predict_photos`:
    the next photos decoded and resized while the model runs); an RGB-D model's go one at a
    time through :func:`_with_depth`, as the loader does not read depth images."""
    results: list[dict] = []
    predicted: list[tuple[int, str, int, int]] = []  # every image predicted, found or not
    written: list[str] = []
    label_maps: list[str] = []
    skipped: list[str] = []
    used_names: set[str] = set()
    warnings = WarningCounter()
    dataset_ids = category_ids_of(predictor.metadata)
    if depth_dir is None:
        predictions = predict_photos(as_runtime(predictor), inputs, desc="visualize",
                                     warnings=warnings)
    else:
        predictions = _with_depth(predictor, inputs, Path(depth_dir), warnings)
    with closing(predictions):  # an error in the loop ends the bar's line first
        for pred in predictions:
            if pred.error is not None:
                skipped.append(pred.error)
                continue
            image_id, path, image, outputs = pred.index + 1, pred.path, pred.image, pred.outputs
            predicted.append((image_id, str(path), *image.shape[:2]))
            name = path.stem if path.stem not in used_names else f"{path.stem}_{image_id}"
            used_names.add(name)
            png_name = overlay_name or f"{name}.png"
            write_image_atomic(write_dir / png_name,
                               draw_predictions(image, outputs, predictor.metadata))
            written.append(str(final_dir / png_name))
            if "sem_seg" in outputs:
                labels = outputs["sem_seg"].argmax(dim=0).to("cpu").numpy().astype(np.uint8)
                write_label_png(write_dir / f"{Path(png_name).stem}_labels.png", labels)
                label_maps.append(str(final_dir / f"{Path(png_name).stem}_labels.png"))
            if "instances" in outputs:
                for r in instances_to_coco_results(outputs["instances"].to("cpu"), image_id):
                    r["file_name"] = str(path)
                    r["category_id"] = dataset_ids.get(r["category_id"], r["category_id"] + 1)
                    results.append(r)
    if not written:
        more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
        raise GrapeInputError(f"no image could be drawn: {skipped[0]}{more}")
    write_json_atomic(write_dir / results_name, results)
    # which images were predicted (those without a detection too) and the class names, so
    # that from-predictions and measure count these images and no other
    write_json_atomic(predicted_images_file(write_dir / results_name), predicted_images_record(
        predicted, predictor.metadata.get("thing_classes") or []))
    warnings.log(logger, prefix="visualize: ")
    logger.info("wrote %d overlays and %s; skipped %d unreadable image(s)", len(written),
                final_dir / results_name, len(skipped))
    return {"overlays": written, "results": str(final_dir / results_name),
            "num_detections": len(results), "label_maps": label_maps, "skipped": skipped,
            "warnings": warnings.as_dict()}


def _with_depth(predictor: Predictor, inputs: list[Path], depth_dir: Path,
                warnings: WarningCounter) -> Iterator[Prediction]:
    """An RGB-D model's predictions, photo by photo in this process: the loader of
    :func:`.batch.predict_photos` carries no depth image. A photo that cannot be decoded,
    or whose depth image is missing or unreadable, is skipped and counted."""
    for index, path in enumerate(tqdm(inputs, desc="visualize", unit="img")):
        try:
            image = decode_image(path, format="BGR")
        except GrapeInputError as e:
            logger.warning("skipped: %s", e)
            warnings.add(UNDECODABLE, str(path))
            yield Prediction(index, path, None, None, str(e), 0.0, 0.0)
            continue
        try:
            depth = read_depth(_depth_file(depth_dir, path), image.shape[:2])
        except GrapeInputError as e:
            logger.warning("skipped: %s", e)
            warnings.add(NO_DEPTH, str(path))
            yield Prediction(index, path, None, None, str(e), 0.0, 0.0)
            continue
        yield Prediction(index, path, image, predictor(image, depth), None, 0.0, 0.0)


def _depth_file(depth_dir: Path, photo: Path) -> Path:
    """The photo's depth image under ``depth_dir`` (core.depth's one lookup); the name of the
    first candidate when there is none, so the error names the file that was expected."""
    return find_depth(depth_dir, photo.name) or depth_dir / f"{photo.stem}{DEPTH_EXTENSIONS[0]}"


def category_ids_of(metadata) -> dict[int, int]:
    """``{contiguous class index: COCO category_id}`` of the dataset the model was trained
    on (its JSON's ids, e.g. 3 and 7); without a registered dataset, ids 1..K like our
    converters write."""
    mapping = metadata.get("thing_dataset_id_to_contiguous_id") or {}
    return {contiguous: dataset_id for dataset_id, contiguous in mapping.items()}


def write_image_atomic(path: Path, image_bgr: np.ndarray) -> None:
    """Encode by the file's suffix (PNG, JPEG, ...) and write through a rename."""
    ok, buf = cv2.imencode(path.suffix.lower() or ".png", image_bgr)
    if not ok:
        raise GrapeInputError(f"{path}: OpenCV cannot write this image format")
    with atomic_open(path, "wb") as f:
        f.write(buf.tobytes())


VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


def visualize_video(
    cfg: CfgNode, video: str | os.PathLike, output: str | os.PathLike,
    allow_random_weights: bool = False,
) -> dict[str, object]:
    """Draw predictions on every frame of ``video`` (as Detectron2's ``demo.py --video-input``)
    into an annotated video, plus ``<stem>_counts.csv``: the bunches per frame (instances
    scoring at least ``MODEL.ROI_HEADS.SCORE_THRESH_TEST``).

    ``output`` is a video file (.mp4, .avi, .mkv) or a folder for ``<video stem>.mp4``; both
    files are written under temporary names and renamed when the whole video is done.
    """
    video, output = Path(video), Path(output)
    if not video.is_file():
        raise GrapeInputError(f"{video}: no such video file")
    if output.suffix.lower() not in VIDEO_CODECS:
        if path_exists(output) and not output.is_dir():
            raise GrapeInputError(f"{output}: --output must be a folder or a .mp4/.avi/.mkv file")
        output = output / f"{video.stem}.mp4"
    if cfg.INPUT.DEPTH.ENABLED:
        raise GrapeInputError(f"{video}: an RGB-D model (INPUT.DEPTH.ENABLED) cannot run on a "
                              "video, which has no depth images")
    check_not_input(output, [video])
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise GrapeInputError(f"{video}: OpenCV cannot open this video")
    predictor = Predictor(cfg, allow_random_weights=allow_random_weights)
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    counts_path = output.with_name(f"{output.stem}_counts.csv")
    rows = ["frame,time_s,bunches"]
    # the video and its counts appear together or not at all; an interruption (an
    # exception, Ctrl-C) leaves neither, and no temporary
    with atomic_outputs([output, counts_path], overwrite=True, lock=False,
                        inputs=[video]) as out:
        tmp_video = out.temporary(output, suffix=f".tmp{output.suffix}")
        writer = None
        try:
            with tqdm(total=total, desc="video", unit="frame") as bar:
                while True:
                    ok, frame = capture.read()
                    if not ok:
                        break
                    outputs = predictor(frame)
                    drawn = draw_predictions(frame, outputs, predictor.metadata)
                    if writer is None:
                        fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[output.suffix.lower()])
                        writer = cv2.VideoWriter(str(tmp_video), fourcc, fps,
                                                 (drawn.shape[1], drawn.shape[0]))
                        if not writer.isOpened():
                            raise GrapeInputError(f"{output}: OpenCV cannot write this video "
                                                  "format")
                    writer.write(drawn)
                    bunches = len(outputs["instances"]) if "instances" in outputs else 0
                    rows.append(f"{len(rows) - 1},{(len(rows) - 1) / fps:.3f},{bunches}")
                    bar.update()
        finally:
            capture.release()
            if writer is not None:
                writer.release()
        if writer is None:
            raise GrapeInputError(f"{video}: no frame could be read")
        with out.open(counts_path, "w") as f:
            f.write("\n".join(rows) + "\n")
    logger.info("wrote %s (%d frames) and %s", output, len(rows) - 1, counts_path)
    return {"video": str(output), "counts": str(counts_path), "frames": len(rows) - 1}
