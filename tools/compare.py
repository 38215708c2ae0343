#!/usr/bin/env python
"""Train (or evaluate) Mask R-CNN and the four semantic baselines on the same split and
budget, and rank them: writes comparison.md, comparison.csv and comparison.png.

    python tools/compare.py --output-dir output/compare                  # CPU smoke (make compare)
    python tools/compare.py --output-dir output/compare --eval-only      # re-score checkpoints
    python tools/compare.py --configs configs/mask_rcnn_grapes.yaml \\
        configs/semantic/{segnet_grapes,pspnet_r50_grapes,unet_vgg16_grapes,fcn8s_grapes}.yaml \\
        --images-seen 24000 --seeds 3 --output-dir output/compare_gpu   # the real one, on a GPU

Trailing KEY VALUE pairs override every config (e.g. DATALOADER.NUM_WORKERS 0).
"""

import argparse

from detectron2.utils.logger import setup_logger

import grape_instances.modeling  # noqa: F401  (registers the semantic meta-architectures)
from grape_instances.core.errors import exit_on_user_error
from grape_instances.experiments.compare import DEFAULT_CONFIGS, run_comparison


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--output-dir", default="output/compare", help="where tables and runs go")
    p.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS),
                   help="model configs; the first one's datasets are used for all")
    p.add_argument("--images-seen", type=int, default=1200,
                   help="training budget per model in images (MAX_ITER = this / IMS_PER_BATCH);"
                        " 0 keeps each config's own schedule")
    p.add_argument("--seeds", type=int, default=1, help="runs per model (seeds 0..N-1)")
    p.add_argument("--eval-only", action="store_true",
                   help="evaluate the checkpoints of an earlier run in --output-dir")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = p.parse_args(argv)
    # --configs is greedy: trailing overrides after it start at its first non-YAML item.
    split = next((i for i, c in enumerate(args.configs) if not c.endswith((".yaml", ".yml"))),
                 len(args.configs))
    args.configs, args.opts = args.configs[:split], args.configs[split:] + args.opts
    if not args.configs:
        p.error("--configs needs at least one YAML file")
    return args


@exit_on_user_error
def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logger(name="grape_instances")
    setup_logger(name="detectron2")
    run_comparison(args.output_dir, args.configs, args.images_seen or None, args.seeds,
                   args.eval_only, args.opts)
    with open(f"{args.output_dir}/comparison.md", encoding="utf-8") as f:
        print("\n" + f.read())


if __name__ == "__main__":
    main()
