"""Augmentations and dataset mappers for grape images, built from the config."""

from __future__ import annotations

import logging

import detectron2.data.transforms as T
import numpy as np
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.structures import BoxMode

from ..core.depth import read_depth
from ..core.errors import GrapeInputError
from ..core.masks import segmentation_to_mask
from .copy_paste import CopyPaste, check_copy_paste_config
from .depth import check_depth_config, stack_depth, transform_depth
from .scaled_cache import FixedSizeCropAnywhere, polygons_area

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
        FixedSizeCropAnywhere(tuple(sc.CROP_SIZE), pad=False),
    ]
    if cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(T.RandomFlip(
            horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
            vertical=cfg.INPUT.RANDOM_FLIP == "vertical",
        ))
    return augs


def build_grape_mapper(cfg, is_train: bool, records: list[dict] | None = None
                       ) -> DatasetMapper:
    """Detectron2's DatasetMapper with the project's augmentations: it maps instance records
    (masks) and semantic-view records (``sem_seg_file_name``) alike, and skips images that
    cannot be decoded (see SkipUndecodableMapper); with ``INPUT.DEPTH.ENABLED`` it also
    stacks each record's depth image as a fourth channel (RGBDMapper).

    Training with ``INPUT.COPY_PASTE.ENABLED`` pastes bunches of the training ``records``
    (the list the loader maps, which the caller passes) into each other (CopyPasteMapper)."""
    check_depth_config(cfg)
    check_copy_paste_config(cfg)
    augmentations = build_grape_augmentation(cfg, is_train)
    if cfg.INPUT.DEPTH.ENABLED:
        return RGBDMapper(
            cfg, is_train, augmentations=augmentations, max_depth_mm=cfg.INPUT.DEPTH.MAX_MM
        )
    min_visible = min_visible_fraction(cfg, is_train)
    if is_train and cfg.INPUT.COPY_PASTE.ENABLED:
        if records is None:
            raise ValueError("INPUT.COPY_PASTE.ENABLED: build_grape_mapper needs the training "
                             "records to paste bunches from")
        cp = cfg.INPUT.COPY_PASTE
        sc = cfg.INPUT.SCALE_CROP
        copy_paste = CopyPaste(
            records, max_objects=cp.MAX_OBJECTS, scale_range=cp.SCALE_RANGE,
            blur_sigma=cp.BLUR_SIGMA, min_visible=min_visible,
            reference_hw=tuple(sc.TARGET_SIZE) if sc.ENABLED else (1, 1),
            photometric=[a for a in augmentations if isinstance(a, PHOTOMETRIC_AUGMENTATIONS)],
            flip=cfg.INPUT.RANDOM_FLIP, image_format=cfg.INPUT.FORMAT,
        )
        return CopyPasteMapper(cfg, is_train, augmentations=augmentations,
                               min_visible=min_visible, copy_paste=copy_paste,
                               prob=cp.PROB)
    return SkipUndecodableMapper(cfg, is_train, augmentations=augmentations,
                                 min_visible=min_visible)


#: The colour jitter of build_grape_augmentation, drawn anew for each pasted bunch.
PHOTOMETRIC_AUGMENTATIONS = (T.RandomBrightness, T.RandomContrast, T.RandomSaturation)


def min_visible_fraction(cfg, is_train: bool) -> float:
    """INPUT.SCALE_CROP.MIN_VISIBLE where training crops windows, else 0 (keep all)."""
    sc = cfg.INPUT.SCALE_CROP
    return float(sc.MIN_VISIBLE) if is_train and sc.ENABLED else 0.0


def _without_crops(transforms: T.TransformList) -> T.TransformList:
    return T.TransformList([t for t in transforms.transforms
                            if not isinstance(t, T.CropTransform)])


def _annotation_area(ann: dict, transforms: T.TransformList, height: int, width: int,
                     clip_hw: tuple[int, int] | None) -> float:
    segm = ann.get("segmentation")
    if isinstance(segm, list) and segm:
        polygons = [np.array(p, np.float64).reshape(-1, 2) for p in segm]  # a copy: fvcore
        # transforms change coordinates in place
        return polygons_area(transforms.apply_polygons(polygons))
    if segm:
        return float(transforms.apply_segmentation(
            segmentation_to_mask(segm, height, width)).sum())
    box = transforms.apply_box(BoxMode.convert(np.asarray([ann["bbox"]], np.float64),
                                               ann["bbox_mode"], BoxMode.XYXY_ABS))[0]
    if clip_hw is not None:
        box = np.clip(box, 0, [clip_hw[1], clip_hw[0], clip_hw[1], clip_hw[0]])
    return float(max(box[2] - box[0], 0) * max(box[3] - box[1], 0))


def visible_fractions(annotations: list[dict], transforms: T.TransformList, height: int,
                      width: int, image_shape: tuple[int, int]) -> np.ndarray:
    """Per annotation: its area after ``transforms`` over its area after the same transforms
    without their crops, i.e. how much of the (resized, flipped) bunch the window keeps.
    Polygons are measured as polygons, RLE masks as pixels, box-only annotations by box."""
    uncropped = _without_crops(transforms)
    out = np.ones(len(annotations))
    for i, ann in enumerate(annotations):
        whole = _annotation_area(ann, uncropped, height, width, None)
        if whole > 0:
            out[i] = _annotation_area(ann, transforms, height, width, image_shape) / whole
    return out


class SkipUndecodableMapper(DatasetMapper):
    """DatasetMapper that returns None for an image it cannot decode (truncated, corrupt,
    gone), with one warning naming the file, instead of killing the data-loader worker.

    Detectron2's MapDataset then maps another image in its place: right for training, where
    one photo fewer is harmless; evaluation leaves such images out of its list beforehand
    (see data.build.load_dataset_dicts). A file that failed once is not decoded again, so the
    warning comes once per file and loader process, not once per epoch.
    """

    def __init__(self, *args, min_visible: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.undecodable: set[str] = set()
        self.min_visible = float(min_visible)

    def _drop_cut_annotations(self, dataset_dict, transforms, image_shape) -> np.ndarray:
        """Drop from ``dataset_dict`` the bunches the crop cut to less than ``min_visible``
        of their area (INPUT.SCALE_CROP.MIN_VISIBLE); returns the visible fractions of the
        annotations kept (all 1 when ``min_visible`` is 0: nothing is measured)."""
        annotations = dataset_dict.get("annotations", [])
        if not (self.min_visible > 0 and annotations):
            return np.ones(len(annotations))
        fractions = visible_fractions(annotations, transforms, dataset_dict["height"],
                                      dataset_dict["width"], image_shape)
        keep = (fractions >= self.min_visible) | (fractions <= 0)  # wholly outside:
        dataset_dict["annotations"] = [  # Detectron2 drops it
            a for a, k in zip(annotations, keep, strict=True) if k
        ]
        return fractions[keep]

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        """Detectron2's, after dropping the bunches the crop cut to less than
        ``min_visible`` of their area (INPUT.SCALE_CROP.MIN_VISIBLE)."""
        self._drop_cut_annotations(dataset_dict, transforms, image_shape)
        super()._transform_annotations(dataset_dict, transforms, image_shape)

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


class RecordingAugmentationList(T.AugmentationList):
    """AugmentationList that keeps the transforms of its last call, so the depth image can
    follow exactly the geometry DatasetMapper drew for (and applied to) the colour image."""

    last_transforms: T.TransformList | None = None

    def __call__(self, aug_input) -> T.TransformList:
        self.last_transforms = super().__call__(aug_input)
        return self.last_transforms


class CopyPasteMapper(SkipUndecodableMapper):
    """SkipUndecodableMapper that, after the image's own augmentation and with probability
    ``prob``, pastes bunches of another training record into it (data.copy_paste: the design
    and its reasons are there). An image without a paste is exactly SkipUndecodableMapper's:
    the same random draws in the same order, no draw at all when ``prob`` is 0.

    ``last_pasted`` is the number of pasted bunches in the last output (the last instances),
    for pictures of what the augmentation does (data.preview)."""

    def __init__(self, *args, copy_paste: CopyPaste, prob: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.copy_paste = copy_paste
        self.prob = float(prob)
        self.augmentations = RecordingAugmentationList(self.augmentations.augs)
        self._crop_visible: np.ndarray | None = None
        self.last_pasted = 0

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        """SkipUndecodableMapper's (Detectron2's steps of DatasetMapper._transform_annotations,
        0.6, written out), keeping each instance's visible fraction for the paste's rule."""
        fractions = self._drop_cut_annotations(dataset_dict, transforms, image_shape)
        annotations = dataset_dict.pop("annotations")
        for anno in annotations:
            if not self.use_instance_mask:
                anno.pop("segmentation", None)
            if not self.use_keypoint:
                anno.pop("keypoints", None)
        crowd = np.array([a.get("iscrowd", 0) != 0 for a in annotations], bool)
        annos = [
            utils.transform_instance_annotations(
                obj, transforms, image_shape, keypoint_hflip_indices=self.keypoint_hflip_indices
            )
            for obj, is_crowd in zip(annotations, crowd, strict=True) if not is_crowd
        ]
        instances = utils.annotations_to_instances(
            annos, image_shape, mask_format=self.instance_mask_format
        )
        if self.recompute_boxes:
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        instances, kept = utils.filter_empty_instances(instances, return_mask=True)
        dataset_dict["instances"] = instances
        self._crop_visible = np.asarray(fractions, np.float64)[~crowd][kept.numpy()]

    def __call__(self, dataset_dict: dict) -> dict | None:
        self._crop_visible = None
        self.last_pasted = 0
        mapped = super().__call__(dataset_dict)
        if mapped is None or "instances" not in mapped or self.prob <= 0 \
                or np.random.rand() >= self.prob:
            return mapped
        pasted = self.copy_paste(
            mapped["image"].permute(1, 2, 0).numpy(),  # a view: pasted into in place
            mapped["instances"], self._crop_visible, (mapped["height"], mapped["width"]),
            self.augmentations.last_transforms, mapped["file_name"],
        )
        if pasted is not None:
            mapped["instances"], self.last_pasted = pasted
        return mapped


class RGBDMapper(SkipUndecodableMapper):
    """SkipUndecodableMapper that appends the record's depth image (``depth_file_name``) to
    ``image`` as a fourth channel: float32 B, G, R (0-255), depth (mm, clipped to
    ``max_depth_mm``, 0 = no reading), normalised later by the model's 4-value PIXEL_MEAN/STD.

    Augmentations see the colour image only (photometric jitter never touches depth); the
    geometric transforms they drew are then applied to depth (data.depth.transform_depth,
    nearest-neighbour). A depth file that is gone or undecodable skips the record with one
    warning, as an undecodable photo does; a record without one is a user error.
    """

    def __init__(self, *args, max_depth_mm: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_depth_mm = float(max_depth_mm)
        self.augmentations = RecordingAugmentationList(self.augmentations.augs)

    def __call__(self, dataset_dict: dict) -> dict | None:
        file_name = dataset_dict["file_name"]
        depth_file = dataset_dict.get("depth_file_name")
        if not depth_file:
            raise GrapeInputError(
                f"{file_name}: INPUT.DEPTH.ENABLED but its record has no depth_file_name "
                "(no depth_file in its COCO image entry)"
            )
        if file_name in self.undecodable:
            return None
        try:
            depth = read_depth(depth_file)
        except OSError as e:  # UndecodableDepthError: missing or corrupt
            self.undecodable.add(file_name)
            logger.warning("%s; its image %s is skipped, another image is used in its place",
                           e, file_name)
            return None
        mapped = super().__call__(dataset_dict)
        if mapped is None:
            return None
        if depth.shape != (mapped["height"], mapped["width"]):
            raise GrapeInputError(
                f"{depth_file}: depth image is {depth.shape[1]}x{depth.shape[0]} but its RGB "
                f"image {file_name} is {mapped['width']}x{mapped['height']}"
            )
        depth = transform_depth(self.augmentations.last_transforms, depth)
        mapped["image"] = stack_depth(mapped["image"], depth, self.max_depth_mm)
        return mapped
