"""grape_instances: one mask per grape bunch, built on Detectron2."""

__version__ = "0.1.0"
