"""Export a trained Mask R-CNN the way Detectron2's deployment docs do (``TracingAdapter``,
as ``tools/deploy/export_model.py --export-method tracing``): TorchScript, ONNX, and OpenVINO
IR (converted from the ONNX graph; optionally int8 by NNCF post-training quantization).

The graph stops before post-processing (``inference(..., do_postprocess=False)``): it takes
one test-resized CHW float image and returns boxes (resized-input pixels), scores, classes and
28 x 28 mask probabilities. :mod:`.runtime` runs the project's post-processing on top, so an
exported model gives the results file of the eager one. ``export.json`` records what the graph
depends on (the config's model keys, the weights' hash, the score threshold it keeps).
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from detectron2.config import CfgNode
from detectron2.export import TracingAdapter
from torch import nn

from ..core.errors import GrapeInputError
from .runtime import (
    EXPORT_INFO,
    OUTPUT_NAMES,
    Preparer,
    file_sha256,
    model_signature,
    write_export_info,
)

logger = logging.getLogger(__name__)

FORMATS = ("torchscript", "onnx", "openvino")
FILES = {"torchscript": "model.ts", "onnx": "model.onnx", "openvino": "model.xml"}
ONNX_OPSET = 17  # RoiAlign with half-pixel coordinates (ROIAlignV2) needs opset >= 16
EXPORT_PACKAGES = {"onnx": ("onnx", "onnxruntime"), "openvino": ("onnx", "openvino")}


def _instances_to_tuple(instances) -> tuple[torch.Tensor, ...]:
    return (instances.pred_boxes.tensor, instances.scores, instances.pred_classes,
            instances.pred_masks)


class _StaticGroupNorm(nn.Module):
    """GroupNorm for the ROI heads' fixed-size inputs (e.g. 14 x 14 mask features), traced
    with the per-sample size as a constant: ONNX's decomposition of GroupNorm reshapes to
    ``(0, G, -1)``, which no runtime can resolve for zero detections; ``(-1, G, C/G*H*W)``
    can. Same arithmetic as ``nn.GroupNorm``."""

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.norm
        c, h, w = (int(d) for d in x.shape[1:])  # constants in the trace
        grouped = x.reshape(-1, n.num_groups, (c // n.num_groups) * h * w)
        mean = grouped.mean(dim=2, keepdim=True)
        var = grouped.var(dim=2, unbiased=False, keepdim=True)
        y = ((grouped - mean) / torch.sqrt(var + n.eps)).reshape(-1, c, h, w)
        if n.affine:
            y = y * n.weight.reshape(1, c, 1, 1) + n.bias.reshape(1, c, 1, 1)
        return y


def _static_roi_norms(model: nn.Module) -> None:
    """Swap the ROI heads' GroupNorms for :class:`_StaticGroupNorm` (in place)."""
    heads = getattr(model, "roi_heads", None)
    if heads is None:
        return
    found = [(parent, name, child) for parent in heads.modules()
             for name, child in parent.named_children() if isinstance(child, nn.GroupNorm)]
    for parent, name, child in found:
        setattr(parent, name, _StaticGroupNorm(child))


def build_adapter(model: nn.Module, image: torch.Tensor) -> TracingAdapter:
    """Detectron2's TracingAdapter around ``model.inference`` without post-processing, its
    outputs in :data:`~.runtime.OUTPUT_NAMES` order."""

    def inference(m, inputs):
        return _instances_to_tuple(m.inference(inputs, do_postprocess=False)[0])

    return TracingAdapter(model, [{"image": image}], inference_func=inference)


def _check_packages(fmt: str, int8: bool) -> None:
    import importlib

    for package in list(EXPORT_PACKAGES.get(fmt, ())) + (["nncf"] if int8 else []):
        try:
            importlib.import_module(package)
        except ImportError:
            raise GrapeInputError(f"--format {fmt}{' --int8' if int8 else ''} needs the Python "
                                  f"package {package}, which is not installed "
                                  "(pip install -r requirements.txt)") from None


def sample_inputs(cfg: CfgNode, folder: str | os.PathLike | None, limit: int
                  ) -> list[torch.Tensor]:
    """Up to ``limit`` photos of ``folder`` (recursively), test-resized as the model sees
    them; none when no folder is given."""
    if folder is None:
        return []
    from ..core.images import decode_image, list_image_files

    files = list_image_files(folder, recursive=True)
    if not files:
        raise GrapeInputError(f"{folder}: --calibration folder holds no photo")
    step = max(1, len(files) // limit)
    prepare = Preparer(cfg)
    images, skipped = [], []
    for f in files[::step][:limit]:
        try:
            images.append(prepare(decode_image(f, format="BGR"))["image"])
        except GrapeInputError as e:
            skipped.append(str(e))
    if skipped:
        logger.warning("calibration: %d undecodable photo(s) left out (first: %s)",
                       len(skipped), skipped[0])
    if not images:
        raise GrapeInputError(f"{folder}: no --calibration photo could be decoded")
    return images


def export_model(cfg: CfgNode, fmt: str, output_dir: str | os.PathLike, *,
                 calibration: str | os.PathLike | None = None, int8: bool = False,
                 calibration_size: int = 100) -> dict:
    """Export ``cfg``'s model with the weights in ``MODEL.WEIGHTS`` to ``output_dir``
    (created; a previous export of another format stays beside it). Returns export.json's
    content."""
    from detectron2.modeling import build_model

    from ..checkpoint import GrapeCheckpointer, ensure_weights_available
    from ..core.config import is_pointrend_mask_head, is_semantic_model

    if fmt not in FORMATS:
        raise GrapeInputError(f"--format {fmt}: one of {', '.join(FORMATS)}")
    if int8 and fmt != "openvino":
        raise GrapeInputError("--int8 is for --format openvino (NNCF post-training quantization)")
    if int8 and calibration is None:
        raise GrapeInputError("--int8 needs --calibration DIR (training photos)")
    if is_semantic_model(cfg) or cfg.INPUT.DEPTH.ENABLED:
        raise GrapeInputError("export_model exports RGB instance models (Mask R-CNN)")
    if is_pointrend_mask_head(cfg):
        raise GrapeInputError(f"MODEL.ROI_MASK_HEAD.NAME {cfg.MODEL.ROI_MASK_HEAD.NAME}: "
                              "PointRend's mask head is not exported (tracing its point "
                              "refinement is not supported); predict with --runtime eager")
    if cfg.TEST.AUG.ENABLED:
        raise GrapeInputError("TEST.AUG.ENABLED: an exported model runs without test-time "
                              "augmentation; export with TEST.AUG.ENABLED False and predict "
                              "with TTA on the eager model (--runtime eager)")
    if cfg.MODEL.DEVICE != "cpu":
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.DEVICE = "cpu"
        cfg.freeze()
    _check_packages(fmt, int8)
    weights = cfg.MODEL.WEIGHTS
    if not weights:
        raise GrapeInputError("MODEL.WEIGHTS is empty: give the trained checkpoint to export")
    ensure_weights_available(weights)
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise GrapeInputError(f"{output_dir}: --output exists and is not a folder")
    samples = sample_inputs(cfg, calibration, calibration_size)
    model = build_model(cfg)
    GrapeCheckpointer(model).load(weights)
    model.eval()
    _static_roi_norms(model)
    if samples:
        image = samples[0]
    else:  # a mid-grey photo of the test size
        h = w = cfg.INPUT.MIN_SIZE_TEST
        image = torch.full((3, h, w), 128.0)
    adapter = build_adapter(model, image)
    output_dir.mkdir(parents=True, exist_ok=True)
    info_path = output_dir / EXPORT_INFO
    info = {}
    if info_path.is_file():
        from ..core.fileio import read_json

        old = read_json(info_path, expect=dict)
        if old.get("model_signature") == model_signature(cfg) and \
                old.get("weights_sha256") == file_sha256(weights):
            info = old  # same model: keep the other formats' files
    files = dict(info.get("files", {}))
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=".export.") as tmp, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings on every Python-level branch
        tmp = Path(tmp)
        if fmt == "torchscript":
            with torch.no_grad():
                traced = torch.jit.trace(adapter, adapter.flattened_inputs, check_trace=False)
            traced.save(str(tmp / FILES[fmt]))
            produced = [FILES[fmt]]
        else:
            export_onnx(adapter, tmp / "model.onnx")
            produced = ["model.onnx"]
            if fmt == "openvino":
                produced = export_openvino(tmp / "model.onnx", tmp / FILES[fmt],
                                           samples if int8 else None)
                (tmp / "model.onnx").unlink()
        name = FILES[fmt] if not int8 else "model_int8.xml"
        key = fmt if not int8 else "openvino_int8"
        for file in produced:
            target = file if not int8 else file.replace("model", "model_int8")
            os.replace(tmp / file, output_dir / target)
        files[key] = name
    info = {
        "format_version": 1,
        "files": files,
        "model_signature": model_signature(cfg),
        "weights": str(weights),
        "weights_sha256": file_sha256(weights),
        "score_thresh": cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
        "output_names": list(OUTPUT_NAMES),
        "torch": torch.__version__,
    }
    write_export_info(info_path, info)
    logger.info("exported %s to %s", key, output_dir / name)
    return info


def export_onnx(adapter: TracingAdapter, path: Path) -> None:
    """The TorchScript-based ONNX exporter (Detectron2's tracing path), dynamic H x W."""
    with torch.no_grad():
        torch.onnx.export(
            adapter, adapter.flattened_inputs, str(path), dynamo=False,
            opset_version=ONNX_OPSET, input_names=["image"], output_names=list(OUTPUT_NAMES),
            dynamic_axes={"image": {1: "height", 2: "width"},
                          **{n: {0: "detections"} for n in OUTPUT_NAMES}},
        )


#: Layers int8 leaves in f32: the RPN and the ROI heads. Quantized, they moved scores and
#: masks enough to cost the real-photo model 2.6 points of segm AP50 on the validation
#: photos; with only the backbone and FPN in int8 the loss was 0.6 (README, *Predict a season*).
F32_SCOPES = (".*proposal_generator.*", ".*roi_heads.*")
#: The mask head's transposed convolution loses its scope name in the ONNX -> OpenVINO
#: conversion; it is the graph's only one.
F32_TYPES = ("ConvolutionBackpropData",)


def export_openvino(onnx_path: Path, xml_path: Path,
                    calibration: Sequence[torch.Tensor] | None) -> list[str]:
    """OpenVINO IR from the ONNX graph; int8 by NNCF on ``calibration`` images when given
    (the backbone and FPN; :data:`F32_SCOPES` stay f32).
    Returns the files written (the .xml and its .bin)."""
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    if calibration is not None:
        import nncf

        dataset = nncf.Dataset(list(calibration), lambda t: {"image": t.numpy()})
        model = nncf.quantize(model, dataset, subset_size=len(calibration),
                              ignored_scope=nncf.IgnoredScope(
                                  patterns=list(F32_SCOPES), types=list(F32_TYPES),
                                  validate=False))
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return [xml_path.name, xml_path.with_suffix(".bin").name]
