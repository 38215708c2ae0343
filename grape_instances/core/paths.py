"""Default dataset folders, where a generated dataset's files lie under its root, and the
one "dataset is ready" rule.

One definition for the generators that write them (``synthetic.export``), the dataset
registration that reads them (``data.datasets.register_synthetic``), the drivers and the
tools. Every generator writes the stamp ``<root>/.complete`` last, recording what it made
(kind, images per split, frame size, seed; and the seconds it took); a dataset is ready for a
request when its stamp records exactly that request (:func:`dataset_ready`), so a driver
asking for 100 images never silently trains on a 300-image set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from .fileio import read_json, write_json_atomic

# Default folders (relative to the repository, as the Makefile and the configs name them).
SYNTH_ROOT = "datasets/grapes_synth"  # tools/make_synthetic.py, make synth, Base-Grapes.yaml
SYNTH_DEMO_ROOT = "datasets/grapes_synth_demo"  # the CPU demo configs (make demo, compare)
RGBD_ROOT = "datasets/grapes_rgbd"  # --rgbd-scenes, make synth-rgbd, make rgbd-ablation
D4_ROOT = "datasets/grapes_d4"  # --dataset4, make weigh
VINEYARD_ROOT = "datasets/vineyard"  # --vineyard, make pretrain-ablation
EDGES_SAMPLE_IMAGES = "datasets/edges_sample/images"  # --edges-sample, make auto-annotate
REAL_DATA_DIR = "datasets/real"  # make real: the converted and split WGISD JSON files
SEMANTIC_CACHE_ROOT = "datasets/.semantic_cache"  # semantic_view's default without a config
WGISD_ROOT = "../shared/real-data/wgisd-train"  # the shared WGISD photos (make real)

#: The stamp every generator writes last (also the Makefile's target for the dataset).
STAMP = ".complete"

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


def dataset_stamp(kind: str, splits: Mapping[str, int], seed: int,
                  size: Sequence[int]) -> dict:
    """What identifies a generated dataset: its kind, images per split, (width, height), seed."""
    return {"kind": kind, "splits": {k: int(v) for k, v in sorted(splits.items())},
            "size": [int(size[0]), int(size[1])], "seed": int(seed)}


def describe_stamp(stamp: Mapping) -> str:
    """``synthetic: 300 train / 50 val images, 256x256, seed 0``."""
    splits = " / ".join(f"{n} {split}" for split, n in stamp.get("splits", {}).items())
    w, h = (stamp.get("size") or ["?", "?"])[:2]
    return f"{stamp.get('kind')}: {splits} images, {w}x{h}, seed {stamp.get('seed')}"


def read_stamp(root: str | os.PathLike) -> dict | None:
    """The stamp of the dataset under ``root``; None when there is none (not generated, not
    finished, or written by an older version as an empty file)."""
    path = Path(root) / STAMP
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        stamp = read_json(path)
    except Exception:  # noqa: BLE001  (an unreadable stamp is no stamp)
        return None
    return stamp if isinstance(stamp, dict) else None


def write_stamp(root: str | os.PathLike, stamp: Mapping, seconds: float) -> None:
    """Mark the dataset under ``root`` complete (atomically, after everything else)."""
    write_json_atomic(Path(root) / STAMP, {**stamp, "seconds": round(float(seconds), 3)},
                      indent=2)


def forget_stamp(root: str | os.PathLike) -> None:
    """Before (re)generating: a dataset being written is not ready."""
    (Path(root) / STAMP).unlink(missing_ok=True)


def dataset_ready(root: str | os.PathLike, stamp: Mapping) -> bool:
    """True when ``root`` holds a finished dataset of exactly ``stamp`` (kind, splits, size,
    seed), and its COCO files are there."""
    found = read_stamp(root)
    if found is None or {k: found.get(k) for k in stamp} != dict(stamp):
        return False
    return has_coco_files(root, tuple(stamp["splits"])) if stamp.get("kind") != "dataset4" \
        else (Path(root) / "annotations" / "instances.json").is_file()
