#!/usr/bin/env python
"""Training speed of the real-photo recipe: s/it and CPU seconds per iteration of the trainer
and its data-loader workers, over a short from-scratch run (issue 15's before / after).

    python tools/real_speed.py --output-dir output/real_speed/cached
    python tools/real_speed.py --output-dir output/real_speed/full \\
        INPUT.SCALE_CROP.CACHE False INPUT.MASK_FORMAT bitmask

CPU seconds, unlike s/it, hardly change when other jobs share the machine.
"""

import argparse
import json

from grape_instances.core.errors import exit_on_user_error
from grape_instances.experiments.real import DEFAULT_ROOT, REAL_CONFIG, measure_training_speed


@exit_on_user_error
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", default=DEFAULT_ROOT, help="WGISD root (data/, *_masked.txt)")
    p.add_argument("--output-dir", default="output/real_speed")
    p.add_argument("--data-dir", default="datasets/real")
    p.add_argument("--config-file", default=REAL_CONFIG)
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10, help="iterations left out of the figures")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = p.parse_args(argv)
    result = measure_training_speed(args.root, args.output_dir, args.data_dir, args.config_file,
                                    args.iterations, args.warmup, args.opts)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
