#!/usr/bin/env python
"""Save training images as the model sees them, each target bunch outlined: the training
mapper's output (scaled cache, crop, flips, jitter, cut bunches dropped), with bunches pasted
by copy-paste (INPUT.COPY_PASTE) in magenta, the image's own in green.

    python tools/training_crops.py --real --output output/crops --count 8 \\
        INPUT.COPY_PASTE.ENABLED True INPUT.COPY_PASTE.PROB 1.0
    OMP_NUM_THREADS=1 python tools/training_crops.py --real --time 48 [KEY VALUE ...]

--real: the real-photo recipe (configs/mask_rcnn_grapes_cpu_real.yaml) on `make real`'s
split (--data-dir/split/wgisd_train_train.json, photos under --root). Otherwise the config's
own DATASETS.TRAIN (e.g. --config-file configs/mask_rcnn_grapes_cpu_demo.yaml).
"""

import argparse
import os

from grape_instances.core import paths
from grape_instances.core.errors import exit_on_user_error
from grape_instances.inference.cli import add_overrides


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--output", help="folder for crop_NN.png (replaced whole)")
    p.add_argument("--config-file", default=None,
                   help="training config (YAML); default with --real: the real-photo recipe")
    p.add_argument("--real", action="store_true",
                   help="the WGISD split `make real` wrote (--root, --data-dir)")
    p.add_argument("--root", default=paths.WGISD_ROOT, help="with --real: WGISD root")
    p.add_argument("--data-dir", default=paths.REAL_DATA_DIR,
                   help="with --real: where `make real` wrote split/wgisd_train_*.json")
    p.add_argument("--count", type=int, default=8, help="how many training images")
    p.add_argument("--seed", type=int, default=0, help="NumPy seed of the draws")
    p.add_argument("--time", type=int, metavar="N", default=0,
                   help="instead: print the mapper's CPU ms per training image over N images "
                        "(run with OMP_NUM_THREADS=1, as loader workers run)")
    add_overrides(p)
    args = p.parse_args(argv)
    if not args.real and not args.config_file:
        p.error("--config-file is needed without --real")
    if not args.output and not args.time:
        p.error("--output is needed (or --time N)")
    return args


@exit_on_user_error
def main(argv=None) -> None:
    args = parse_args(argv)
    from detectron2.utils.logger import setup_logger

    from grape_instances.data.build import build_config
    from grape_instances.data.preview import save_training_crops, time_mapper
    from grape_instances.experiments.real import REAL_CONFIG, real_config

    setup_logger(name="grape_instances")
    if args.real:
        splits = {k: os.path.join(args.data_dir, "split", f"wgisd_train_{k}.json")
                  for k in ("train", "val")}
        cfg = real_config(args.root, splits, args.output or "output/training_crops",
                          args.config_file or REAL_CONFIG, args.opts)
    else:
        cfg = build_config(args.config_file, args.opts)
    if args.time:
        t = time_mapper(cfg, args.time, args.seed)
        print(f"mapper CPU ms per training image: mean {t['cpu_ms_mean']:.1f}, median "
              f"{t['cpu_ms_median']:.1f} over {t['images']} images")
        return
    written = save_training_crops(cfg, args.output, args.count, args.seed)
    print(f"{len(written)} training images written to {args.output}")


if __name__ == "__main__":
    main()
