"""Writing the synthetic datasets to disk: images, depth, COCO, VIA 2 and labelme files.

Why apart from the renderers (:mod:`.render`, :mod:`.rgbd`, :mod:`.dataset4`): those only
compute scenes in memory (images, masks, depth, truth), so tests, benchmarks and the edge
sample can render without touching files, and every file format, folder layout and atomic
write lives here, once. Four datasets:

* :func:`generate_dataset`: RGB images with COCO, VIA 2 and labelme annotations, in the
  layout of :mod:`grape_instances.core.paths` (what Detectron2 registers as ``grapes_synth_*``);
* :func:`generate_rgbd_scenes`: multi-bunch RGB-D scenes (GrapesNet Dataset 3 style);
* :func:`generate_dataset4`: the twin of GrapesNet Dataset 4 (one weighed bunch per image);
* :func:`generate_vineyard_dataset`: photo-like vineyard rows to pretrain the real recipe.

Every image is rendered from its own generator seeded by ``(seed, split, index)`` and every
COCO file carries a fixed creation date, so the same seed gives the same bytes.

RGB-D files (shared with :mod:`grape_instances.convert.grapesnet` and the measuring tools):
the root is the image root; RGB in ``images/``, depth as 16-bit PNGs in millimetres in
``depth/`` with the same stem; COCO image entries carry ``file_name`` and ``depth_file``
relative to the root; ``camera.json`` holds ``fx, fy, cx, cy`` (pixels).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..convert.coco import CocoBuilder
from ..convert.labelme import labelme_record, labelme_shape
from ..convert.via import via2_dropdown, via2_image, via2_polygon_region, via2_project, via2_text
from ..core import paths as layout
from ..core.errors import GrapeInputError
from ..core.fileio import atomic_open, read_json, replacing_folder, write_json_atomic
from ..core.polygons import mask_to_polygons
from .dataset4 import render_dataset4_bunch
from .render import VARIETY_COLORS, SynthConfig, image_rng, one_bunch_config, render_scene
from .rgbd import RgbdConfig, RgbdScene, render_rgbd_scene, scene_config
from .vineyard import VineyardConfig, render_vineyard_scene

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- shared


def _check_root(root: Path, overwrite: bool) -> None:
    """Refuse to mix a new dataset into a folder holding other files, unless asked to."""
    if root.exists() and not root.is_dir():
        raise GrapeInputError(f"{root}: exists and is not a folder")
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        raise GrapeInputError(f"{root}: folder is not empty (pass --overwrite to replace the "
                              "synthetic dataset in it)")


def _check_splits(splits: dict[str, int], what: str) -> None:
    for split, count in splits.items():
        if not split or "/" in split or int(count) < 0:
            raise GrapeInputError(f"{what} splits: bad split {split!r} with {count} images")


def _start(root: str | os.PathLike, splits: dict[str, int] | None, default: dict[str, int],
           what: str, overwrite: bool) -> tuple[Path, dict[str, int]]:
    """The checked root and splits (``default`` when none are given) of a split dataset; its
    stamp is removed (a dataset being written is not ready)."""
    splits = dict(default) if splits is None else dict(splits)
    _check_splits(splits, what)
    root = Path(root)
    _check_root(root, overwrite)
    layout.forget_stamp(root)
    return root, splits


def ensure_dataset(root: str | os.PathLike, stamp: dict, generate: Callable[[], object],
                   other: str = "refuse") -> float | None:
    """The one "dataset is ready" rule of the drivers. ``root`` is reused when its stamp
    records exactly ``stamp`` (core.paths.dataset_ready) and generated (``generate()``) when
    it is empty or missing. When it holds anything else, ``other`` decides: ``"replace"``
    generates it again with a warning (a driver's own folder, e.g. the demo's), ``"refuse"``
    stops in one line naming both (it may be another experiment's), ``"use"`` takes a
    finished dataset of the same kind as it is, saying what it holds (a comparison trains on
    whatever synthetic set its configs name). Returns the seconds the generation took (the
    stamp's; None for an unstamped dataset used as it is)."""
    if other not in ("replace", "refuse", "use"):
        raise ValueError(f"other must be replace, refuse or use, got {other!r}")
    root = Path(root)
    found = layout.read_stamp(root)
    if layout.dataset_ready(root, stamp):
        logger.info("reusing %s in %s", layout.describe_stamp(stamp), root)
        return float(found["seconds"])
    held = layout.describe_stamp(found) if found else "an unfinished or unstamped dataset"
    if root.is_dir() and any(root.iterdir()):
        if other == "use" and (found or {}).get("kind", stamp["kind"]) == stamp["kind"] and \
                layout.has_coco_files(root, tuple(stamp["splits"])):
            logger.info("using %s in %s as it is", held, root)
            return float(found["seconds"]) if found else None
        if other != "replace":
            raise GrapeInputError(f"{root}: holds {held}, not {layout.describe_stamp(stamp)}; "
                                  "pass another folder (or delete this one)")
        logger.warning("%s: holds %s; generating %s instead", root, held,
                       layout.describe_stamp(stamp))
    generate()
    if not layout.dataset_ready(root, stamp):  # the generator was asked for something else
        raise RuntimeError(f"{root}: generated, but its stamp does not record {stamp}")
    return float(layout.read_stamp(root)["seconds"])


def _coco_builder(source: str, description: str) -> CocoBuilder:
    """A one-class COCO builder whose file is reproducible byte for byte."""
    builder = CocoBuilder(categories=["bunch"], source=source)
    # Reproducible bytes: a fixed creation date (SOURCE_DATE_EPOCH convention), not "now".
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    builder.info["date_created"] = np.datetime_as_string(
        np.datetime64(epoch, "s"), unit="s") + "+00:00"
    builder.info["description"] = description
    return builder


def _encode(image: np.ndarray, name: str, params: list[int] | None = None) -> np.ndarray:
    """The file bytes of ``image`` in the format of ``name``'s suffix."""
    ok, data = cv2.imencode(Path(name).suffix, image, params or [])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {name}")
    return data


def _write_bytes(path: Path, data: np.ndarray) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data.tobytes())


# --------------------------------------------------------------------------- RGB


def _via_attributes() -> tuple[dict, dict]:
    """Region and file attributes of the synthetic VIA projects."""
    region = {
        "name": via2_dropdown("object class", ["bunch"], default="bunch"),
        "instance": via2_text("bunch id within the image (parts of a bunch share it)"),
        "variety": via2_dropdown("berry colour", VARIETY_COLORS),
    }
    return region, {"background": via2_dropdown("GrapesNet background kind",
                                                ["black", "natural"])}


def _remove_stale(folder: Path, pattern: str) -> None:
    """With --overwrite, drop files of an earlier run that this run will not rewrite."""
    if folder.is_dir():
        for old in folder.glob(pattern):
            old.unlink()


def generate_dataset(root: str | os.PathLike, splits: dict[str, int] | None = None,
                     seed: int = 0, cfg: SynthConfig | None = None,
                     overwrite: bool = False) -> dict:
    """Render the splits and write images, COCO, VIA 2 project and labelme files under root.

    Returns ``{split: {"images": dir, "coco": json, "via": json, "labelme": dir}}``.
    """
    cfg = cfg or SynthConfig()
    t0 = time.perf_counter()
    root, splits = _start(root, splits, {"train": 200, "val": 50}, "synthetic", overwrite)
    written = {}
    for split, count in splits.items():
        written[split] = _write_split(root, split, int(count), seed, cfg, overwrite)
    layout.write_stamp(root, layout.dataset_stamp("synthetic", splits, seed,
                                                  (cfg.width, cfg.height)),
                       time.perf_counter() - t0)
    return written


def _write_split(root: Path, split: str, count: int, seed: int, cfg: SynthConfig,
                 overwrite: bool) -> dict:
    img_dir, lm_dir = layout.images_dir(root, split), layout.labelme_dir(root, split)
    coco_path, via_path = layout.coco_json(root, split), layout.via_json(root, split)
    if overwrite:
        _remove_stale(img_dir, f"{split}_*.jpg")
        _remove_stale(lm_dir, f"{split}_*.json")
    img_dir.mkdir(parents=True, exist_ok=True)
    lm_dir.mkdir(parents=True, exist_ok=True)
    builder = _coco_builder("synthetic", f"grape_instances synthetic grape bunches, split "
                            f"{split}, seed {seed}, {cfg.height}x{cfg.width}")
    via_meta: dict = {}
    for i in tqdm(range(count), desc=f"synthesize {split}", unit="img", leave=False):
        stem = f"{split}_{i:05d}"
        scene = render_scene(image_rng(seed, split, i), cfg)
        jpg = _encode(scene.image, f"{stem}.jpg", [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
        _write_bytes(img_dir / f"{stem}.jpg", jpg)
        image_id = builder.add_image(f"{stem}.jpg", cfg.height, cfg.width,
                                     background=scene.background)
        regions, shapes = [], []
        for inst, (mask, meta) in enumerate(zip(scene.masks, scene.bunches, strict=True), start=1):
            builder.add_annotation(image_id, mask=mask, variety=meta["variety"],
                                   occluded=meta["occluded"], leaf_occluded=meta["leaf_occluded"])
            # VIA (like pycocotools) reads polygons along pixel edges; labelme fills a
            # polygon and draws its outline, so its shapes run through pixel centres.
            attributes = {"name": "bunch", "instance": str(inst), "variety": meta["variety"]}
            regions += [via2_polygon_region(poly, attributes)
                        for poly in mask_to_polygons(mask, "edges")]
            shapes += [labelme_shape("bunch", poly, inst, meta["variety"])
                       for poly in mask_to_polygons(mask, "centres")]
        key, record = via2_image(f"{stem}.jpg", jpg.size, regions,
                                 {"background": scene.background})
        via_meta[key] = record
        write_json_atomic(lm_dir / f"{stem}.json", labelme_record(
            shapes, f"../../images/{split}/{stem}.jpg", cfg.height, cfg.width), indent=2)
    builder.write(coco_path, overwrite=True)
    write_json_atomic(via_path, via2_project(via_meta, f"grapes_synth_{split}",
                                             f"../images/{split}/", *_via_attributes()))
    logger.info("synthetic %s: %d images -> %s", split, count, img_dir)
    return {"images": img_dir, "coco": coco_path, "via": via_path, "labelme": lm_dir}


def split_statistics(coco_json_path: str | os.PathLike) -> dict:
    """Difficulty of a split: bunches per image, natural backgrounds, occluded bunches."""
    data = read_json(coco_json_path)
    try:
        images, anns = data["images"], data["annotations"]
        n_img, n_ann = len(images), len(anns)
        natural = sum(1 for im in images if im.get("background") == "natural")
        leaf = sum(1 for a in anns if a.get("leaf_occluded"))
        occl = sum(1 for a in anns if a.get("occluded"))
        varieties = {}
        for a in anns:
            varieties[a.get("variety", "?")] = varieties.get(a.get("variety", "?"), 0) + 1
    except (KeyError, TypeError):
        raise GrapeInputError(f"{coco_json_path}: not a COCO instances file") from None
    return {
        "images": n_img,
        "bunches": n_ann,
        "mean_bunches_per_image": n_ann / n_img if n_img else 0.0,
        "fraction_natural": natural / n_img if n_img else 0.0,
        "fraction_leaf_occluded": leaf / n_ann if n_ann else 0.0,
        "fraction_occluded": occl / n_ann if n_ann else 0.0,
        "varieties": dict(sorted(varieties.items())),
    }


# --------------------------------------------------------------------------- RGB-D


def _write_rgbd_image(img_dir: Path, depth_dir: Path, stem: str, scene: RgbdScene,
                      jpeg_quality: int) -> None:
    """Write ``stem.jpg`` into ``img_dir`` and the 16-bit depth ``stem.png`` into ``depth_dir``."""
    jpg = _encode(scene.image, f"{stem}.jpg", [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    png = _encode(scene.depth, f"{stem}.png")
    _write_bytes(img_dir / f"{stem}.jpg", jpg)
    _write_bytes(depth_dir / f"{stem}.png", png)


def generate_rgbd_scenes(root: str | os.PathLike, splits: dict[str, int] | None = None,
                         seed: int = 0, cfg: RgbdConfig | None = None,
                         overwrite: bool = False) -> dict:
    """Write multi-bunch RGB-D scenes (Dataset 3 style) under ``root``.

    Per split: ``images/<split>/``, ``depth/<split>/``, ``annotations/instances_<split>.json``
    (image extra ``depth_file``; annotation extras ``variety``, ``distance_mm``,
    ``weight_g``, ...); one ``camera.json``. Register with ``root`` as image root.
    Returns ``{split: {"coco": json, "images": dir, "depth": dir, "bunches": count}}``
    plus ``"camera"``.
    """
    cfg = cfg or scene_config()
    t0 = time.perf_counter()
    root, splits = _start(root, splits, {"train": 200, "val": 50}, "synthetic RGB-D", overwrite)
    written: dict = {}
    for split, n in splits.items():
        builder = _coco_builder("synthetic-rgbd", f"grape_instances synthetic RGB-D scenes, "
                                f"split {split}, seed {seed}, {cfg.width}x{cfg.height}")
        # Each split's folders are replaced whole: a rerun leaves no stale image behind.
        with replacing_folder(root / "images" / split) as img_dir, \
                replacing_folder(root / "depth" / split) as depth_dir:
            for i in tqdm(range(int(n)), desc=f"synthesize rgbd {split}", unit="img",
                          leave=False):
                scene = render_rgbd_scene(image_rng(seed, f"rgbd-{split}", i), cfg)
                stem = f"{split}_{i:05d}"
                _write_rgbd_image(img_dir, depth_dir, stem, scene, cfg.jpeg_quality)
                image_id = builder.add_image(f"images/{split}/{stem}.jpg", cfg.height,
                                             cfg.width, depth_file=f"depth/{split}/{stem}.png",
                                             background="natural", subset="rgbd_scenes")
                for mask, truth in zip(scene.masks, scene.bunches, strict=True):
                    builder.add_annotation(image_id, mask=mask, **truth)
        builder.write(root / "annotations" / f"instances_{split}.json", overwrite=True)
        written[split] = {"coco": root / "annotations" / f"instances_{split}.json",
                          "images": root / "images" / split, "depth": root / "depth" / split,
                          "bunches": len(builder.annotations)}
    write_json_atomic(root / "camera.json", cfg.camera.as_dict(), indent=2)
    written["camera"] = root / "camera.json"
    layout.write_stamp(root, layout.dataset_stamp("rgbd", splits, seed, (cfg.width, cfg.height)),
                       time.perf_counter() - t0)
    logger.info("synthetic RGB-D scenes: %s -> %s", splits, root)
    return written


def generate_dataset4(root: str | os.PathLike, count: int = 200, seed: int = 0,
                      cfg: RgbdConfig | None = None, overwrite: bool = False) -> dict:
    """Write the synthetic twin of GrapesNet Dataset 4 under ``root``.

    ``images/bunch_NNNNN.jpg``, ``depth/bunch_NNNNN.png``, ``annotations/instances.json``
    (image extras ``depth_file``, ``weight_g``, ``variety``, ``distance_mm`` and the bunch's
    other truth), ``weights.csv`` (``image,weight_g``, image = the JPEG's file name) and
    ``camera.json``. Register with ``root`` as image root. Returns those paths and a
    ``summary`` (image count, weight range, images per variety).
    """
    cfg = cfg or RgbdConfig()
    if cfg.min_bunches != 1 or cfg.max_bunches != 1:
        raise GrapeInputError("Dataset 4 twin: one bunch per image (min/max_bunches must be 1)")
    if int(count) < 1:
        raise GrapeInputError(f"Dataset 4 twin: image count must be >= 1, got {count}")
    t0 = time.perf_counter()
    root = Path(root)
    _check_root(root, overwrite)
    layout.forget_stamp(root)
    builder = _coco_builder("synthetic-rgbd", f"grape_instances synthetic twin of GrapesNet "
                            f"Dataset 4, seed {seed}, {cfg.width}x{cfg.height}")
    rows, varieties = [], Counter()
    # The image and depth folders are replaced whole: a rerun leaves no stale image behind.
    with replacing_folder(root / "images") as img_dir, \
            replacing_folder(root / "depth") as depth_dir:
        for i in tqdm(range(int(count)), desc="synthesize dataset4", unit="img", leave=False):
            stem = f"bunch_{i:05d}"
            scene = render_dataset4_bunch(image_rng(seed, "dataset4", i), cfg)
            _write_rgbd_image(img_dir, depth_dir, stem, scene, cfg.jpeg_quality)
            truth = scene.bunches[0]
            image_id = builder.add_image(f"images/{stem}.jpg", cfg.height, cfg.width,
                                         depth_file=f"depth/{stem}.png", background="coral",
                                         subset="dataset4", **truth)
            builder.add_annotation(image_id, mask=scene.masks[0], variety=truth["variety"])
            rows.append((f"{stem}.jpg", truth["weight_g"]))
            varieties[truth["variety"]] += 1
    builder.write(root / "annotations" / "instances.json", overwrite=True)
    with atomic_open(root / "weights.csv", "w") as f:
        f.write("image,weight_g\n")
        f.writelines(f"{name},{weight:.2f}\n" for name, weight in rows)
    write_json_atomic(root / "camera.json", cfg.camera.as_dict(), indent=2)
    layout.write_stamp(root, layout.dataset_stamp("dataset4", {"images": int(count)}, seed,
                                                  (cfg.width, cfg.height)),
                       time.perf_counter() - t0)
    logger.info("synthetic Dataset 4 twin: %d images -> %s", count, root)
    weights = [w for _, w in rows]
    return {"root": root, "coco": root / "annotations" / "instances.json",
            "images": root / "images", "depth": root / "depth",
            "weights": root / "weights.csv", "camera": root / "camera.json",
            "summary": {"images": len(rows), "weight_g": (min(weights), max(weights)),
                        "varieties": dict(sorted(varieties.items()))}}


# --------------------------------------------------------------------------- vineyard rows


def generate_vineyard_dataset(root: str | os.PathLike, splits: dict[str, int] | None = None,
                              seed: int = 0, cfg: VineyardConfig | None = None,
                              overwrite: bool = False) -> dict:
    """Write photo-like vineyard rows (:mod:`.vineyard`) with COCO silhouette annotations.

    The layout of :mod:`grape_instances.core.paths` (``images/<split>/``,
    ``annotations/instances_<split>.json``) without VIA or labelme copies: this set exists to
    pretrain on. Each split's image folder is replaced whole. Returns
    ``{split: {"images": dir, "coco": json, "bunches": count}}``.
    """
    cfg = cfg or VineyardConfig()
    t0 = time.perf_counter()
    root, splits = _start(root, splits, {"train": 400, "val": 20}, "vineyard", overwrite)
    written = {}
    for split, count in splits.items():
        builder = _coco_builder("synthetic-vineyard", f"grape_instances synthetic vineyard "
                                f"rows, split {split}, seed {seed}, {cfg.width}x{cfg.height}")
        with replacing_folder(layout.images_dir(root, split)) as img_dir:
            for i in tqdm(range(int(count)), desc=f"synthesize vineyard {split}", unit="img"):
                stem = f"{split}_{i:05d}"
                scene = render_vineyard_scene(image_rng(seed, f"vineyard-{split}", i), cfg)
                # The camera's JPEG artefacts are in the pixels already: store them losslessly
                # enough not to add a second, different compression.
                _write_bytes(img_dir / f"{stem}.jpg", _encode(
                    scene.image, f"{stem}.jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]))
                image_id = builder.add_image(f"{stem}.jpg", cfg.height, cfg.width,
                                             background=scene.background)
                for mask, meta in zip(scene.masks, scene.bunches, strict=True):
                    builder.add_annotation(image_id, mask=mask, variety=meta["variety"])
        builder.write(layout.coco_json(root, split), overwrite=True)
        written[split] = {"images": layout.images_dir(root, split),
                          "coco": layout.coco_json(root, split),
                          "bunches": len(builder.annotations)}
    layout.write_stamp(root, layout.dataset_stamp("vineyard", splits, seed,
                                                  (cfg.width, cfg.height)),
                       time.perf_counter() - t0)
    logger.info("synthetic vineyard rows: %s -> %s", splits, root)
    return written


# --------------------------------------------------------------------------- edges sample


def write_sample_images(out_dir: str | os.PathLike, n: int = 8, background: str = "black",
                        size: int = 384, seed: int = 0, overwrite: bool = False) -> list[Path]:
    """Write ``n`` synthetic one-bunch JPEGs (what ``make auto-annotate`` runs on when no
    images are given), so the edge route works on a fresh checkout."""
    out = Path(out_dir)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise GrapeInputError(f"{out}: folder is not empty (pass --overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    cfg = one_bunch_config(size, background)
    paths = []
    for i in range(n):
        scene = render_scene(image_rng(seed, f"edges-sample-{background}", i), cfg)
        path = out / f"{background}_{i:03d}.jpg"
        _write_bytes(path, _encode(scene.image, path.name, [cv2.IMWRITE_JPEG_QUALITY, 95]))
        paths.append(path)
    return paths
