"""Issue 15's fragments: score a trained instance model once per photo under several
containment thresholds (TEST.CONTAINMENT_THRESH) and P / R / F1 score thresholds
(TEST.F1_SCORE_THRESH), with the false positives by kind, to choose both on validation; and
under inference variants (test-time augmentation, TEST.AUG.*), with seconds per photo.

The model runs once per photo and variant; each threshold only filters its outputs, so a
grid costs one inference pass per variant plus the evaluators.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterable, Sequence

import torch
from detectron2.evaluation import inference_context

from ..checkpoint import GrapeCheckpointer
from ..core.tables import markdown_table
from ..engine.trainer import LoadedImagesCOCOEvaluator, Trainer, compiled_ops_available
from ..evaluation import CountEvaluator, FalsePositiveKindsEvaluator, InstanceF1Evaluator
from ..inference.containment import drop_contained
from ..inference.predictor import config_with

logger = logging.getLogger(__name__)


def variant_config(cfg, overrides: list[str]):
    """``cfg`` with an inference variant's ``KEY VALUE`` overrides (e.g. ``TEST.AUG.ENABLED
    True``) and the containment rule off (:func:`score_settings` applies its thresholds)."""
    return config_with(cfg, [*overrides, "TEST.CONTAINMENT_THRESH", "0.0"],
                       f"--variant {' '.join(overrides)}")


def score_settings(cfg, weights: str, dataset: str, containment: list[float],
                   score_threshs: list[float],
                   variants: list[tuple[str, list[str]]] | None = None) -> list[dict]:
    """One row per (inference variant, containment threshold, score threshold): segm / bbox AP
    (depends on the variant and the containment threshold only), count MAE and bias,
    P / R / F1 at each ``TEST.F1_IOU_THRESHOLDS``, the false positives at mask IoU 0.5 by
    kind, and the model's seconds per photo (wall and CPU of this process, the data loader
    left out).

    ``variants`` are ``(label, [KEY, VALUE, ...])`` config overrides of the inference (test-time
    augmentation, test size...); the default is one, the config as it is. The weights are
    loaded once; each variant runs the inference model ``inference.wrap`` builds from its
    config (as the Predictor and evaluation do) on its own test loader."""
    from ..inference.wrap import inference_model

    model = Trainer.build_model(cfg)
    GrapeCheckpointer(model).load(weights)
    rows = []
    for label, overrides in variants or [("plain", [])]:
        vcfg = variant_config(cfg, overrides)
        rows += _score_variant(vcfg, inference_model(vcfg, model), dataset, containment,
                               score_threshs, label)
    return rows


def _score_variant(cfg, model, dataset: str, containment: list[float],
                   score_threshs: list[float], label: str) -> list[dict]:
    loader = Trainer.build_test_loader(cfg, dataset)
    seconds = cpu_seconds = 0.0
    photos = 0

    def batches():
        nonlocal seconds, cpu_seconds, photos
        with inference_context(model), torch.no_grad():
            for inputs in loader:
                t0, c0 = time.perf_counter(), time.process_time()
                outputs = model(inputs)
                seconds += time.perf_counter() - t0
                cpu_seconds += time.process_time() - c0
                photos += len(inputs)
                yield inputs, [{"instances": o["instances"].to("cpu")} for o in outputs]

    rows = score_outputs(dataset, batches(), containment, score_threshs,
                         tuple(cfg.TEST.F1_IOU_THRESHOLDS), label)
    timing = {"photos": photos, "s_per_photo": seconds / max(photos, 1),
              "cpu_s_per_photo": cpu_seconds / max(photos, 1)}
    logger.info("%s: inference %.1f s (%.1f CPU s) for %d photos", label, seconds, cpu_seconds,
                photos)
    return [{**r, **timing} for r in rows]


def score_outputs(dataset: str, batches: Iterable[tuple[list[dict], list[dict]]],
                  containment: list[float], score_threshs: list[float],
                  iou_thresholds: Sequence[float] = (0.3, 0.5, 0.8),
                  label: str = "plain") -> list[dict]:
    """The rows of :func:`score_settings` for any model's outputs: ``batches`` yields
    Detectron2 ``(inputs, outputs)`` pairs (``file_name``, ``image_id``, ``height``, ``width``
    of photos of the registered ``dataset``; ``{"instances": ...}`` on the CPU, classes
    contiguous), scored by the project's evaluators (COCO AP through pycocotools, instance
    P / R / F1, count error, false positives by kind)."""
    coco = {t: LoadedImagesCOCOEvaluator(dataset, output_dir=None,
                                         use_fast_impl=compiled_ops_available())
            for t in containment}
    per_score = {
        (t, s): (InstanceF1Evaluator(dataset, s, tuple(iou_thresholds), False),
                 CountEvaluator(dataset, s, distributed=False),
                 FalsePositiveKindsEvaluator(dataset, s, distributed=False))
        for t in containment for s in score_threshs
    }
    for ev in [*coco.values(), *(e for group in per_score.values() for e in group)]:
        ev.reset()
    for inputs, outputs in batches:
        for t in containment:
            filtered = [{"instances": drop_contained(o["instances"], t)} for o in outputs]
            coco[t].process(inputs, copy.deepcopy(filtered))
            for s in score_threshs:
                for ev in per_score[(t, s)]:
                    ev.process(inputs, filtered)
    rows = []
    for t in containment:
        ap = coco[t].evaluate()
        for s in score_threshs:
            f1, count, kinds = (ev.evaluate() for ev in per_score[(t, s)])
            rows.append({"variant": label, "containment": t, "score": s,
                         "segm": dict(ap.get("segm", {})), "bbox": dict(ap.get("bbox", {})),
                         **f1, **count, **kinds})
    return rows


def settings_table(rows: list[dict]) -> str:
    """The rows of :func:`score_settings` as one markdown table."""
    head = ["variant", "containment", "score", "segm AP", "AP50", "F1@30", "F1@50", "P@50",
            "R@50", "F1@80", "count MAE", "bias", "FP@50", "fragment", "duplicate", "merge",
            "background", "loose", "s/photo", "CPU s/photo"]
    body = []
    for r in rows:
        inst, k = r["instance"], r["fp_kinds"]
        body.append([r.get("variant", "plain"), f"{r['containment']:.2f}", f"{r['score']:.2f}",
                     f"{r['segm'].get('AP', float('nan')):.1f}",
                     f"{r['segm'].get('AP50', float('nan')):.1f}",
                     *(f"{inst[m]:.1f}" for m in ("F1@30", "F1@50", "P@50", "R@50", "F1@80")),
                     f"{r['count']['MAE']:.2f}", f"{r['count']['bias']:+.2f}",
                     inst["FP@50"], *(k[kind] for kind in
                                      ("fragment", "duplicate", "merge", "background", "loose")),
                     f"{r.get('s_per_photo', float('nan')):.2f}",
                     f"{r.get('cpu_s_per_photo', float('nan')):.2f}"])
    return markdown_table(head, body, ["left"] + ["right"] * (len(head) - 1))
