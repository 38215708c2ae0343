#!/usr/bin/env python
"""``make real``: train the CPU recipe on real WGISD photos and score it on a held-out part.

    python tools/real.py --root ../shared/real-data/wgisd-train --output-dir output/real

Converts the WGISD root, splits it by image (seed 0, every variety in both parts), trains
configs/mask_rcnn_grapes_cpu_real.yaml (a finished run in --output-dir is reused), prints COCO
AP and instance P / R / F1 on whole photos and with tiles, and draws full-resolution overlays.
"""

import argparse

from grape_instances.core import paths
from grape_instances.core.errors import exit_on_user_error
from grape_instances.experiments.real import (
    DEFAULT_ROOT,
    DEFAULT_TILE,
    REAL_CONFIG,
    print_real_summary,
    run_real,
)


@exit_on_user_error
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", default=DEFAULT_ROOT, help="WGISD root (data/, *_masked.txt)")
    p.add_argument("--output-dir", default="output/real")
    p.add_argument("--data-dir", default=paths.REAL_DATA_DIR,
                   help="for the converted JSON files")
    p.add_argument("--config-file", default=REAL_CONFIG)
    p.add_argument("--tile", type=int, default=DEFAULT_TILE,
                   help="tile size (px of the test-resized photo) of the tiled evaluation")
    p.add_argument("--overlays", type=int, default=2, help="held-out photos to draw")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = p.parse_args(argv)
    summary = run_real(args.root, args.output_dir, args.data_dir, args.config_file, args.tile,
                       args.overlays, args.opts)
    print_real_summary(summary)


if __name__ == "__main__":
    main()
