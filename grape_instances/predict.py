"""Run a trained model on image files and draw what it sees (used by tools/visualize.py)."""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.utils.visualizer import ColorMode, Visualizer
from tqdm import tqdm

from .data.datasets import THING_CLASSES
from .data.semantic import BACKGROUND, stuff_classes_for, stuff_colors_for, write_label_png
from .engine import is_semantic_model
from .errors import GrapeInputError
from .fileio import atomic_open, write_json_atomic

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files, folders (their images, sorted) and globs -> a sorted, de-duplicated file list."""
    files: list[Path] = []
    for item in inputs:
        if any(c in item for c in "*?["):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise GrapeInputError(f"{item}: no file matches this pattern")
            files += [Path(m) for m in matches if Path(m).suffix.lower() in IMAGE_EXTENSIONS]
        elif os.path.isdir(item):
            found = sorted(p for p in Path(item).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise GrapeInputError(f"{item}: folder holds no image")
            files += found
        elif os.path.isfile(item):
            files.append(Path(item))
        else:
            raise GrapeInputError(f"{item}: no such file or folder")
    return list(dict.fromkeys(files))


def load_image(path: Path, input_format: str = "BGR") -> np.ndarray:
    """Read an image as Detectron2 does (EXIF orientation applied), with a clear error."""
    if os.path.getsize(path) == 0:
        raise GrapeInputError(f"{path}: image file is empty (0 bytes)")
    try:
        return read_image(str(path), format=input_format)
    except Exception as e:  # PIL raises many types for corrupt files
        raise GrapeInputError(f"{path}: cannot read image ({type(e).__name__})") from None


class Predictor(DefaultPredictor):
    """Detectron2's DefaultPredictor (checkpoint, test-time resize, one BGR image in) with a
    one-line error for a missing checkpoint and metadata that can draw our outputs even when
    the test dataset is not registered in this process (stuff_classes for semantic models).
    """

    def __init__(self, cfg: CfgNode) -> None:
        weights = cfg.MODEL.WEIGHTS
        if weights and "://" not in weights and not os.path.isfile(weights):
            raise GrapeInputError(f"{weights}: checkpoint (MODEL.WEIGHTS) not found")
        super().__init__(cfg)
        name = cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else "__grapes_unregistered"
        self.metadata = MetadataCatalog.get(name)
        if not self.metadata.get("thing_classes"):
            self.metadata = MetadataCatalog.get("__grapes_predict").set(
                thing_classes=list(THING_CLASSES)
            )
        if is_semantic_model(cfg):
            # Semantic outputs are drawn by class name: stuff_classes as in the semantic view.
            stuff = stuff_classes_for(self.metadata.thing_classes)
            if len(stuff) != cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES:
                stuff = [f"class {i}" for i in range(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)]
            self.metadata = MetadataCatalog.get(f"__grapes_predict_semantic_{len(stuff)}").set(
                stuff_classes=stuff, stuff_colors=stuff_colors_for(len(stuff))
            )


def draw_predictions(image_bgr: np.ndarray, outputs: dict, metadata) -> np.ndarray:
    """Overlay masks, boxes and scores (or a semantic map, background left undrawn) on the
    image; returns BGR."""
    vis = Visualizer(image_bgr[:, :, ::-1], metadata, instance_mode=ColorMode.IMAGE)
    if "instances" in outputs:
        drawn = vis.draw_instance_predictions(outputs["instances"].to("cpu"))
    elif "sem_seg" in outputs:
        labels = outputs["sem_seg"].argmax(dim=0).to("cpu")
        if metadata.stuff_classes[0] == BACKGROUND:
            labels[labels == 0] = len(metadata.stuff_classes)  # the Visualizer skips these
        drawn = vis.draw_sem_seg(labels)
    else:
        raise ValueError(f"nothing to draw in outputs with keys {sorted(outputs)}")
    return drawn.get_image()[:, :, ::-1]


def visualize_files(
    cfg: CfgNode, inputs: Iterable[Path], output_dir: str | os.PathLike
) -> dict[str, object]:
    """Predict on each input, write ``<stem>.png`` overlays and ``coco_results.json``.

    The results JSON is a COCO results list (``image_id`` = position in the input list,
    plus ``file_name``) so it can be scored or turned back into annotations. Semantic
    models have no instances: their list stays empty and each image gets
    ``<stem>_labels.png`` instead, the predicted class index per pixel (0 = background).
    """
    inputs = list(inputs)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    predictor = Predictor(cfg)
    results: list[dict] = []
    written: list[str] = []
    label_maps: list[str] = []
    used_names: set[str] = set()
    for image_id, path in enumerate(tqdm(inputs, desc="visualize", unit="img"), start=1):
        image = load_image(path)
        outputs = predictor(image)
        name = path.stem if path.stem not in used_names else f"{path.stem}_{image_id}"
        used_names.add(name)
        out_png = output_dir / f"{name}.png"
        with atomic_open(out_png, "wb") as f:
            ok, buf = cv2.imencode(".png", draw_predictions(image, outputs, predictor.metadata))
            f.write(buf.tobytes())
        written.append(str(out_png))
        if "sem_seg" in outputs:
            out_labels = output_dir / f"{name}_labels.png"
            labels = outputs["sem_seg"].argmax(dim=0).to("cpu").numpy().astype(np.uint8)
            write_label_png(out_labels, labels)
            label_maps.append(str(out_labels))
        if "instances" in outputs:
            for r in instances_to_coco_json(outputs["instances"].to("cpu"), image_id):
                r["file_name"] = str(path)
                r["category_id"] += 1  # COCO category ids start at 1, like our converters
                results.append(r)
    results_path = output_dir / "coco_results.json"
    write_json_atomic(results_path, results)
    logger.info("wrote %d overlays and %s", len(written), results_path)
    return {"overlays": written, "results": str(results_path), "num_detections": len(results),
            "label_maps": label_maps}
