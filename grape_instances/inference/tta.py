"""Test-time augmentation of an instance model (``TEST.AUG.ENABLED``): Detectron2's own
``GeneralizedRCNNWithTTA`` with its keys ``TEST.AUG.MIN_SIZES`` / ``MAX_SIZE`` / ``FLIP``.

Each photo is predicted at every size of ``TEST.AUG.MIN_SIZES`` (short side, as
``INPUT.MIN_SIZE_TEST``; the long side at most ``TEST.AUG.MAX_SIZE``; 0 = the test-resized
image as it is, the model's working scale whatever the photo's shape), and horizontally
flipped too with ``TEST.AUG.FLIP``: ``len(MIN_SIZES) x 2`` passes of the backbone. The boxes of
all passes are merged by class-wise NMS (``MODEL.ROI_HEADS.NMS_THRESH_TEST``, top
``TEST.DETECTIONS_PER_IMAGE``); the mask head then runs on the merged boxes in every pass and
the mask probabilities are averaged (flipped back) before they are pasted at the photo's size.
Detectron2 runs the backbone again for that mask pass; here each pass's features are kept
from the box pass and reused (the same numbers, half the backbone passes).

The sizes resize the image the model is given, i.e. the photo after the test-time resize
(``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``), as in Detectron2's ``train_net.py``: a size
above it upsamples that image (one warning says so); raise ``INPUT.MIN_SIZE_TEST`` /
``MAX_SIZE_TEST`` to the largest TTA size to scale down from the photo instead.

It wraps the eager Mask R-CNN only (``GeneralizedRCNN``): not an exported graph, not a
semantic or RGB-D model (each is one line). Tiles (``TEST.TILE_SIZE``, ``--tile``) replace it:
its sizes are whole-photo sizes, so a tiled run predicts without it and says so once (the
real-photo recipe has it on, and ``--tile`` must still work with the recipe).
"""

from __future__ import annotations

import contextlib
import logging

import torch
from detectron2.config import CfgNode
from detectron2.data.transforms import ResizeShortestEdge
from detectron2.modeling import GeneralizedRCNN
from detectron2.modeling.test_time_augmentation import DatasetMapperTTA, GeneralizedRCNNWithTTA
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..core.errors import GrapeInputError

logger = logging.getLogger(__name__)


def tta_enabled(cfg: CfgNode) -> bool:
    return bool(cfg.TEST.AUG.ENABLED)


def check_tta_config(cfg: CfgNode) -> None:
    """One line for what test-time augmentation cannot run with (RGB-D input) or sizes it
    cannot use; nothing when ``TEST.AUG.ENABLED`` is off or tiles replace it
    (``TEST.TILE_SIZE``: :func:`inference.wrap.inference_model` says so)."""
    if not tta_enabled(cfg) or cfg.TEST.TILE_SIZE:
        return
    if cfg.INPUT.DEPTH.ENABLED:
        raise GrapeInputError("TEST.AUG.ENABLED: test-time augmentation runs RGB models; this "
                              "config is RGB-D (INPUT.DEPTH.ENABLED)")
    sizes = list(cfg.TEST.AUG.MIN_SIZES)
    if not sizes or any(int(s) < 0 for s in sizes) or int(cfg.TEST.AUG.MAX_SIZE) <= 0:
        raise GrapeInputError(
            f"TEST.AUG.MIN_SIZES {tuple(sizes)} / TEST.AUG.MAX_SIZE {cfg.TEST.AUG.MAX_SIZE}: "
            "test-time augmentation needs one or more short-side sizes (0 = the test-resized "
            "image's own) and a positive long-side limit")


def _whole_0_255(image: torch.Tensor) -> bool:
    return bool(torch.equal(image, image.round()) and float(image.min()) >= 0
                and float(image.max()) <= 255)


class _MapperTTA(DatasetMapperTTA):
    """Detectron2's TTA mapper, with the input image as uint8 when it holds whole 0-255
    values (the Predictor's and the photo loader's float32 images; the evaluation loader's
    are uint8), so that all three resize it alike (PIL), a size of 0 standing for the
    test-resized image's own short side, and one warning when a size upsamples that image."""

    def __init__(self, cfg: CfgNode) -> None:
        super().__init__(cfg)
        self.configured_sizes = [int(s) for s in self.min_sizes]
        self.warned = False

    def __call__(self, dataset_dict: dict) -> list[dict]:
        image = dataset_dict["image"]
        if image.dtype != torch.uint8 and image.shape[0] == 3 and _whole_0_255(image):
            dataset_dict = {**dataset_dict, "image": image.to(torch.uint8)}
        h, w = image.shape[-2:]
        self.min_sizes = [s or min(h, w) for s in self.configured_sizes]
        if not self.warned:
            for size in self.min_sizes:
                nh, nw = ResizeShortestEdge.get_output_shape(h, w, size, self.max_size)
                if nh > h + 1 or nw > w + 1:
                    self.warned = True
                    logger.warning(
                        "TEST.AUG.MIN_SIZES %d upsamples the test-resized image (%d x %d -> "
                        "%d x %d); raise INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST to the largest "
                        "TTA size to scale down from the photo instead", size, w, h, nw, nh)
                    break
        return super().__call__(dataset_dict)


class TTAModel(GeneralizedRCNNWithTTA):
    """``GeneralizedRCNNWithTTA`` built from a config (:func:`check_tta_config`'s one-line
    errors), starting in the wrapped model's mode (a wrapper around the Predictor's eval-mode
    model predicts at once), and transparent in training mode like the other wrappers."""

    @classmethod
    def from_config(cls, cfg: CfgNode, model: nn.Module) -> TTAModel:
        check_tta_config(cfg)
        inner = model.module if isinstance(model, DistributedDataParallel) else model
        if not isinstance(inner, GeneralizedRCNN):
            raise GrapeInputError(
                f"TEST.AUG.ENABLED: test-time augmentation runs on the eager Mask R-CNN "
                f"(Detectron2's GeneralizedRCNN), not on {type(inner).__name__} (an exported "
                "runtime or another model); set TEST.AUG.ENABLED False")
        logger.info("Test-time augmentation: short sides %s (long side <= %d)%s",
                    tuple(cfg.TEST.AUG.MIN_SIZES), cfg.TEST.AUG.MAX_SIZE,
                    ", each also flipped" if cfg.TEST.AUG.FLIP else "")
        return cls(cfg, inner)

    def __init__(self, cfg: CfgNode, model: nn.Module, batch_size: int = 3) -> None:
        super().__init__(cfg, model, tta_mapper=_MapperTTA(cfg), batch_size=batch_size)
        self.train(self.model.training)

    def __call__(self, batched_inputs: list[dict]) -> list[dict]:
        if self.training:
            return self.model(batched_inputs)
        return super().__call__(batched_inputs)

    def _inference_one_image(self, input: dict) -> dict:
        self._features: list | None = None
        try:
            return super()._inference_one_image(input)
        finally:
            self._features = None  # a photo's features are not kept past it

    def _batch_inference(self, batched_inputs, detected_instances=None):
        """Detectron2's batched passes; the box pass (no ``detected_instances``) keeps each
        batch's backbone features, and the mask pass on the merged boxes (the same inputs in
        the same batches) reuses them instead of running the backbone again."""
        if detected_instances is None:
            self._features = []
            with _backbone_calls(self.model.backbone, record=self._features):
                return super()._batch_inference(batched_inputs)
        if self._features is None:  # not after a box pass of these inputs: run it all
            return super()._batch_inference(batched_inputs, detected_instances)
        with _backbone_calls(self.model.backbone, replay=self._features):
            return super()._batch_inference(batched_inputs, detected_instances)


@contextlib.contextmanager
def _backbone_calls(backbone: nn.Module, record: list | None = None, replay: list | None = None):
    """Within the block, ``backbone``'s calls append ``(input shape, features)`` to
    ``record``, or return ``replay``'s features in order (for inputs of the same shapes)."""
    forward = backbone.forward
    replayed = iter(replay or [])

    def recording(x):
        features = forward(x)
        record.append((tuple(x.shape), features))
        return features

    def replaying(x):
        shape, features = next(replayed)
        if shape != tuple(x.shape):
            raise RuntimeError(f"TTA mask pass: input {tuple(x.shape)}, box pass {shape}")
        return features

    backbone.forward = recording if record is not None else replaying
    try:
        yield
    finally:
        del backbone.forward  # the class's forward again
