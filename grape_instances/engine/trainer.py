"""The Trainer: Detectron2's DefaultTrainer with grape datasets, mappers and evaluators, and
what one process of a training or evaluation runs (``train_or_evaluate``)."""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Sequence

import torch
from detectron2.config import CfgNode
from detectron2.data import (
    DatasetCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, create_ddp_model
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint import (
    FINAL_CHECKPOINT,
    GrapeCheckpointer,
    checkpoint_loads,
    verify_final_checkpoint,
)
from ..core.config import is_semantic_model
from ..data.build import build_config, load_dataset_dicts
from ..data.datasets import register_from_config
from ..data.mappers import build_grape_mapper
from ..data.scaled_cache import training_records_for_config
from ..data.semantic import semantic_view_for_config
from ..evaluation import (
    CountEvaluator,
    FalsePositiveKindsEvaluator,
    InstanceF1Evaluator,
    MergedInstancesEvaluator,
    SemanticEvaluator,
)
from ..inference.wrap import inference_model
from .checks import run_record
from .cpu_amp import CPUAutocastTrainer

logger = logging.getLogger(__name__)


def compiled_ops_available() -> bool:
    """True when Detectron2's compiled ``_C`` extension loads (it cannot on Python >= 3.11)."""
    try:
        from detectron2 import _C  # noqa: F401
    except ImportError:
        return False
    return True


def step_trainer_class(cfg: CfgNode) -> type[SimpleTrainer]:
    """The loop that runs each iteration: Detectron2's float16 ``AMPTrainer`` on CUDA with
    ``SOLVER.AMP.ENABLED``, the project's bfloat16 one on CPU, else ``SimpleTrainer``."""
    if not cfg.SOLVER.AMP.ENABLED:
        return SimpleTrainer
    return CPUAutocastTrainer if cfg.MODEL.DEVICE == "cpu" else AMPTrainer


class LoadedImagesCOCOEvaluator(COCOEvaluator):
    """COCOEvaluator scoring only the images that were predicted, like the other evaluators:
    an undecodable image left out of the evaluation must not count its bunches as misses.
    Annotations without ``iscrowd`` count as 0, as validate, Detectron2's loader and the
    other evaluators read them (COCOeval itself raises KeyError on them)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for ann in self._coco_api.dataset.get("annotations", []):
            ann.setdefault("iscrowd", 0)  # the index holds the same dicts

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
        self._trainer = step_trainer_class(cfg)(model, data_loader, optimizer)
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
    def build_model(cls, cfg: CfgNode):
        """Detectron2's model, its ~250-line description written to ``OUTPUT_DIR/model.txt``
        instead of the terminal; one line says what it is."""
        from detectron2.modeling import build_model

        model = build_model(cfg)
        params = sum(p.numel() for p in model.parameters())
        path = os.path.join(cfg.OUTPUT_DIR, "model.txt") if cfg.OUTPUT_DIR else None
        if path and comm.is_main_process():
            os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
            with open(path, "w") as f:
                f.write(f"{model}\n")
        logger.info("Model: %s, %.2f M parameters%s", type(model).__name__, params / 1e6,
                    f" (described in {path})" if path else "")
        return model

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        dicts = load_dataset_dicts(cfg.DATASETS.TRAIN, True, cfg)
        if not is_semantic_model(cfg):
            dicts = training_records_for_config(cfg, dicts)
        return build_detection_train_loader(
            cfg, dataset=dicts, mapper=build_grape_mapper(cfg, is_train=True, records=dicts)
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
        """DefaultTrainer.test on the config's inference model (``inference.wrap``: tiles for
        instance models when ``TEST.TILE_SIZE`` > 0, ``TEST.CONTAINMENT_THRESH``'s rule), so
        that the scores measure what prediction delivers."""
        return super().test(cfg, inference_model(cfg, model), evaluators)

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None):
        """Semantic models: mIoU / Dice. Instance models: COCO AP, the same semantic metrics on
        their merged masks (``TEST.SEMANTIC_SCORE_THRESH``), the bunch-count error
        (``TEST.COUNT_SCORE_THRESH``) and, with masks, the instance P / R / F1 of Santos et al.
        2020 (``TEST.F1_*``) with its false positives at mask IoU 0.5 by kind, so that every
        model gets comparable numbers."""
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
            evaluators.append(FalsePositiveKindsEvaluator(dataset_name, cfg.TEST.F1_SCORE_THRESH))
        return DatasetEvaluators(evaluators)


def quiet_default_setup(cfg: CfgNode, args) -> None:
    """Detectron2's ``default_setup`` (loggers, ``OUTPUT_DIR/config.yaml``, seeds, cudnn)
    without printing the environment, the config file and the full config (about 1,100
    coloured lines, even for ``--eval-only`` on four images): they go to
    ``OUTPUT_DIR/config.yaml`` and ``OUTPUT_DIR/environment.txt``, named in one line."""
    from detectron2.utils.collect_env import collect_env_info
    from detectron2.utils.env import seed_all_rng

    output_dir = cfg.OUTPUT_DIR
    rank = comm.get_rank()
    if comm.is_main_process() and output_dir:
        os.makedirs(output_dir, exist_ok=True)
    setup_logger(output_dir, distributed_rank=rank, name="fvcore")
    d2_logger = setup_logger(output_dir, distributed_rank=rank)
    d2_logger.info("Rank of current process: %d. World size: %d", rank, comm.get_world_size())
    d2_logger.info("Command line arguments: %s", args)
    if comm.is_main_process() and output_dir:
        config_path = os.path.join(output_dir, "config.yaml")
        env_path = os.path.join(output_dir, "environment.txt")
        with open(config_path, "w") as f:
            f.write(cfg.dump())
        with open(env_path, "w") as f:
            f.write(collect_env_info() + "\n")
        d2_logger.info("Full config saved to %s, environment to %s", config_path, env_path)
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + rank)
    if not getattr(args, "eval_only", False):
        torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK


def setup(args, cfg: CfgNode | None = None, notes: Sequence[str] = ()) -> CfgNode:
    """Detectron2's default setup (logging, seeds, config dump) for ``cfg``, the config the
    launching process built and checked (built here from ``args`` when none is given).

    Datasets are registered only where they are not yet: a spawned worker process starts
    with empty catalogs; the launching process (one-process runs) registered them already.
    """
    notes = list(notes)
    if cfg is None:
        cfg = build_config(args.config_file, args.opts, notes)
    quiet_default_setup(cfg, args)
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
