"""The pre-run checks of every training and evaluation (``check_config``) and what makes a
checkpoint part of a run (``run_record``)."""

from __future__ import annotations

import os

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog
from detectron2.modeling import META_ARCH_REGISTRY

from ..checkpoint import ensure_weights_available, find_resume_checkpoint
from ..convert.validate import check_registered_datasets
from ..core.config import is_semantic_model
from ..core.errors import GrapeInputError
from ..data.build import check_categories, config_value, semantic_view_sources
from ..data.datasets import check_datasets_exist, config_json_file, register_from_config
from ..data.semantic import semantic_view_for_config


def check_meta_architecture(cfg: CfgNode) -> None:
    """Name an unregistered meta-architecture in one line, not with a KeyError traceback."""
    if cfg.MODEL.META_ARCHITECTURE not in META_ARCH_REGISTRY:
        known = ", ".join(sorted(name for name, _ in META_ARCH_REGISTRY))
        raise GrapeInputError(
            f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE!r} is not registered "
            f"(known: {known})"
        )


def run_record(cfg: CfgNode) -> dict:
    """What makes a checkpoint part of the same run as ``cfg``, recorded in every checkpoint
    and compared on ``--resume``: the model (meta-architecture, backbone, ResNet depth, masks,
    the depth input channel, class count: what the weights mean) and the training data
    (dataset names and the real paths of their JSON files: what the weights learned from).
    The depth channel is in it because an RGB checkpoint loads into a 4-channel stem (its
    filters widened), so a shape check alone would let an RGB run resume as an RGB-D one.

    Everything else may change on resume, as Detectron2 intends: the solver (MAX_ITER, LR,
    steps, checkpoint period), input sizes, test settings, device, workers, OUTPUT_DIR. Other
    shape-changing keys (widths, norms) are caught when the weights load, as tensors that do
    not match (GrapeCheckpointer); a JSON file edited in place still counts as the same data.
    """
    semantic = cfg.MODEL.META_ARCHITECTURE in META_ARCH_REGISTRY and is_semantic_model(cfg)
    class_key = "MODEL.SEM_SEG_HEAD.NUM_CLASSES" if semantic else "MODEL.ROI_HEADS.NUM_CLASSES"
    names = list(cfg.DATASETS.TRAIN)
    jsons = [config_json_file(cfg, name) for name in names]
    return {
        "MODEL.META_ARCHITECTURE": cfg.MODEL.META_ARCHITECTURE,
        "MODEL.BACKBONE.NAME": cfg.MODEL.BACKBONE.NAME,
        "MODEL.RESNETS.DEPTH": int(cfg.MODEL.RESNETS.DEPTH),
        "MODEL.MASK_ON": bool(cfg.MODEL.MASK_ON),
        "INPUT.DEPTH.ENABLED": bool(cfg.INPUT.DEPTH.ENABLED),
        class_key: int(config_value(cfg, class_key)),
        "DATASETS.TRAIN": names,
        "training JSON": [os.path.realpath(j) if j else None for j in jsons],
    }


def check_config(cfg: CfgNode, eval_only: bool, resume: bool = False) -> None:
    """Register datasets and fail early (in the launching process) on names or files missing,
    on data that would crash Detectron2 or train on wrong pixels (``convert.py validate``'s
    checks, convert.validate.check_registered_datasets), and on weights that cannot be had
    (downloaded here, once, into Detectron2's cache).

    With ``resume``, the checkpoint to continue from must load and (training) come from the
    same run (find_resume_checkpoint); after a fallback ``last_checkpoint`` is made to name
    it, so the worker processes resume from it without warning again. Call it holding the
    OUTPUT_DIR lock (checkpoint.lock_output_dir), since it may rewrite ``last_checkpoint``.

    Also derives the semantic label maps here, once, before worker processes start.
    """
    check_meta_architecture(cfg)
    register_from_config(cfg)
    names = list(cfg.DATASETS.TEST) if eval_only else list(cfg.DATASETS.TRAIN)
    names += [] if eval_only else list(cfg.DATASETS.TEST)
    check_datasets_exist(names)
    check_categories(cfg, list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
    # validate's checks, before anything is rasterised (the semantic views below)
    check_registered_datasets(names, masks=cfg.MODEL.MASK_ON or is_semantic_model(cfg),
                              train=[] if eval_only else list(cfg.DATASETS.TRAIN))
    for name in semantic_view_sources(cfg, names):
        DatasetCatalog.get(semantic_view_for_config(cfg, name))
    resuming = resume and find_resume_checkpoint(
        cfg.OUTPUT_DIR, None if eval_only else run_record(cfg), retag=True
    )
    if not resuming:
        ensure_weights_available(cfg.MODEL.WEIGHTS)


