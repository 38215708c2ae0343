"""Every config key grape_instances adds to Detectron2's, with its default and why it exists."""

from __future__ import annotations

import functools

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg
from detectron2.modeling import META_ARCH_REGISTRY, SemanticSegmentor
from detectron2.projects.point_rend import add_pointrend_config  # also registers its heads

from . import paths
from .errors import GrapeInputError


def is_semantic_model(cfg) -> bool:
    """True when the meta-architecture predicts ``sem_seg`` (the four baselines, which set
    ``predicts_sem_seg``, and Detectron2's SemanticSegmentor): it then trains and is scored on
    the semantic view of the datasets. The architecture must be registered (import
    ``grape_instances.modeling`` for the baselines)."""
    arch = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    return isinstance(arch, type) and (
        issubclass(arch, SemanticSegmentor) or bool(getattr(arch, "predicts_sem_seg", False))
    )


def add_grape_config(cfg: CN) -> CN:
    """Add the project's keys to a Detectron2 config (in place) and return it."""
    _add_pointrend_config(cfg)
    _add_dataset_config(cfg)
    _add_augmentation_config(cfg)
    _add_depth_config(cfg)
    _add_semantic_config(cfg)
    _add_semantic_view_config(cfg)
    _add_evaluation_config(cfg)
    _add_tracking_config(cfg)
    return cfg


#: PointRend's mask heads (configs/mask_rcnn_grapes_cpu_real.yaml uses the first).
POINTREND_MASK_HEADS = ("PointRendMaskHead", "ImplicitPointRendMaskHead")


def is_pointrend_mask_head(cfg) -> bool:
    """True when the mask head is one of PointRend's (``detectron2.projects.point_rend``)."""
    return bool(cfg.MODEL.MASK_ON) and cfg.MODEL.ROI_MASK_HEAD.NAME in POINTREND_MASK_HEADS


@functools.cache
def pointrend_config_keys() -> frozenset[str]:
    """The dotted names of the keys ``add_pointrend_config`` adds to Detectron2's defaults."""
    cfg = get_cfg()
    add_pointrend_config(cfg)
    return frozenset(_flat_keys(cfg) - _flat_keys(get_cfg()))


def _flat_keys(node: CN, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in node.items():
        name = f"{prefix}.{key}" if prefix else key
        keys |= _flat_keys(value, name) if isinstance(value, CN) else {name}
    return keys


def follow_pointrend_config(cfg: CN) -> None:
    """For a PointRend mask head (unfrozen ``cfg``): ``MODEL.POINT_HEAD.NUM_CLASSES`` set to
    ``MODEL.ROI_HEADS.NUM_CLASSES`` (PointRend asserts they are equal; the class count follows
    the training data), and polygon masks refused in one line: the point head samples its
    targets from bitmasks (Detectron2's ``sample_point_labels``)."""
    if not is_pointrend_mask_head(cfg):
        return
    cfg.MODEL.POINT_HEAD.NUM_CLASSES = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    point_head = (cfg.MODEL.ROI_MASK_HEAD.NAME == "ImplicitPointRendMaskHead"
                  or cfg.MODEL.ROI_MASK_HEAD.POINT_HEAD_ON)
    if point_head and cfg.INPUT.MASK_FORMAT != "bitmask":
        raise GrapeInputError(
            f"MODEL.ROI_MASK_HEAD.NAME {cfg.MODEL.ROI_MASK_HEAD.NAME} (PointRend) needs "
            f"INPUT.MASK_FORMAT bitmask, not {cfg.INPUT.MASK_FORMAT!r}: its point head samples "
            "its targets from bitmasks")


def _add_pointrend_config(cfg: CN) -> None:
    # PointRend's keys (Kirillov et al., CVPR 2020; Detectron2's own project, installed with
    # it): MODEL.POINT_HEAD.*, MODEL.IMPLICIT_POINTREND.* and the coarse mask head's
    # ROI_MASK_HEAD.{IN_FEATURES, FC_DIM, NUM_FC, OUTPUT_SIDE_RESOLUTION, POINT_HEAD_ON}. They
    # are read only when ROI_MASK_HEAD.NAME is a PointRend head; MODEL.POINT_HEAD.NUM_CLASSES
    # follows MODEL.ROI_HEADS.NUM_CLASSES (data.build.build_config), as PointRend requires.
    add_pointrend_config(cfg)


def _add_dataset_config(cfg: CN) -> None:
    # [[name, coco_json, image_root], ...] registered as COCO instance datasets before loaders
    # are built, so any COCO set can be trained on or evaluated from the command line.
    cfg.DATASETS.REGISTER = []
    # Root of the embedded synthetic dataset (tools/make_synthetic.py output); its splits are
    # registered as grapes_synth_train / grapes_synth_val.
    cfg.DATASETS.SYNTHETIC_ROOT = paths.SYNTH_ROOT
    # Where INPUT.SCALE_CROP.CACHE keeps its scaled photos and polygons (one JPEG + JSON per
    # photo, named by a hash of the photo's path, size, mtime, annotations and scale).
    cfg.DATASETS.SCALED_CACHE_DIR = "datasets/.scaled_cache"


def _add_augmentation_config(cfg: CN) -> None:
    # Photometric jitter for vineyard light: each factor is drawn from [min, max]; (1, 1) is off.
    cfg.INPUT.BRIGHTNESS = (1.0, 1.0)
    cfg.INPUT.CONTRAST = (1.0, 1.0)
    cfg.INPUT.SATURATION = (1.0, 1.0)
    # Vertical flips on top of INPUT.RANDOM_FLIP (bunches hang down, so off by default).
    cfg.INPUT.VERTICAL_FLIP = False
    # Training on fixed-size crops at (near) native scale instead of shrinking whole photos,
    # as Detectron2's large-scale-jitter recipe does (ResizeScale + FixedSizeCrop). When on,
    # it replaces MIN/MAX_SIZE_TRAIN; test-time resizing still uses MIN/MAX_SIZE_TEST.
    cfg.INPUT.SCALE_CROP = CN()
    cfg.INPUT.SCALE_CROP.ENABLED = False
    # The photo is first scaled to fit (height, width), as MIN/MAX_SIZE_TEST scale it at test time,
    cfg.INPUT.SCALE_CROP.TARGET_SIZE = (1024, 1024)
    # then by a random factor drawn from [min, max] (bunches at other distances),
    cfg.INPUT.SCALE_CROP.SCALE_RANGE = (0.75, 1.25)
    # and a random (height, width) window of it is the network input (no padding: the model
    # pads a batch to SIZE_DIVISIBILITY, so masks stay exact).
    cfg.INPUT.SCALE_CROP.CROP_SIZE = (384, 384)
    # Train on a one-time copy of the photos at the largest scale the jitter reaches, masks
    # as polygons at that scale (grape_instances.data.scaled_cache), instead of decoding the
    # full-resolution photo and every mask on each iteration. Pair it with
    # INPUT.MASK_FORMAT polygon, so masks are rasterised at crop size.
    cfg.INPUT.SCALE_CROP.CACHE = False
    # A bunch the window cuts so that less than this fraction of its (resized) area is left
    # inside is dropped from that window's targets (as Detectron2 drops crowd regions)
    # instead of being taught as a whole bunch: a piece of a bunch labelled "bunch" teaches
    # the model to find fragments. 0 keeps every piece (Detectron2's behaviour).
    cfg.INPUT.SCALE_CROP.MIN_VISIBLE = 0.0
    # Copy-paste augmentation (Ghiasi et al., "Simple Copy-Paste", CVPR 2021;
    # grape_instances.data.copy_paste): after a training image's own augmentation, with
    # probability PROB, 1 to MAX_OBJECTS bunches cut by their masks out of another random
    # training photo (at the same working scale, x a factor drawn from SCALE_RANGE, own flip
    # and light jitter) are pasted at random places of the window. Bunches they cover lose
    # those pixels, and drop out below INPUT.SCALE_CROP.MIN_VISIBLE of their area (all of it
    # covered without SCALE_CROP); that image's masks become bitmasks. Instance models with
    # masks only, no depth input.
    cfg.INPUT.COPY_PASTE = CN()
    cfg.INPUT.COPY_PASTE.ENABLED = False
    cfg.INPUT.COPY_PASTE.PROB = 0.5
    cfg.INPUT.COPY_PASTE.MAX_OBJECTS = 6
    cfg.INPUT.COPY_PASTE.SCALE_RANGE = (0.8, 1.25)
    # Gaussian sigma (px) of the pasted bunch's alpha edge; 0 = a hard cut (the paper found
    # blending makes no difference).
    cfg.INPUT.COPY_PASTE.BLUR_SIGMA = 0.0


def _add_depth_config(cfg: CN) -> None:
    # RGB-D input (grape_instances.data.depth, modeling.rgbd): an aligned depth image (16-bit
    # PNG in mm, 0 = no reading; the COCO image entry's "depth_file", relative to the image
    # root) becomes a fourth input channel of Mask R-CNN and the semantic baselines.
    # MODEL.PIXEL_MEAN and MODEL.PIXEL_STD then need 4 values each: B, G, R, then the depth
    # channel's own mean and std in mm (holes stay 0 before normalisation, a value no real
    # reading has).
    cfg.INPUT.DEPTH = CN()
    cfg.INPUT.DEPTH.ENABLED = False
    # Readings beyond this many mm (whole mm, as the PNGs hold; far background, saturated
    # sensors) are clipped to it, so one far pixel cannot dominate the normalised channel.
    cfg.INPUT.DEPTH.MAX_MM = 5000


def _add_semantic_config(cfg: CN) -> None:
    # Semantic baselines (SegNet, PSPNet, UNet, FCN) and the semantic view of instance data.
    # Their keys live in this section.
    _add_semantic_model_config(cfg)


def _add_semantic_model_config(cfg: CN) -> None:
    """Keys of the four semantic baselines (grape_instances.modeling)."""
    # Background and bunch; Detectron2's default (54) is COCO-stuff's.
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 2
    # Per-class cross-entropy weights, one per class; empty = unweighted.
    cfg.MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS = []
    # Encoder-only ImageNet weights (path or URL; a torchvision vgg16/vgg16_bn state dict for
    # the VGG encoder); "" = random init. Whole-model weights go through MODEL.WEIGHTS.
    cfg.MODEL.ENCODER_WEIGHTS = ""

    # VGG16 encoder of SegNet / UNet / FCN8s (BACKBONE.NAME "build_vgg16_backbone").
    cfg.MODEL.VGG = CN()
    # Channel multiplier of every encoder (and so decoder) layer; < 1 for narrow CPU variants.
    cfg.MODEL.VGG.WIDTH_MULT = 1.0
    # Norm after each encoder conv: "BN" (vgg16_bn), "GN" (small batches), "" (plain vgg16).
    cfg.MODEL.VGG.NORM = "BN"
    # Width of fc6 (7x7) / fc7 (1x1) run as convs; 4096 in FCN, 0 = no fc layers (SegNet/UNet).
    cfg.MODEL.VGG.FC_DIM = 0
    # Dropout after fc6 and fc7 (FCN's 0.5).
    cfg.MODEL.VGG.FC_DROPOUT = 0.5

    # Dilated ResNet of PSPNet (BACKBONE.NAME "build_dilated_resnet_backbone"): 8 dilates res4
    # and res5 (the paper), 16 only res5 (cheaper), 32 none.
    cfg.MODEL.RESNETS.OUTPUT_STRIDE = 8

    cfg.MODEL.PSPNET = CN()
    # Output sizes of the pyramid pooling levels.
    cfg.MODEL.PSPNET.BINS = [1, 2, 3, 6]
    # Weight of the auxiliary res4 loss (training only); 0 removes the auxiliary head.
    cfg.MODEL.PSPNET.AUX_WEIGHT = 0.4


def _add_semantic_view_config(cfg: CN) -> None:
    # Where the semantic view of a COCO instance dataset caches its derived label PNGs, one
    # folder per hash of the JSON (grape_instances.data.semantic); "" = OUTPUT_DIR/semantic_cache,
    # so a run writes nothing outside OUTPUT_DIR. Share one folder between runs to reuse maps.
    cfg.DATASETS.SEMANTIC_CACHE_DIR = ""
    # Semantic view of K categories: True = background + one merged foreground, False = K + 1.
    cfg.DATASETS.SEMANTIC_MERGE_CLASSES = False


def _add_evaluation_config(cfg: CN) -> None:
    # Instance models are also scored as semantic segmentation: the masks of the instances
    # scoring at least this are merged into one background / bunch map.
    cfg.TEST.SEMANTIC_SCORE_THRESH = 0.5
    # Bunch-count error of instance models: predictions scoring at least this are counted.
    cfg.TEST.COUNT_SCORE_THRESH = 0.5
    # Tiled inference of instance models (grape_instances.inference.tiling): window size in
    # pixels of the test-resized image; 0 = the whole image at once.
    cfg.TEST.TILE_SIZE = 0
    # Overlap of neighbouring windows, as a fraction of TEST.TILE_SIZE.
    cfg.TEST.TILE_OVERLAP = 0.25
    # Parts of two windows are one bunch when they overlap (or touch) at least this much.
    cfg.TEST.TILE_MERGE_THRESH = 0.5
    # A predicted mask with at least this fraction of its area inside a higher-scoring mask
    # of the same class is dropped (grape_instances.inference.containment): box NMS keeps a
    # piece of a bunch inside the whole bunch, and the count goes up by one per piece.
    # Applied by the predictor and in evaluation (AP, P / R / F1, count); 0 = off.
    cfg.TEST.CONTAINMENT_THRESH = 0.0
    # Test-time augmentation of instance models (inference.wrap): Detectron2's own keys,
    # TEST.AUG.ENABLED / MIN_SIZES / MAX_SIZE / FLIP, run by its GeneralizedRCNNWithTTA on the
    # test-resized image (MIN_SIZES are short sides, as INPUT.MIN_SIZE_TEST). Off by default.
    # Instance P / R / F1 (Santos et al. 2020): only predictions scoring at least this count.
    cfg.TEST.F1_SCORE_THRESH = 0.5
    # Mask IoU thresholds of the one-to-one matching behind P / R / F1 (WGISD paper Table 3).
    cfg.TEST.F1_IOU_THRESHOLDS = (0.3, 0.5, 0.8)


def _add_tracking_config(cfg: CN) -> None:
    # Counting bunches along a row video (tools/count_row.py, inference.tracking). BACKEND,
    # MATCH, MAX_GAP, MIN_FRAMES and SCORE_THRESH were chosen together on the 3 rendered
    # validation videos with the row model at --frame-step 2 (`make row-eval`; README
    # "Counting bunches along a row"); frame counts are in processed frames.
    cfg.TRACKING = CN()
    # The tracking library: "norfair" (any distance, so mask IoU) or "bytetrack"
    # (supervision's, boxes only).
    cfg.TRACKING.BACKEND = "norfair"
    # What detections are matched by: "mask" (mask IoU, motion compensated) or "box" (box IoU).
    cfg.TRACKING.MATCH = "mask"
    # A track lives on this many processed frames without a detection (a bunch hidden by a
    # leaf for up to this many frames keeps its id).
    cfg.TRACKING.MAX_GAP = 10
    # norfair: estimate the camera's pan between frames (optical flow outside the bunches)
    # and track in row coordinates, so a fast pan does not break tracks.
    cfg.TRACKING.CAMERA_MOTION = True
    # With CAMERA_MOTION, bunches are still in row coordinates: a track stays where it was last
    # seen (norfair's NoFilter) instead of following a Kalman filter's velocity, which boxes
    # cut by the frame edge or by leaves skew; what lets a bunch that left the view come back
    # with its id.
    cfg.TRACKING.STATIC = True
    # A detection joins a track when their IoU is at least this.
    cfg.TRACKING.MIN_IOU = 0.1
    # A track counts as a bunch when seen in at least this many processed frames; shorter
    # ones are flicker (false detections of a few frames). Validation tried 1-16 with MAX_GAP
    # 10, 20, 40 and scores 0.3, 0.5, 0.7; the 6,000-iteration row model's pick: 3 / 10 / 0.7.
    # (With REID_GAP in the grid validation picks 5 / 10 / 0.5 with reid 20 / 2, which did
    # worse on the test videos; kept off, a choice made after seeing them: README.)
    cfg.TRACKING.MIN_FRAMES = 3
    # Only detections scoring at least this are tracked and counted.
    cfg.TRACKING.SCORE_THRESH = 0.7
    # Re-identification (norfair's): a track lost for more than MAX_GAP frames, up to
    # REID_GAP more, or unmatched in this frame, takes over a new track whose box centre lies
    # within REID_DISTANCE bunch sizes (the larger box side) of where it was last seen, in row
    # coordinates with CAMERA_MOTION. 0 = off. It needs BACKEND norfair; with it on, a track
    # is confirmed on its second detection (results.json and the video show its first ones
    # untracked; tracks.csv and mot.txt count them).
    cfg.TRACKING.REID_GAP = 0
    cfg.TRACKING.REID_DISTANCE = 0.5
