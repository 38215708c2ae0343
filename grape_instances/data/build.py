"""From a config to the records a model reads: the config built with the class count its
training data need (``build_config``), the category checks, and the dataset lists the
Trainer's loaders and every evaluation read (missing images named, undecodable ones left out
of evaluations).

Detectron2's own ``data/build.py`` turns dataset names into loaders; this is the project's
layer under it. It reads only the config, the catalogs and the files.
"""

from __future__ import annotations

import functools
import logging
import os

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts
from detectron2.modeling import META_ARCH_REGISTRY

from ..core.config import add_grape_config, follow_pointrend_config, is_semantic_model
from ..core.depth import UndecodableDepthError, read_depth
from ..core.errors import GrapeInputError
from ..core.images import UndecodableImageError, read_image_size
from .copy_paste import check_copy_paste_config
from .datasets import check_datasets_exist, check_same_categories, dataset_thing_classes
from .depth import check_depth_config, check_depth_files
from .semantic import semantic_view_for_config, stuff_classes_for

logger = logging.getLogger(__name__)


def build_config(
    config_file: str, opts: list[str] | None = None, notes: list[str] | None = None
) -> CfgNode:
    """get_cfg() + project keys + YAML + command-line overrides, the class count following
    the training data (see follow_training_categories; PointRend's point head follows it
    too, core.config.follow_pointrend_config), frozen.

    What was derived from the data is logged, or appended to ``notes`` for a caller that
    sets up its logger only once it has the config.
    """
    if not os.path.isfile(config_file):
        raise GrapeInputError(f"{config_file}: config file not found")
    cfg = get_cfg()
    add_grape_config(cfg)
    try:
        cfg.merge_from_file(config_file)
        cfg.merge_from_list(list(opts or []))
    except (KeyError, ValueError, AssertionError) as e:
        raise GrapeInputError(f"{config_file}: bad config ({e})") from None
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise GrapeInputError(
            "MODEL.DEVICE is cuda but no CUDA device is available here; to run on the CPU, "
            "add MODEL.DEVICE cpu to the command (after --opts for visualize.py)"
        )
    note = follow_training_categories(cfg)
    if note and notes is not None:
        notes.append(note)
    elif note:
        logger.info(note)
    follow_pointrend_config(cfg)
    check_depth_config(cfg)
    check_copy_paste_config(cfg)
    cfg.freeze()
    return cfg


#: (path, size, mtime) of images found undecodable, so that periodic evaluation warns once.
_UNDECODABLE_SEEN: set[tuple[str, int, int]] = set()


def drop_undecodable_images(
    dataset_dicts: list[dict], dataset_names, depth: bool = False
) -> list[dict]:
    """The records whose image (and, with ``depth``, depth image) decodes (cheap check); each
    other one is left out with one warning naming the file (once per file per process, not
    per evaluation).

    For evaluation lists: Detectron2's MapDataset would silently score another image in the
    place of one the mapper cannot read (RGBDMapper skips a record whose depth file does not
    decode, too), and a worker would die on it without the mapper.
    """
    kept = []
    for record in dataset_dicts:
        path = record["file_name"]
        try:
            read_image_size(path, max_pixels=None, decode=True)
            if depth:
                path = record["depth_file_name"]
                read_depth(path)  # a truncated PNG passes check_depth_files' header check
        except (UndecodableImageError, UndecodableDepthError) as e:
            stat = os.stat(path) if os.path.exists(path) else None
            key = (os.path.abspath(path), stat.st_size if stat else -1,
                   stat.st_mtime_ns if stat else -1)
            if key not in _UNDECODABLE_SEEN:
                _UNDECODABLE_SEEN.add(key)
                which = "" if path == record["file_name"] else f" (of {record['file_name']})"
                logger.warning("%s%s; left out of the evaluation of %s", e, which,
                               list(dataset_names))
            continue
        kept.append(record)
    if dataset_dicts and not kept:
        raise GrapeInputError(
            f"datasets {list(dataset_names)}: none of their {len(dataset_dicts)} images "
            "can be decoded"
        )
    return kept


def check_image_files(dataset_dicts: list[dict], dataset_names) -> None:
    """Name the first missing image before a data-loader worker dies on it mid-training."""
    for record in dataset_dicts:
        if not os.path.isfile(record["file_name"]):
            raise GrapeInputError(
                f"{record['file_name']}: image not found (listed in dataset {dataset_names})"
            )


def model_class_count(cfg: CfgNode, thing_classes) -> tuple[str, int]:
    """The config key of the model's class count and the value ``thing_classes`` need:
    K boxes/masks classes, or background + K (or + 1 merged foreground) semantic classes."""
    if is_semantic_model(cfg):
        stuff = stuff_classes_for(thing_classes, cfg.DATASETS.SEMANTIC_MERGE_CLASSES)
        return "MODEL.SEM_SEG_HEAD.NUM_CLASSES", len(stuff)
    return "MODEL.ROI_HEADS.NUM_CLASSES", len(thing_classes)


def config_value(cfg: CfgNode, key: str):
    return functools.reduce(getattr, key.split("."), cfg)


def follow_training_categories(cfg: CfgNode) -> str | None:
    """Set the model's class count (unfrozen ``cfg``) from the categories of its training
    datasets, so own data with any categories trains without editing the YAML.

    Returns the line to log when the config said otherwise. Training sets with different
    category lists are refused; unknown names and missing files are left to check_config.
    """
    if cfg.MODEL.META_ARCHITECTURE not in META_ARCH_REGISTRY:
        return None
    names = list(cfg.DATASETS.TRAIN)
    classes = check_same_categories(names, lambda name: dataset_thing_classes(cfg, name))
    if classes is None:
        return None
    key, wanted = model_class_count(cfg, classes)
    configured = config_value(cfg, key)
    if configured == wanted:
        return None
    cfg.merge_from_list([key, str(wanted)])
    return (f"{key} set to {wanted} (config said {configured}) from the {len(classes)} "
            f"categories {classes} of the training data {names}")


def check_categories(cfg: CfgNode, names) -> None:
    """Refuse, in one line, datasets of different categories used together, or categories
    the model's class count does not fit (evaluating without the training data at hand)."""
    registered = set(DatasetCatalog.list())

    def classes_of(name: str):
        return MetadataCatalog.get(name).get("thing_classes") if name in registered else None

    known = [name for name in names if classes_of(name) is not None]
    classes = check_same_categories(known, classes_of)
    if classes is None:
        return
    key, wanted = model_class_count(cfg, classes)
    if config_value(cfg, key) != wanted:
        raise GrapeInputError(
            f"{key} is {config_value(cfg, key)} but datasets {known} have "
            f"{len(classes)} categories {classes}, which need {wanted}"
        )


def model_dataset_names(cfg: CfgNode, names) -> list[str]:
    """The datasets a model reads: the instance datasets, or their semantic views."""
    check_datasets_exist(names)
    if not is_semantic_model(cfg):
        return list(names)
    return [semantic_view_for_config(cfg, name) for name in names]


def semantic_view_sources(cfg: CfgNode, names) -> list[str]:
    """Which of ``names`` a model needs the semantic view of: all of them for a semantic
    model, the test sets for a mask model (merged-mask metrics), none for a box model."""
    if is_semantic_model(cfg):
        return list(names)
    return [n for n in names if n in cfg.DATASETS.TEST] if cfg.MODEL.MASK_ON else []


def load_dataset_dicts(names, is_train: bool, cfg: CfgNode) -> list[dict]:
    """Load (and, for training, filter) dataset records, checking that every image exists.

    Evaluation lists also leave out images that do not decode (drop_undecodable_images);
    training skips those in its mapper instead, as it meets them (SkipUndecodableMapper).

    Semantic models get the semantic view's records (``sem_seg_file_name``, no instances),
    which are never filtered: an image without bunches is all background, still a lesson.
    """
    semantic = is_semantic_model(cfg)
    names = model_dataset_names(cfg, names)
    dicts = get_detection_dataset_dicts(
        names,
        filter_empty=is_train and not semantic and cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        min_keypoints=0,
        proposal_files=None,
    )
    check_image_files(dicts, names)
    if cfg.INPUT.DEPTH.ENABLED:
        check_depth_files(dicts, names)
    if not is_train:
        dicts = drop_undecodable_images(dicts, names, depth=cfg.INPUT.DEPTH.ENABLED)
    return dicts


