"""Augmentations and dataset mappers for grape images, built from the config."""

from __future__ import annotations

import detectron2.data.transforms as T
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils


def build_grape_augmentation(cfg, is_train: bool) -> list[T.Augmentation]:
    """Detectron2's resize + flip, plus the vineyard-light jitter and optional vertical flip.

    Photometric jitter is applied after resizing so it costs pixels of the network input only.
    """
    augs = utils.build_augmentation(cfg, is_train)
    if not is_train:
        return augs
    if cfg.INPUT.VERTICAL_FLIP:
        augs.append(T.RandomFlip(horizontal=False, vertical=True))
    for name, cls in (
        ("BRIGHTNESS", T.RandomBrightness),
        ("CONTRAST", T.RandomContrast),
        ("SATURATION", T.RandomSaturation),
    ):
        low, high = getattr(cfg.INPUT, name)
        if (low, high) != (1.0, 1.0):
            augs.append(cls(low, high))
    return augs


def build_grape_mapper(cfg, is_train: bool) -> DatasetMapper:
    """Detectron2's DatasetMapper with the project's augmentations: it maps instance records
    (masks) and semantic-view records (``sem_seg_file_name``) alike."""
    return DatasetMapper(cfg, is_train, augmentations=build_grape_augmentation(cfg, is_train))
