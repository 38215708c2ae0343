"""The training engine: Detectron2's DefaultTrainer with grape datasets, mappers and evaluators."""

from __future__ import annotations

import functools
import logging
import os
import weakref
from collections.abc import Sequence

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import (
    DatasetCatalog,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, create_ddp_model
from detectron2.engine.defaults import default_setup
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from .checkpoint import (
    FINAL_CHECKPOINT,
    GrapeCheckpointer,
    checkpoint_loads,
    ensure_weights_available,
    find_resume_checkpoint,
    verify_final_checkpoint,
)
from .config import add_grape_config
from .convert.images import UndecodableImageError, read_image_size
from .convert.validate import check_registered_datasets
from .data.datasets import (
    check_datasets_exist,
    check_same_categories,
    config_json_file,
    dataset_thing_classes,
    register_from_config,
)
from .data.depth import UndecodableDepthError, check_depth_config, check_depth_files, read_depth
from .data.mappers import build_grape_mapper
from .data.semantic import semantic_view_for_config, stuff_classes_for
from .errors import GrapeInputError
from .evaluation import (
    CountEvaluator,
    InstanceF1Evaluator,
    MergedInstancesEvaluator,
    SemanticEvaluator,
)
from .modeling import is_semantic_model
from .tiling import TiledModel

logger = logging.getLogger(__name__)


def compiled_ops_available() -> bool:
    """True when Detectron2's compiled ``_C`` extension loads (it cannot on Python >= 3.11)."""
    try:
        from detectron2 import _C  # noqa: F401
    except ImportError:
        return False
    return True


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


def check_meta_architecture(cfg: CfgNode) -> None:
    """Name an unregistered meta-architecture in one line, not with a KeyError traceback."""
    if cfg.MODEL.META_ARCHITECTURE not in META_ARCH_REGISTRY:
        known = ", ".join(sorted(name for name, _ in META_ARCH_REGISTRY))
        raise GrapeInputError(
            f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE!r} is not registered "
            f"(known: {known})"
        )


def model_class_count(cfg: CfgNode, thing_classes) -> tuple[str, int]:
    """The config key of the model's class count and the value ``thing_classes`` need:
    K boxes/masks classes, or background + K (or + 1 merged foreground) semantic classes."""
    if is_semantic_model(cfg):
        stuff = stuff_classes_for(thing_classes, cfg.DATASETS.SEMANTIC_MERGE_CLASSES)
        return "MODEL.SEM_SEG_HEAD.NUM_CLASSES", len(stuff)
    return "MODEL.ROI_HEADS.NUM_CLASSES", len(thing_classes)


def _config_value(cfg: CfgNode, key: str):
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
    configured = _config_value(cfg, key)
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
    if _config_value(cfg, key) != wanted:
        raise GrapeInputError(
            f"{key} is {_config_value(cfg, key)} but datasets {known} have "
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


class LoadedImagesCOCOEvaluator(COCOEvaluator):
    """COCOEvaluator scoring only the images that were predicted, like the other evaluators:
    an undecodable image left out of the evaluation must not count its bunches as misses."""

    def _eval_predictions(self, predictions, img_ids=None):
        if img_ids is None:  # Detectron2's default, the whole JSON
            img_ids = sorted({p["image_id"] for p in predictions})
        super()._eval_predictions(predictions, img_ids=img_ids)


class Trainer(DefaultTrainer):
    """DefaultTrainer with grape mappers, evaluators and CPU-capable DDP.

    Instance models (Mask R-CNN) read the COCO instance datasets; semantic models read their
    semantic views through the same mapper and augmentations (Detectron2's DatasetMapper
    loads and transforms ``sem_seg_file_name`` with the image).
    """

    def __init__(self, cfg: CfgNode) -> None:
        # DefaultTrainer.__init__ wraps the model with create_ddp_model(), which passes
        # device_ids=[local_rank]; PyTorch's DDP refuses device_ids for CPU modules, so the
        # same construction is repeated here with device_ids=None on CPU.
        super(DefaultTrainer, self).__init__()
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        ddp_kwargs = {"broadcast_buffers": False}
        if next(model.parameters()).device.type == "cpu":
            ddp_kwargs["device_ids"] = None
        model = create_ddp_model(model, **ddp_kwargs)
        trainer_cls = AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
        self._trainer = trainer_cls(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = GrapeCheckpointer(
            model, cfg.OUTPUT_DIR, run_record=run_record(cfg), trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume: bool = True) -> None:
        """DefaultTrainer.resume_or_load through GrapeCheckpointer (falls back past an
        unreadable newest checkpoint, refuses another run's). Without ``resume`` this is a new
        run: the folder's ``last_checkpoint`` goes, so a ``--resume`` after this run is killed
        before its first checkpoint starts it again instead of finishing the previous run."""
        if not resume:
            self.checkpointer.forget_last_checkpoint()
        super().resume_or_load(resume=resume)

    def train(self):
        """DefaultTrainer.train, then (main process) check that ``model_final.pth`` loads:
        a run never ends as a success without it.

        A run resumed from the last iteration's ``model_*.pth`` (because ``model_final.pth``
        did not load) has nothing left to train, so the final checkpoint is written from it."""
        results = super().train()
        if comm.is_main_process():
            final = os.path.join(self.cfg.OUTPUT_DIR, FINAL_CHECKPOINT)
            if self.start_iter == self.max_iter and not checkpoint_loads(final):
                self.iter = self.max_iter - 1  # the state is that of the last iteration
                self.checkpointer.save("model_final", iteration=self.iter)
            verify_final_checkpoint(self.cfg.OUTPUT_DIR)
        return results

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        dicts = load_dataset_dicts(cfg.DATASETS.TRAIN, True, cfg)
        return build_detection_train_loader(
            cfg, dataset=dicts, mapper=build_grape_mapper(cfg, is_train=True)
        )

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        dicts = load_dataset_dicts([dataset_name], False, cfg)
        return build_detection_test_loader(
            dataset=dicts,
            mapper=build_grape_mapper(cfg, is_train=False),
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )

    @classmethod
    def test(cls, cfg: CfgNode, model, evaluators=None):
        """DefaultTrainer.test, on tiles for instance models when ``TEST.TILE_SIZE`` > 0, so
        that the scores measure what tiled prediction delivers."""
        if cfg.TEST.TILE_SIZE > 0 and not is_semantic_model(cfg):
            model = TiledModel.from_config(cfg, model)
        return super().test(cfg, model, evaluators)

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None):
        """Semantic models: mIoU / Dice. Instance models: COCO AP, the same semantic metrics on
        their merged masks (``TEST.SEMANTIC_SCORE_THRESH``), the bunch-count error
        (``TEST.COUNT_SCORE_THRESH``) and, with masks, the instance P / R / F1 of Santos et al.
        2020 (``TEST.F1_*``), so that every model gets comparable numbers."""
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        if is_semantic_model(cfg):
            return SemanticEvaluator(
                semantic_view_for_config(cfg, dataset_name), output_dir=output_folder
            )
        evaluators = [
            LoadedImagesCOCOEvaluator(
                dataset_name,
                output_dir=output_folder,
                use_fast_impl=compiled_ops_available(),
            ),
            CountEvaluator(dataset_name, cfg.TEST.COUNT_SCORE_THRESH),
        ]
        if cfg.MODEL.MASK_ON:
            evaluators.append(MergedInstancesEvaluator(
                semantic_view_for_config(cfg, dataset_name), cfg.TEST.SEMANTIC_SCORE_THRESH,
                output_dir=output_folder,
            ))
            evaluators.append(InstanceF1Evaluator(
                dataset_name, cfg.TEST.F1_SCORE_THRESH, tuple(cfg.TEST.F1_IOU_THRESHOLDS)
            ))
        return DatasetEvaluators(evaluators)


def build_config(
    config_file: str, opts: list[str] | None = None, notes: list[str] | None = None
) -> CfgNode:
    """get_cfg() + project keys + YAML + command-line overrides, the class count following
    the training data (see follow_training_categories), frozen.

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
    check_depth_config(cfg)
    cfg.freeze()
    return cfg


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
        class_key: int(_config_value(cfg, class_key)),
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


def setup(args, cfg: CfgNode | None = None, notes: Sequence[str] = ()) -> CfgNode:
    """Detectron2's default setup (logging, seeds, config dump) for ``cfg``, the config the
    launching process built and checked (built here from ``args`` when none is given).

    Datasets are registered only where they are not yet: a spawned worker process starts
    with empty catalogs; the launching process (one-process runs) registered them already.
    """
    notes = list(notes)
    if cfg is None:
        cfg = build_config(args.config_file, args.opts, notes)
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="grape_instances")
    for note in notes:
        logger.info(note)
    registered = set(DatasetCatalog.list())
    if any(name not in registered for name in (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST)):
        register_from_config(cfg)
    return cfg


def train_or_evaluate(args, cfg: CfgNode | None = None, notes: Sequence[str] = ()):
    """What one process of ``tools/train_net.py`` runs (under ``launch``), on the config the
    launching process built (and the lines it derived from the data, logged here)."""
    try:
        results = _train_or_evaluate(args, cfg, notes)
        comm.synchronize()  # every rank is done with its collectives before any group goes
        return results
    finally:
        _leave_process_group()


def _leave_process_group() -> None:
    """Destroy the process groups of a multi-process run before the interpreter exits: left to
    interpreter teardown, gloo's worker threads sometimes abort a process that finished
    (SIGABRT, "terminate called without an active exception")."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _train_or_evaluate(args, cfg: CfgNode | None, notes: Sequence[str]):
    cfg = setup(args, cfg, notes)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        GrapeCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()
