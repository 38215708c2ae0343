#!/usr/bin/env python
"""CPU demo (``make demo``): synthetic grapes -> Mask R-CNN from scratch -> COCO AP -> overlays."""

import argparse

from grape_instances.core.errors import exit_on_user_error
from grape_instances.experiments.demo import DEMO_CONFIG, print_summary, run_demo


@exit_on_user_error
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--output-dir", default="output/demo")
    p.add_argument("--config-file", default=DEMO_CONFIG)
    p.add_argument("--train-images", type=int, default=300)
    p.add_argument("--val-images", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = p.parse_args(argv)
    summary = run_demo(args.output_dir, args.config_file, args.train_images, args.val_images,
                       seed=args.seed, opts=args.opts)
    print_summary(summary)


if __name__ == "__main__":
    main()
