#!/usr/bin/env python
"""Mask R-CNN with and without depth on the synthetic RGB-D scenes, at the same budget:
writes rgbd_ablation.md / .json (segm AP per variant and seed, and the paired difference).

    python tools/rgbd_ablation.py --output-dir output/rgbd_ablation          # make rgbd-ablation
    python tools/rgbd_ablation.py --iters 300 --seeds 0 1 --output-dir /tmp/rgbd
    python tools/rgbd_ablation.py --depth-stats --data datasets/grapes_rgbd  # PIXEL_MEAN/STD

The scenes in --data are generated once (tools/make_synthetic.py --rgbd-scenes) with
--train / --val images. Trailing KEY VALUE pairs override the config of both variants.
"""

import argparse

from detectron2.utils.logger import setup_logger

from grape_instances.core import paths as layout
from grape_instances.core.errors import exit_on_user_error
from grape_instances.experiments.rgbd import (
    DEFAULT_DATA,
    RGBD_CONFIG,
    depth_statistics,
    run_rgbd_ablation,
)
from grape_instances.synthetic.rgbd import parse_frame


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--output-dir", default="output/rgbd_ablation", help="runs and the table")
    p.add_argument("--data", default=DEFAULT_DATA, help="RGB-D scenes folder (generated if "
                   "missing)")
    p.add_argument("--config", default=RGBD_CONFIG, help="the RGB-D config both variants use")
    p.add_argument("--train", type=int, default=200, help="train scenes")
    p.add_argument("--val", type=int, default=50, help="val scenes (the scored split)")
    p.add_argument("--frame", default="320x240", help="scene size WIDTHxHEIGHT")
    p.add_argument("--iters", type=int, default=600, help="iterations per run (LR steps and "
                   "warm-up scaled from the config's)")
    p.add_argument("--seeds", nargs="+", default=["0"], help="seeds (a pair of runs per seed)")
    p.add_argument("--depth-stats", action="store_true", help="only print the mean / std of "
                   "the train split's valid depth readings (for PIXEL_MEAN / PIXEL_STD)")
    p.add_argument("--max-mm", type=float, default=3000.0,
                   help="--depth-stats: clip readings here (INPUT.DEPTH.MAX_MM)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = p.parse_args(argv)
    # --seeds is greedy: trailing overrides after it start at its first non-integer item.
    split = next((i for i, s in enumerate(args.seeds) if not s.isdigit()), len(args.seeds))
    args.seeds, args.opts = args.seeds[:split], args.seeds[split:] + args.opts
    if not args.seeds:
        p.error("--seeds needs at least one integer seed")
    args.seeds = [int(s) for s in args.seeds]
    return args


@exit_on_user_error
def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logger(name="grape_instances")
    if args.depth_stats:
        st = depth_statistics(layout.coco_json(args.data, "train"), args.data, args.max_mm)
        print(f"{args.data} train: {st['images']} depth images, valid readings mean "
              f"{st['mean_mm']:.1f} mm, std {st['std_mm']:.1f} mm (clipped at {args.max_mm:g}),"
              f" {100 * st['hole_fraction']:.1f} % holes")
        return
    setup_logger(name="detectron2")
    run_rgbd_ablation(args.output_dir, args.data, args.train, args.val, parse_frame(args.frame),
                      args.iters, args.seeds, args.opts, args.config)
    with open(f"{args.output_dir}/rgbd_ablation.md", encoding="utf-8") as f:
        print("\n" + f.read())


if __name__ == "__main__":
    main()
