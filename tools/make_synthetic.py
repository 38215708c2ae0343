#!/usr/bin/env python
"""Render the embedded synthetic grape-bunch dataset (images + COCO, VIA 2 and labelme files).

Five modes:

* default: vineyard RGB images with exact masks (COCO, VIA 2 and labelme), ``--train/--val``;
* ``--dataset4``: the twin of GrapesNet Dataset 4, ``--count`` single weighed bunches on a
  coral sheet with aligned 16-bit depth (mm), ``weights.csv`` and ``camera.json``;
* ``--rgbd-scenes``: Dataset-3-style RGB-D scenes, several touching bunches at different
  depths per image, with depth and ``camera.json``, ``--train/--val``;
* ``--edges-sample``: ``--count`` one-bunch JPEGs (GrapesNet Dataset-1 style) straight into
  ``--out``, what ``make auto-annotate`` annotates when no images are given;
* ``--vineyard``: photo-like vineyard rows (3:2 frame, default 1024x683, 8-30 bunches with
  WGISD-like silhouette masks), COCO only, ``--train/--val``: what ``make pretrain-ablation``
  pretrains on;
* ``--row-videos``: videos of a camera moving along a vineyard row (speed changes, shake,
  motion blur, near leaves with parallax, H.264), each with MOT ``gt/gt.txt``, per-frame
  COCO with persistent ``track_id``, ``segments.csv`` (vines) and ``truth.json``:
  ``--train/--val/--test`` videos of ``--frames`` frames at ``--frame`` (default 320x192);
  ``--frame-step N`` also writes every Nth frame as a JPEG with ``frames.json`` (training).

The RGB-D modes write ``images/``, ``depth/`` and ``annotations/`` under ``--out``, which is
the image root to register (``file_name`` and ``depth_file`` are relative to it), and take
the frame size as ``--frame WIDTHxHEIGHT`` (default 320x240).

Examples:
    python tools/make_synthetic.py --out datasets/grapes_synth --train 200 --val 50 --seed 0
    python tools/make_synthetic.py --dataset4 --count 200 --out datasets/grapes_d4
    python tools/make_synthetic.py --rgbd-scenes --train 200 --val 50 --out datasets/grapes_rgbd
    python tools/make_synthetic.py --edges-sample --count 8 --size 384 \
        --out datasets/edges_sample/images
    python tools/make_synthetic.py --vineyard --train 400 --val 0 --out datasets/vineyard
    python tools/make_synthetic.py --row-videos --train 6 --val 3 --test 4 --frame-step 8 \
        --out datasets/row_videos
"""

from __future__ import annotations

import argparse
import logging

from detectron2.utils.logger import setup_logger

from grape_instances.core import paths as dataset_paths
from grape_instances.core.errors import GrapeInputError, exit_on_user_error
from grape_instances.synthetic.export import (
    generate_dataset,
    generate_dataset4,
    generate_rgbd_scenes,
    generate_vineyard_dataset,
    split_statistics,
    write_sample_images,
)
from grape_instances.synthetic.render import config_from_size
from grape_instances.synthetic.rgbd import RgbdConfig, parse_frame, scene_config
from grape_instances.synthetic.row_video import RowVideoConfig, write_row_videos
from grape_instances.synthetic.vineyard import VineyardConfig


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="dataset root folder (default "
                   "datasets/grapes_synth, _d4 or _rgbd by mode; --edges-sample: the images "
                   "folder, default datasets/edges_sample/images)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dataset4", action="store_true",
                      help="write the twin of GrapesNet Dataset 4 (weighed single bunches)")
    mode.add_argument("--rgbd-scenes", action="store_true",
                      help="write multi-bunch RGB-D scenes (GrapesNet Dataset 3 style)")
    mode.add_argument("--edges-sample", action="store_true",
                      help="write --count one-bunch images for the edge auto-annotator")
    mode.add_argument("--vineyard", action="store_true",
                      help="write photo-like vineyard rows (silhouette masks, COCO only)")
    mode.add_argument("--row-videos", action="store_true",
                      help="write videos along a vineyard row with per-bunch tracks (gt.txt)")
    p.add_argument("--train", type=int, default=200, help="number of training images")
    p.add_argument("--val", type=int, default=50, help="number of validation images")
    p.add_argument("--test", type=int, default=0, help="--row-videos: number of test videos")
    p.add_argument("--frames", type=int, default=240, help="--row-videos: frames per video")
    p.add_argument("--frame-step", type=int, default=0, help="--row-videos: also write every "
                   "Nth frame as a JPEG with frames.json (detector training); 0 = none")
    p.add_argument("--count", type=int, default=200,
                   help="--dataset4 / --edges-sample: number of images")
    p.add_argument("--background", choices=("black", "natural"), default="black",
                   help="--edges-sample: background of the one-bunch images")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (square; RGB "
                   "and --edges-sample modes)")
    p.add_argument("--frame", default=None, help="RGB-D and --vineyard modes: WIDTHxHEIGHT in "
                   "pixels (default 320x240; --vineyard 1024x683)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    return p.parse_args(argv)


@exit_on_user_error
def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logger(name="grape_instances")
    if args.dataset4:
        out = args.out or dataset_paths.D4_ROOT
        width, height = parse_frame(args.frame or "320x240")
        paths = generate_dataset4(out, args.count, seed=args.seed,
                                  cfg=RgbdConfig(width=width, height=height),
                                  overwrite=args.overwrite)
        st = paths["summary"]
        print(f"synthetic Dataset 4 twin -> {out} | {st['images']} bunches, "
              f"{st['weight_g'][0]:.0f}-{st['weight_g'][1]:.0f} g, varieties "
              + ", ".join(f"{k} {v}" for k, v in st["varieties"].items()))
        return
    if args.edges_sample:
        out = args.out or dataset_paths.EDGES_SAMPLE_IMAGES
        if args.count < 1:
            raise GrapeInputError(f"--count must be at least 1, got {args.count}")
        paths = write_sample_images(out, n=args.count, background=args.background,
                                    size=args.size, seed=args.seed, overwrite=args.overwrite)
        print(f"edges sample -> {out} | {len(paths)} one-bunch {args.background}-background "
              f"images, {args.size} px")
        return
    if args.row_videos:
        out = args.out or "datasets/row_videos"
        width, height = parse_frame(args.frame or "320x192")
        splits = {s: n for s, n in (("train", args.train), ("val", args.val),
                                    ("test", args.test)) if n > 0}
        if not splits or min(args.train, args.val, args.test) < 0:
            raise GrapeInputError("--row-videos: give a positive --train, --val or --test")
        written = write_row_videos(out, splits, RowVideoConfig(
            width=width, height=height, frames=args.frames), seed=args.seed,
            frame_step=args.frame_step, overwrite=args.overwrite)
        print(f"synthetic row videos -> {out} | " + " | ".join(
            f"{s}: {len(v)} videos, {sum(x['total'] for x in v)} bunches"
            for s, v in written.items()))
        return
    if args.train < 0 or args.val < 0:
        raise GrapeInputError(f"--train/--val must be >= 0, got {args.train}/{args.val}")
    splits = {name: n for name, n in (("train", args.train), ("val", args.val)) if n > 0}
    if not splits:
        raise GrapeInputError("nothing to generate: --train and --val are both 0")
    if args.rgbd_scenes or args.vineyard:
        what, default_out, frame, generate, make_cfg = (
            ("synthetic RGB-D scenes", dataset_paths.RGBD_ROOT, "320x240", generate_rgbd_scenes,
             scene_config) if args.rgbd_scenes else
            ("synthetic vineyard rows", dataset_paths.VINEYARD_ROOT, "1024x683",
             generate_vineyard_dataset, VineyardConfig))
        out = args.out or default_out
        width, height = parse_frame(args.frame or frame)
        written = generate(out, splits, seed=args.seed, cfg=make_cfg(width=width, height=height),
                           overwrite=args.overwrite)
        print(f"{what} -> {out} | " + " | ".join(
            f"{s}: {n} images, {written[s]['bunches']} bunches" for s, n in splits.items()))
        return
    out = args.out or dataset_paths.SYNTH_ROOT
    written = generate_dataset(out, splits, seed=args.seed,
                               cfg=config_from_size(args.size), overwrite=args.overwrite)
    parts = []
    for split, paths in written.items():
        st = split_statistics(paths["coco"])
        parts.append(f"{split}: {st['images']} images, {st['bunches']} bunches "
                     f"({st['mean_bunches_per_image']:.2f}/img, "
                     f"{100 * st['fraction_natural']:.0f}% natural, "
                     f"{100 * st['fraction_leaf_occluded']:.0f}% leaf-occluded)")
    logging.getLogger("grape_instances").info("wrote %s", out)
    print(f"synthetic grapes -> {out} | " + " | ".join(parts))


if __name__ == "__main__":
    main()
