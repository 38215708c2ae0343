"""The runtimes a trained instance model runs on: eager PyTorch (the checkpoint), or a model
exported by :mod:`.export` and run with TorchScript, ONNX Runtime or OpenVINO.

Every runtime has the same contract, Detectron2's: :attr:`Runtime.prepare` turns a decoded
BGR photo into the model's input dict (the config's test-time resize; cheap enough for data
loader workers), and :meth:`Runtime.run` takes a list of them and returns
``[{"instances": Instances}]`` at each photo's own size. An exported graph stops before
post-processing (boxes in resized-input pixels, 28 x 28 mask probabilities); the project's
own post-processing runs on top of it exactly as on the eager model: Detectron2's
``detector_postprocess`` (box rescale, mask pasting at full resolution, mask threshold), the
score threshold, and tiled inference (``TEST.TILE_SIZE``) around the whole.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances
from torch import nn

from ..core.errors import GrapeInputError
from .cli import RUNTIME_MODEL, RUNTIMES
from .predictor import Predictor, prediction_metadata
from .wrap import inference_model

logger = logging.getLogger(__name__)

EXPORT_INFO = "export.json"
# The exported graph's outputs, in this order (see export.TraceableRCNN).
OUTPUT_NAMES = ("boxes", "scores", "classes", "masks")
# What the exported graph depends on: a config that differs here is another model.
MODEL_KEYS_IGNORED = ("MODEL.WEIGHTS", "MODEL.DEVICE", "MODEL.ROI_HEADS.SCORE_THRESH_TEST")
INPUT_KEYS = ("INPUT.FORMAT", "INPUT.DEPTH.ENABLED", "TEST.DETECTIONS_PER_IMAGE")
RUNTIME_PACKAGES = {"onnx": "onnxruntime", **{r: "openvino" for r in RUNTIME_MODEL
                                             if r.startswith("openvino")}}


def model_signature(cfg: CfgNode) -> dict[str, str]:
    """The config values an exported graph bakes in (every ``MODEL.*`` key but the weights,
    the device and the score threshold, plus the input format), as strings. PointRend's keys
    are left out: only its mask heads read them, and those are not exported (export.py), so
    exports written before the keys existed still match."""
    from ..core.config import pointrend_config_keys

    ignored = set(MODEL_KEYS_IGNORED) | pointrend_config_keys()
    flat: dict[str, str] = {}  # also TEST.DETECTIONS_PER_IMAGE: the top-k is in the graph

    def walk(node, prefix: str) -> None:
        for key in sorted(node):
            value = node[key]
            name = f"{prefix}.{key}" if prefix else key
            if isinstance(value, CfgNode):
                walk(value, name)
            elif name not in ignored:
                flat[name] = repr(value)

    walk(cfg.MODEL, "MODEL")
    for key in INPUT_KEYS:
        node = cfg
        for part in key.split("."):
            node = node[part]
        flat[key] = repr(node)
    return flat


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_category_ids(metadata, num_classes: int) -> list[int]:
    """Contiguous class index -> the dataset's own category id (the inverse of
    ``thing_dataset_id_to_contiguous_id``); ids from 1 when the dataset gives no mapping."""
    mapping = metadata.get("thing_dataset_id_to_contiguous_id")
    if mapping and len(mapping) == num_classes:
        inverse = {v: int(k) for k, v in mapping.items()}
        return [inverse[i] for i in range(num_classes)]
    return list(range(1, num_classes + 1))


class Preparer:
    """The test-time resize of a config as DefaultPredictor applies it: BGR photo in, model
    input dict out. Small and picklable, for data loader workers."""

    def __init__(self, cfg: CfgNode) -> None:
        from detectron2.data import transforms as T

        self.input_format = cfg.INPUT.FORMAT
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST],
                                        cfg.INPUT.MAX_SIZE_TEST)

    def __call__(self, image_bgr: np.ndarray) -> dict:
        image = image_bgr[:, :, ::-1] if self.input_format == "RGB" else image_bgr
        height, width = image.shape[:2]
        resized = self.aug.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.astype("float32").transpose(2, 0, 1)))
        return {"image": tensor, "height": height, "width": width}


class Runtime:
    """An instance model behind Detectron2's input/output contract (see the module doc)."""

    name = "eager"

    def __init__(self, cfg: CfgNode, model: nn.Module, metadata) -> None:
        self.cfg = cfg.clone()
        self.model = model
        self.metadata = metadata
        self.prepare = Preparer(cfg)
        self.device = torch.device(cfg.MODEL.DEVICE)
        self.category_ids = dataset_category_ids(metadata, cfg.MODEL.ROI_HEADS.NUM_CLASSES)

    needs_depth = False  # RGB models only (RGB-D models run on Predictor with --depth)

    @torch.no_grad()
    def run(self, batched_inputs: list[dict]) -> list[dict]:
        """Prepared inputs in, ``[{"instances": ...}]`` out (at each photo's size)."""
        inputs = [{**x, "image": x["image"].to(self.device)} for x in batched_inputs]
        return self.model(inputs)

    def __call__(self, image_bgr: np.ndarray, depth: np.ndarray | None = None) -> dict:
        """One BGR photo in, ``{"instances": ...}`` out: Predictor's call, so that
        visualize and measure run an exported model the way they run the checkpoint."""
        if depth is not None:
            raise GrapeInputError("a depth image was given to an RGB model")
        return self.run([self.prepare(image_bgr)])[0]

    def predict(self, image_bgr: np.ndarray) -> dict:
        return self(image_bgr)


def eager_runtime(cfg: CfgNode, allow_random_weights: bool = False) -> Runtime:
    """The checkpoint in ``MODEL.WEIGHTS`` on PyTorch (tiled when ``TEST.TILE_SIZE`` > 0)."""
    return as_runtime(Predictor(cfg, allow_random_weights=allow_random_weights))


def as_runtime(predictor: Predictor | Runtime) -> Runtime:
    """What the photo loader (``batch.predict_photos``) runs: a Predictor's own model, with
    its test-time resize moved into the loader workers (:class:`Preparer`, the same resize,
    so the same outputs); a Runtime as it is. An RGB-D Predictor has no Runtime: the
    loader does not read depth images."""
    if not isinstance(predictor, Predictor):
        return predictor
    if predictor.needs_depth:
        raise ValueError("an RGB-D Predictor runs photo by photo, with each depth image")
    return Runtime(predictor.cfg, predictor.model, predictor.metadata)


class _Backend:
    """One exported graph: ``run(image CHW float32) -> (boxes, scores, classes, masks)``."""

    def __init__(self, path: Path, threads: int) -> None:
        self.path = path
        self.threads = threads

    def run(self, image: torch.Tensor) -> tuple[np.ndarray, ...]:
        raise NotImplementedError


class _TorchScript(_Backend):
    def __init__(self, path: Path, threads: int) -> None:
        super().__init__(path, threads)
        self.module = torch.jit.load(str(path), map_location="cpu")

    def run(self, image):
        with torch.no_grad():
            return tuple(t.numpy() for t in self.module(image))


class _OnnxRuntime(_Backend):
    def __init__(self, path: Path, threads: int) -> None:
        super().__init__(path, threads)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(self, image):
        return tuple(self.session.run(list(OUTPUT_NAMES), {"image": image.numpy()}))


class _OpenVino(_Backend):
    def __init__(self, path: Path, threads: int, precision: str = "f32") -> None:
        super().__init__(path, threads)
        import openvino as ov

        core = ov.Core()
        # f32 unless asked: on CPUs with bf16 units OpenVINO would otherwise compute in bf16
        # (scores change in the third digit); int8 models keep their quantized layers and
        # run the rest in ``precision``.
        self.compiled = core.compile_model(str(path), "CPU", {
            "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision})
        self.request = self.compiled.create_infer_request()

    def run(self, image):
        out = self.request.infer({"image": image.numpy()})
        by_name = {k.get_any_name(): v for k, v in out.items()}
        return tuple(by_name[n] for n in OUTPUT_NAMES)


BACKENDS = {"torchscript": _TorchScript, "onnx": _OnnxRuntime, "openvino": _OpenVino}


def _backend(runtime: str, path: Path, threads: int) -> _Backend:
    if runtime.startswith("openvino"):
        precision = "bf16" if runtime.endswith("_bf16") else "f32"
        return BACKENDS["openvino"](path, threads, precision)
    return BACKENDS[runtime](path, threads)


class ExportedRCNN(nn.Module):
    """An exported Mask R-CNN graph behind GeneralizedRCNN's inference contract: Detectron2's
    ``detector_postprocess`` (the eager model's own) pastes its masks at each photo's size;
    detections scoring at most ``score_thresh`` are dropped (the graph was exported with a
    threshold no higher than this one)."""

    def __init__(self, backend: _Backend, score_thresh: float) -> None:
        super().__init__()
        self.backend = backend
        self.score_thresh = score_thresh
        self.train(False)

    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        results = []
        for x in batched_inputs:
            image = x["image"].to("cpu", torch.float32).contiguous()
            boxes, scores, classes, masks = (torch.from_numpy(np.asarray(a))
                                             for a in self.backend.run(image))
            keep = scores > self.score_thresh
            inst = Instances(tuple(image.shape[-2:]))
            inst.pred_boxes = Boxes(boxes[keep].float())
            inst.scores = scores[keep].float()
            inst.pred_classes = classes[keep].long()
            inst.pred_masks = masks[keep].float()
            h, w = x.get("height", image.shape[-2]), x.get("width", image.shape[-1])
            results.append({"instances": detector_postprocess(inst, h, w)})
        return results


def check_installed(runtime: str) -> None:
    """One line when the runtime's Python package cannot be imported."""
    import importlib

    package = RUNTIME_PACKAGES.get(runtime)
    if package is None:
        return
    try:
        importlib.import_module(package)
    except ImportError:
        raise GrapeInputError(f"--runtime {runtime} needs the Python package {package}, which "
                              "is not installed (pip install -r requirements.txt)") from None


def read_export_info(export_dir: str | os.PathLike) -> dict:
    from ..core.fileio import read_json

    path = Path(export_dir) / EXPORT_INFO
    if not path.is_file():
        raise GrapeInputError(f"{export_dir}: no {EXPORT_INFO} here; not a folder written by "
                              "tools/export_model.py")
    return read_json(path, expect=dict)


def check_export_matches(cfg: CfgNode, info: dict, export_dir: str | os.PathLike) -> None:
    """One line when the exported model is not the config's (another architecture, class
    count, input size...), or was exported with a higher score threshold than asked for."""
    exported = info.get("model_signature", {})
    current = model_signature(cfg)
    for key in sorted(set(exported) | set(current)):
        if exported.get(key) != current.get(key):
            raise GrapeInputError(
                f"{export_dir}: the exported model does not match the config: {key} is "
                f"{exported.get(key, 'absent')} there, {current.get(key, 'absent')} in the "
                "config; export it again with this config")
    thresh = cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST
    if thresh < info["score_thresh"] - 1e-9:
        raise GrapeInputError(
            f"{export_dir}: exported with score threshold {info['score_thresh']}, higher than "
            f"the {thresh} asked for; export again with a lower "
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST")
    weights = cfg.MODEL.WEIGHTS
    if weights and os.path.isfile(weights) and info.get("weights_sha256") and \
            file_sha256(weights) != info["weights_sha256"]:
        raise GrapeInputError(f"{export_dir}: exported from other weights than MODEL.WEIGHTS "
                              f"{weights}; export it again, or leave MODEL.WEIGHTS out")


def exported_runtime(cfg: CfgNode, runtime: str, export_dir: str | os.PathLike) -> Runtime:
    """The model exported to ``export_dir`` run with ``runtime``, post-processed (and tiled)
    as the eager model."""
    if runtime not in RUNTIME_MODEL:
        raise GrapeInputError(f"--runtime {runtime}: one of {', '.join(RUNTIMES)}")
    if cfg.TEST.AUG.ENABLED:
        raise GrapeInputError(f"--runtime {runtime}: an exported model runs without test-time "
                              "augmentation (TEST.AUG.ENABLED needs the eager model's heads); "
                              "use --runtime eager or set TEST.AUG.ENABLED False")
    check_installed(runtime)
    info = read_export_info(export_dir)
    check_export_matches(cfg, info, export_dir)
    files = info.get("files", {})
    entry = RUNTIME_MODEL[runtime]
    if entry not in files:
        raise GrapeInputError(f"{export_dir}: holds no {entry} model (it has "
                              f"{', '.join(sorted(files)) or 'none'}); export it with "
                              "tools/export_model.py --format "
                              + ("openvino --int8" if entry == "openvino_int8" else entry))
    path = Path(export_dir) / files[entry]
    if not path.is_file():
        raise GrapeInputError(f"{path}: exported model file missing")
    threads = torch.get_num_threads()
    try:
        backend = _backend(runtime, path, threads)
    except Exception as e:  # a runtime's own loader error: corrupt or foreign file
        raise GrapeInputError(f"{path}: {runtime} cannot load this model "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    # tiles and the containment rule as around the eager model (inference.wrap)
    model = inference_model(cfg, ExportedRCNN(backend, cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST))
    rt = Runtime(cfg, model, prediction_metadata(cfg))
    rt.name = runtime
    rt.device = torch.device("cpu")
    return rt


def build_runtime(cfg: CfgNode, runtime: str = "eager", exported: str | os.PathLike | None = None,
                  allow_random_weights: bool = False) -> Runtime:
    """``eager`` (MODEL.WEIGHTS) or an exported model (``exported``, with its runtime)."""
    if cfg.INPUT.DEPTH.ENABLED:
        raise GrapeInputError("batch prediction runs RGB models; this config is RGB-D "
                              "(INPUT.DEPTH.ENABLED): use tools/visualize.py --depth")
    from ..core.config import is_semantic_model

    if is_semantic_model(cfg):
        raise GrapeInputError(f"{cfg.MODEL.META_ARCHITECTURE}: a semantic model; batch "
                              "prediction runs instance models (Mask R-CNN)")
    if runtime == "eager":
        if exported is not None:
            raise GrapeInputError("--exported is for --runtime torchscript|onnx|openvino")
        return eager_runtime(cfg, allow_random_weights)
    if runtime not in RUNTIMES:
        raise GrapeInputError(f"--runtime {runtime}: one of {', '.join(RUNTIMES)}")
    if exported is None:
        raise GrapeInputError(f"--runtime {runtime} needs --exported EXPORT_DIR (written by "
                              "tools/export_model.py)")
    return exported_runtime(cfg, runtime, exported)


def write_export_info(path: Path, info: dict) -> None:
    from ..core.fileio import write_json_atomic

    write_json_atomic(path, info, indent=1)



