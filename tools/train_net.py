#!/usr/bin/env python
"""Train or evaluate a grape model (Mask R-CNN or a semantic baseline) with Detectron2.

Same flags as Detectron2's tools/train_net.py, e.g.
    python tools/train_net.py --config-file configs/mask_rcnn_grapes.yaml
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file ... --num-gpus 2      # 2 processes (gloo on CPU)
"""

import argparse
import os
import sys

from grape_instances.core.errors import exit_on_user_error
from grape_instances.inference.cli import add_launch_args


def argument_parser() -> argparse.ArgumentParser:
    """Detectron2's ``default_argument_parser`` (the same flags and defaults), built without
    importing torch or Detectron2, so that --help and a wrong flag answer at once."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    parser.add_argument("--resume", action="store_true",
                        help="resume from the last checkpoint in OUTPUT_DIR")
    parser.add_argument("--eval-only", action="store_true", help="perform evaluation only")
    # Detectron2's deterministic port, so that an orphan process shows as a port in use
    port = 2**15 + 2**14 + hash(os.getuid() if sys.platform != "win32" else 1) % 2**14
    add_launch_args(parser, dist_url=f"tcp://127.0.0.1:{port}")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                        help="config overrides at the end of the command: space-separated "
                        "KEY VALUE pairs, e.g. MODEL.WEIGHTS model.pth")
    return parser


@exit_on_user_error
def main() -> None:
    args = argument_parser().parse_args()
    import grape_instances.modeling  # noqa: F401  (registers the semantic meta-architectures)
    from grape_instances.data.build import build_config
    from grape_instances.engine import launch_from_args

    notes: list[str] = []  # what the config took from the data, logged once logging is set up
    cfg = build_config(args.config_file, args.opts, notes)
    launch_from_args(args, cfg, notes)  # the OUTPUT_DIR lock and the checks, then launch


if __name__ == "__main__":
    main()
