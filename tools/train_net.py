#!/usr/bin/env python
"""Train or evaluate a grape model (Mask R-CNN or a semantic baseline) with Detectron2.

Same flags as Detectron2's tools/train_net.py, e.g.
    python tools/train_net.py --config-file configs/mask_rcnn_grapes.yaml
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file ... --num-gpus 2      # 2 processes (gloo on CPU)
"""

from detectron2.engine import default_argument_parser, launch

import grape_instances.modeling  # noqa: F401  (registers the semantic meta-architectures)
from grape_instances.checkpoint import lock_output_dir
from grape_instances.engine import build_config, check_config, train_or_evaluate
from grape_instances.errors import exit_on_user_error


@exit_on_user_error
def main() -> None:
    args = default_argument_parser().parse_args()
    notes: list[str] = []  # what the config took from the data, logged once logging is set up
    cfg = build_config(args.config_file, args.opts, notes)
    lock_output_dir(cfg.OUTPUT_DIR)  # one run per folder, held until this process exits
    check_config(cfg, args.eval_only, args.resume)
    launch(
        train_or_evaluate,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args, cfg, notes),  # built and checked once, here
    )


if __name__ == "__main__":
    main()
