"""Augmentations and dataset mappers for grape images, built from the config."""

from __future__ import annotations

import logging

import detectron2.data.transforms as T
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils

logger = logging.getLogger(__name__)


class RandomSaturationBGR(T.RandomSaturation):
    """Detectron2's RandomSaturation blends towards grey computed with RGB weights; the
    project's images are BGR, so the grey is taken from the channels in RGB order."""

    def get_transform(self, image):
        return super().get_transform(image[:, :, ::-1])


def build_grape_augmentation(cfg, is_train: bool) -> list[T.Augmentation]:
    """Detectron2's resize + flip, plus the vineyard-light jitter and optional vertical flip.

    Photometric jitter is applied after resizing so it costs pixels of the network input only.
    """
    if not is_train:
        return utils.build_augmentation(cfg, is_train)
    if cfg.INPUT.SCALE_CROP.ENABLED:
        augs = scale_crop_augmentation(cfg)
    else:
        augs = utils.build_augmentation(cfg, is_train)
    if cfg.INPUT.VERTICAL_FLIP:
        augs.append(T.RandomFlip(horizontal=False, vertical=True))
    for name, cls in (
        ("BRIGHTNESS", T.RandomBrightness),
        ("CONTRAST", T.RandomContrast),
        ("SATURATION", RandomSaturationBGR if cfg.INPUT.FORMAT == "BGR" else T.RandomSaturation),
    ):
        low, high = getattr(cfg.INPUT, name)
        if (low, high) != (1.0, 1.0):
            augs.append(cls(low, high))
    return augs


def scale_crop_augmentation(cfg) -> list[T.Augmentation]:
    """Resize by a random factor around the test-time scale, cut a fixed-size window, flip.

    Whole vineyard photos (2048 px, bunches of 30-400 px) shrunk to a CPU-sized input leave
    bunches a few pixels wide; crops keep them at the scale the model sees at test time.
    """
    sc = cfg.INPUT.SCALE_CROP
    low, high = sc.SCALE_RANGE
    target_h, target_w = sc.TARGET_SIZE
    augs: list[T.Augmentation] = [
        T.ResizeScale(low, high, target_h, target_w),
        T.FixedSizeCrop(tuple(sc.CROP_SIZE), pad=False),
    ]
    if cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(T.RandomFlip(
            horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
            vertical=cfg.INPUT.RANDOM_FLIP == "vertical",
        ))
    return augs


def build_grape_mapper(cfg, is_train: bool) -> DatasetMapper:
    """Detectron2's DatasetMapper with the project's augmentations: it maps instance records
    (masks) and semantic-view records (``sem_seg_file_name``) alike, and skips images that
    cannot be decoded (see SkipUndecodableMapper)."""
    return SkipUndecodableMapper(
        cfg, is_train, augmentations=build_grape_augmentation(cfg, is_train)
    )


class SkipUndecodableMapper(DatasetMapper):
    """DatasetMapper that returns None for an image it cannot decode (truncated, corrupt,
    gone), with one warning naming the file, instead of killing the data-loader worker.

    Detectron2's MapDataset then maps another image in its place: right for training, where
    one photo fewer is harmless; evaluation leaves such images out of its list beforehand
    (see grape_instances.engine.load_dataset_dicts). A file that failed once is not decoded
    again, so the warning comes once per file and loader process, not once per epoch.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.undecodable: set[str] = set()

    def __call__(self, dataset_dict: dict) -> dict | None:
        file_name = dataset_dict["file_name"]
        if file_name in self.undecodable:
            return None
        try:
            return super().__call__(dataset_dict)
        except (OSError, SyntaxError) as e:  # what PIL raises for unreadable image data
            self.undecodable.add(file_name)
            label_map = dataset_dict.get("sem_seg_file_name")
            also = f" (or its label map {label_map})" if label_map else ""
            logger.warning("%s%s: cannot decode the image (%s); skipped, another image is "
                           "used in its place", file_name, also, e)
            return None
