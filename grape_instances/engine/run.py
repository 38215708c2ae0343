"""The one guarded way into a training: every training, from ``tools/train_net.py`` or from a
driver in ``experiments/``, takes the output folder's lock and passes the pre-run checks here.

``run_training(cfg, resume)`` trains in this process and returns the trainer (its model is
the trained one); ``launch_from_args`` is train_net's path, the same guard and then
Detectron2's ``launch`` (one or several processes, training or ``--eval-only``). A config is
built whole (``data.build.build_config``) and then checked; nothing patches it afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from detectron2.config import CfgNode
from detectron2.engine import launch

from ..checkpoint import FINAL_CHECKPOINT, checkpoint_loads, lock_output_dir
from .checks import check_config
from .trainer import Trainer, train_or_evaluate


def guard_run(cfg: CfgNode, eval_only: bool = False, resume: bool = False) -> None:
    """Hold ``OUTPUT_DIR``'s lock (until this process exits; a second run into the folder is
    refused in one line) and run the pre-run checks (``engine.checks.check_config``)."""
    lock_output_dir(cfg.OUTPUT_DIR)
    check_config(cfg, eval_only, resume)


def run_training(cfg: CfgNode, resume: bool = False, trainer_cls: type[Trainer] = Trainer
                 ) -> Trainer:
    """Train ``cfg`` in this process behind :func:`guard_run`; return the trainer.

    With ``resume`` a run is continued from what ``OUTPUT_DIR`` holds, and a finished one
    (its ``model_final.pth`` loads) is not trained again: the trainer's model then holds the
    final weights. Without it the folder's run starts over.
    """
    guard_run(cfg, eval_only=False, resume=resume)
    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=resume)
    finished = (resume and trainer.start_iter >= trainer.max_iter
                and checkpoint_loads(os.path.join(cfg.OUTPUT_DIR, FINAL_CHECKPOINT)))
    if not finished:
        trainer.train()
    return trainer


def launch_from_args(args, cfg: CfgNode, notes: Sequence[str] = ()):
    """``tools/train_net.py``: :func:`guard_run` in the launching process, then Detectron2's
    ``launch`` of ``train_or_evaluate`` on the config built and checked here (spawned worker
    processes get it as it is)."""
    guard_run(cfg, eval_only=args.eval_only, resume=args.resume)
    return launch(
        train_or_evaluate,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args, cfg, list(notes)),
    )
