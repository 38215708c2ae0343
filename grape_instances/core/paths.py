"""Where the synthetic dataset's files lie under its root.

One definition for the generator that writes them (``export.generate_dataset``), the dataset
registration that reads them (``data.datasets.register_synthetic``) and the drivers that
check for them (``experiments.demo``). Standard-library only, so readers import nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The splits Detectron2 trains and tests on (``grapes_synth_train`` / ``grapes_synth_val``).
SPLITS = ("train", "val")


def images_dir(root: str | os.PathLike, split: str) -> Path:
    return Path(root) / "images" / split


def coco_json(root: str | os.PathLike, split: str) -> Path:
    return Path(root) / "annotations" / f"instances_{split}.json"


def via_json(root: str | os.PathLike, split: str) -> Path:
    return Path(root) / "via" / f"via_project_{split}.json"


def labelme_dir(root: str | os.PathLike, split: str) -> Path:
    return Path(root) / "labelme" / split


def has_coco_files(root: str | os.PathLike, splits: tuple[str, ...] = SPLITS) -> bool:
    """True when every split's COCO JSON is there (the generator writes it last)."""
    return all(coco_json(root, split).is_file() for split in splits)
