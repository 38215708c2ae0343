"""Is an exported model the same model? Issue 17's correctness check on annotated photos.

Every runtime predicts the same photos of a COCO file (``tools/runtime_accuracy.py``, usually
the validation part of the real photos) through the batch engine
(:func:`~grape_instances.inference.batch.iter_predictions`, the loop of ``tools/predict.py``).
Per runtime: COCO segm AP / AP50 by pycocotools at a low score threshold, and at the working
threshold the bunches found and how they match eager's (photos with the same count, mask IoU
of matched bunches, bunches without a partner at IoU 0.5).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

ACCURACY_COLUMNS = [
    ("runtime", "runtime", "s"), ("segm_AP", "segm AP", ".1f"), ("segm_AP50", "AP50", ".1f"),
    ("bunches", "bunches", "d"), ("same_count_photos", "same count", "s"),
    ("unmatched", "unmatched", "d"), ("iou_min", "IoU min", ".4f"),
    ("iou_median", "IoU median", ".4f"),
]


def segm_ap(coco: COCO, results: list[dict]) -> tuple[float, float]:
    """(segm AP, AP50) in points; 0 when there is no detection at all. ``results`` are not
    changed (pycocotools' ``loadRes`` adds keys to the dicts it is given)."""
    if not results:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco, coco.loadRes([dict(r) for r in results]), "segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return 100 * float(evaluator.stats[0]), 100 * float(evaluator.stats[1])


def agreement(reference: dict[int, list[dict]], other: dict[int, list[dict]],
              score_thresh: float) -> dict:
    """How ``other``'s detections at ``score_thresh`` match ``reference``'s, photo by photo:
    bunches, photos with the same count, mask IoU of the pairs (greedy by score at IoU 0.5)
    and detections left without a partner on either side."""
    from ..evaluation.instance import greedy_assignment

    same, ious, unmatched, bunches = 0, [], 0, 0
    for image_id, ref in reference.items():
        ref = [r for r in ref if r["score"] >= score_thresh]
        out = [r for r in other.get(image_id, []) if r["score"] >= score_thresh]
        bunches += len(out)
        same += len(ref) == len(out)
        if not ref or not out:
            unmatched += len(ref) + len(out)
            continue
        iou = mask_utils.iou([r["segmentation"] for r in out],
                             [r["segmentation"] for r in ref], [0] * len(ref))
        assigned = greedy_assignment(
            iou, np.array([r["score"] for r in out]), np.zeros(len(out), int),
            np.zeros(len(ref), int), np.zeros(len(ref), bool), 0.5)
        pairs = [(i, j) for i, j in enumerate(assigned) if j >= 0]
        ious.extend(float(iou[i, j]) for i, j in pairs)
        unmatched += len(out) + len(ref) - 2 * len(pairs)
    return {"bunches": bunches, "same_count_photos": f"{same}/{len(reference)}",
            "unmatched": unmatched,
            "iou_min": min(ious) if ious else float("nan"),
            "iou_median": float(np.median(ious)) if ious else float("nan")}


def runtime_accuracy(config: str, coco_json: str | os.PathLike, image_root: str | os.PathLike,
                     runtimes: list[str], exported: str | None, opts: list[str], *,
                     score_thresh: float = 0.5, workers: int = 1,
                     log=print) -> list[dict]:
    """One row per runtime (the first is the reference the others are matched against)."""
    from ..core.errors import GrapeInputError
    from ..inference.batch import iter_predictions, photo_results
    from ..inference.predictor import prediction_config
    from ..inference.runtime import build_runtime

    coco = _quiet_coco(coco_json)
    images = sorted(coco.dataset["images"], key=lambda im: im["id"])
    paths = [Path(image_root, im["file_name"]) for im in images]
    # a low threshold for AP, as Detectron2's evaluation; the working one is applied after
    cfg = prediction_config(config, opts, confidence_threshold=0.05, tile=0)
    rows, reference = [], None
    for name in runtimes:
        log(f"predicting {len(paths)} photos with {name}")
        runtime = build_runtime(cfg, name, None if name == "eager" else exported)
        per_photo: dict[int, list[dict]] = {}
        for pred in iter_predictions(runtime, paths, workers=workers, keep_image=False):
            if pred.outputs is None:
                raise GrapeInputError(pred.error)  # names the photo
            image_id = images[pred.index]["id"]
            # predict.py's own results entries, under the COCO file's image id
            per_photo[image_id] = [{**r, "image_id": image_id} for r in photo_results(
                pred, images[pred.index]["file_name"], runtime)]
        ap, ap50 = segm_ap(coco, [r for rs in per_photo.values() for r in rs])
        reference = reference if reference is not None else per_photo
        rows.append({"runtime": name, "segm_AP": ap, "segm_AP50": ap50,
                     **agreement(reference, per_photo, score_thresh)})
    return rows


def _quiet_coco(path: str | os.PathLike) -> COCO:
    coco = COCO()
    coco.dataset = json.loads(Path(path).read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco
