#!/usr/bin/env python
"""Train or evaluate a grape model (Mask R-CNN or a semantic baseline) with Detectron2.

Same flags as Detectron2's tools/train_net.py, e.g.
    python tools/train_net.py --config-file configs/mask_rcnn_grapes.yaml
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file ... --num-gpus 2      # 2 processes (gloo on CPU)
"""

# isort: off
import grape_instances  # noqa: F401  (first: it silences a torch warning Detectron2 triggers)
# isort: on
from detectron2.engine import default_argument_parser

import grape_instances.modeling  # noqa: F401  (registers the semantic meta-architectures)
from grape_instances.core.errors import exit_on_user_error
from grape_instances.data.build import build_config
from grape_instances.engine import launch_from_args


@exit_on_user_error
def main() -> None:
    args = default_argument_parser().parse_args()
    notes: list[str] = []  # what the config took from the data, logged once logging is set up
    cfg = build_config(args.config_file, args.opts, notes)
    launch_from_args(args, cfg, notes)  # the OUTPUT_DIR lock and the checks, then launch


if __name__ == "__main__":
    main()
