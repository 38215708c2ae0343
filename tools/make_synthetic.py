#!/usr/bin/env python
"""Render the embedded synthetic grape-bunch dataset (images + COCO, VIA 2 and labelme files).

Example:
    python tools/make_synthetic.py --out datasets/grapes_synth --train 200 --val 50 --seed 0
"""

from __future__ import annotations

import argparse
import logging

from detectron2.utils.logger import setup_logger

from grape_instances.errors import GrapeInputError, exit_on_user_error
from grape_instances.synthetic.render import config_from_size, generate_dataset, split_statistics


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="datasets/grapes_synth", help="dataset root folder")
    p.add_argument("--train", type=int, default=200, help="number of training images")
    p.add_argument("--val", type=int, default=50, help="number of validation images")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (square)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    return p.parse_args(argv)


@exit_on_user_error
def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logger(name="grape_instances")
    if args.train < 0 or args.val < 0:
        raise GrapeInputError(f"--train/--val must be >= 0, got {args.train}/{args.val}")
    splits = {name: n for name, n in (("train", args.train), ("val", args.val)) if n > 0}
    if not splits:
        raise GrapeInputError("nothing to generate: --train and --val are both 0")
    written = generate_dataset(args.out, splits, seed=args.seed,
                               cfg=config_from_size(args.size), overwrite=args.overwrite)
    parts = []
    for split, paths in written.items():
        st = split_statistics(paths["coco"])
        parts.append(f"{split}: {st['images']} images, {st['bunches']} bunches "
                     f"({st['mean_bunches_per_image']:.2f}/img, "
                     f"{100 * st['fraction_natural']:.0f}% natural, "
                     f"{100 * st['fraction_leaf_occluded']:.0f}% leaf-occluded)")
    logging.getLogger("grape_instances").info("wrote %s", args.out)
    print(f"synthetic grapes -> {args.out} | " + " | ".join(parts))


if __name__ == "__main__":
    main()
