"""The part every semantic baseline shares: Detectron2's SemanticSegmentor contract.

Input: Detectron2's ``batched_inputs`` (``image`` uint8 CHW in ``cfg.INPUT.FORMAT``, and
``sem_seg`` long HxW in training). Images are normalised with ``MODEL.PIXEL_MEAN/STD`` and
padded to the model's ``size_divisibility``; targets are padded with ``ignore_value`` so the
padding never counts. Training returns a dict of losses; inference returns
``[{"sem_seg": Tensor[C, H, W]}]`` of class probabilities at each input's ``height`` x ``width``.
A subclass only builds its layers and implements ``predict`` (padded images -> logits at the
same resolution), so the four baselines differ only in architecture.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList
from torch import nn
from torch.nn import functional as F


def semantic_baseline_config(cfg) -> dict[str, Any]:
    """The constructor arguments every baseline reads from the same Detectron2 keys."""
    head = cfg.MODEL.SEM_SEG_HEAD
    return {
        "num_classes": head.NUM_CLASSES,
        "ignore_value": head.IGNORE_VALUE,
        "loss_weight": head.LOSS_WEIGHT,
        "class_weights": tuple(head.CLASS_WEIGHTS),
        "pixel_mean": tuple(cfg.MODEL.PIXEL_MEAN),
        "pixel_std": tuple(cfg.MODEL.PIXEL_STD),
    }


class SemanticBaseline(nn.Module):
    """Normalise + pad, call ``predict``, then cross-entropy (training) or softmax + resize."""

    #: what core.config.is_semantic_model reads: this model predicts ``sem_seg``
    predicts_sem_seg = True

    def __init__(
        self,
        *,
        num_classes: int = 2,
        ignore_value: int = 255,
        loss_weight: float = 1.0,
        class_weights: Sequence[float] = (),
        pixel_mean: Sequence[float] = (103.530, 116.280, 123.675),
        pixel_std: Sequence[float] = (1.0, 1.0, 1.0),
    ):
        super().__init__()
        if class_weights and len(class_weights) != num_classes:
            raise ValueError(f"{len(class_weights)} class weights given for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights, False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def size_divisibility(self) -> int:
        """Inputs are padded to a multiple of this (the network's total stride): by default
        the encoder's (a subclass without ``backbone`` overrides this)."""
        return self.backbone.size_divisibility

    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits for padded, normalised NCHW images: ``{"sem_seg": N x C x H x W, ...}``.

        Every entry has the images' own H x W; extra entries (auxiliary heads) are scored
        by ``losses``.
        """
        raise NotImplementedError

    def forward(self, batched_inputs: list[dict[str, Any]]):
        images = [x["image"].to(self.device) for x in batched_inputs]
        images = [(x - self.pixel_mean) / self.pixel_std for x in images]
        images = ImageList.from_tensors(images, self.size_divisibility)
        outputs = self.predict(images.tensor)
        if self.training:
            if "sem_seg" not in batched_inputs[0]:
                raise ValueError(
                    f"{type(self).__name__} training needs 'sem_seg' targets in batched_inputs"
                )
            targets = [x["sem_seg"].to(self.device) for x in batched_inputs]
            targets = ImageList.from_tensors(
                targets, self.size_divisibility, pad_value=self.ignore_value
            ).tensor
            return self.losses(outputs, targets)
        results = []
        probabilities = outputs["sem_seg"].softmax(dim=1)
        for prob, inputs, image_size in zip(
            probabilities, batched_inputs, images.image_sizes, strict=True
        ):
            height = inputs.get("height", image_size[0])
            width = inputs.get("width", image_size[1])
            results.append({"sem_seg": sem_seg_postprocess(prob, image_size, height, width)})
        return results

    def cross_entropy(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over non-ignored pixels (0, not NaN, when all are ignored)."""
        if not (targets != self.ignore_value).any():
            return logits.sum() * 0.0
        return F.cross_entropy(
            logits.float(),
            targets.long(),
            weight=self.class_weights,
            ignore_index=self.ignore_value,
            reduction="mean",
        )

    def losses(
        self, outputs: dict[str, torch.Tensor], targets: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return {"loss_sem_seg": self.cross_entropy(outputs["sem_seg"], targets) * self.loss_weight}
