#!/usr/bin/env python
"""``make pretrain-ablation``: pretrain on synthetic vineyard rows, or start from scratch?

    python tools/pretrain_ablation.py --root ../shared/real-data/wgisd-train

Trains (or reuses) the scratch run of ``make real`` in --scratch-dir, renders --images
photo-like vineyard rows, pretrains the same recipe on them for --pretrain-iters iterations,
fine-tunes on the real training part for the rest of the scratch run's measured training
time, and prints both arms' AP and F1 on the held-out part with their CPU minutes.
"""

import argparse

from grape_instances.core import paths
from grape_instances.core.errors import exit_on_user_error
from grape_instances.experiments.pretrain import print_pretrain_summary, run_pretrain_ablation
from grape_instances.experiments.real import DEFAULT_ROOT, DEFAULT_TILE, REAL_CONFIG


@exit_on_user_error
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", default=DEFAULT_ROOT, help="WGISD root (data/, *_masked.txt)")
    p.add_argument("--output-dir", default="output/pretrain")
    p.add_argument("--data-dir", default=paths.VINEYARD_ROOT,
                   help="for the rendered vineyard rows (reused when already there)")
    p.add_argument("--scratch-dir", default="output/real", help="the scratch run (make real)")
    p.add_argument("--real-data-dir", default=paths.REAL_DATA_DIR,
                   help="for the converted WGISD split (as make real)")
    p.add_argument("--pretrain-iters", type=int, default=600)
    p.add_argument("--images", type=int, default=400, help="vineyard rows to render")
    p.add_argument("--finetune-iters", type=int, default=None,
                   help="fix the fine-tune's length (default: fill the scratch run's time)")
    p.add_argument("--config-file", default=REAL_CONFIG)
    p.add_argument("--tile", type=int, default=DEFAULT_TILE)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every run")
    args = p.parse_args(argv)
    summary = run_pretrain_ablation(
        args.root, args.output_dir, args.data_dir, args.scratch_dir, args.real_data_dir,
        args.pretrain_iters, args.images, args.config_file, args.tile, args.opts,
        args.finetune_iters)
    print_pretrain_summary(summary)


if __name__ == "__main__":
    main()
