"""Every config key grape_instances adds to Detectron2's, with its default and why it exists."""

from __future__ import annotations

from detectron2.config import CfgNode as CN


def add_grape_config(cfg: CN) -> CN:
    """Add the project's keys to a Detectron2 config (in place) and return it."""
    _add_dataset_config(cfg)
    _add_augmentation_config(cfg)
    _add_semantic_config(cfg)
    _add_semantic_view_config(cfg)
    _add_evaluation_config(cfg)
    return cfg


def _add_dataset_config(cfg: CN) -> None:
    # [[name, coco_json, image_root], ...] registered as COCO instance datasets before loaders
    # are built, so any COCO set can be trained on or evaluated from the command line.
    cfg.DATASETS.REGISTER = []
    # Root of the embedded synthetic dataset (tools/make_synthetic.py output); its splits are
    # registered as grapes_synth_train / grapes_synth_val.
    cfg.DATASETS.SYNTHETIC_ROOT = "datasets/grapes_synth"


def _add_augmentation_config(cfg: CN) -> None:
    # Photometric jitter for vineyard light: each factor is drawn from [min, max]; (1, 1) is off.
    cfg.INPUT.BRIGHTNESS = (1.0, 1.0)
    cfg.INPUT.CONTRAST = (1.0, 1.0)
    cfg.INPUT.SATURATION = (1.0, 1.0)
    # Vertical flips on top of INPUT.RANDOM_FLIP (bunches hang down, so off by default).
    cfg.INPUT.VERTICAL_FLIP = False


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
    # folder per hash of the JSON (grape_instances.data.semantic); relative to the working dir.
    cfg.DATASETS.SEMANTIC_CACHE_DIR = "datasets/.semantic_cache"


def _add_evaluation_config(cfg: CN) -> None:
    # Instance models are also scored as semantic segmentation: the masks of the instances
    # scoring at least this are merged into one background / bunch map.
    cfg.TEST.SEMANTIC_SCORE_THRESH = 0.5
    # Bunch-count error of instance models: predictions scoring at least this are counted.
    cfg.TEST.COUNT_SCORE_THRESH = 0.5
