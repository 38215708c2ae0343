"""Training: the one guarded path (``run_training``, ``launch_from_args``), the pre-run checks
and the Trainer (Detectron2's DefaultTrainer with the project's data, evaluators and DDP)."""

from .run import guard_run, launch_from_args, run_training

__all__ = ["guard_run", "launch_from_args", "run_training"]
