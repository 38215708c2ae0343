#!/usr/bin/env python
"""``make bench``: our Mask R-CNN beside torchvision's, and the converters, in one run.

Prints Markdown tables and writes all rows as JSON (``--out``).
"""

import argparse
import logging

from detectron2.utils.logger import setup_logger

from grape_instances.core.errors import exit_on_user_error
from grape_instances.core.fileio import write_json_atomic
from grape_instances.experiments.benchmark import (
    MODEL_COLUMNS,
    BenchSpec,
    format_table,
    run_in_subprocess,
)

# torchvision's maskrcnn_resnet50_fpn without weights trains every layer with BatchNorm;
# the R50-FPN row is set up the same way (random weights cannot use frozen BN).
R50_LIKE_TORCHVISION = ("MODEL.RESNETS.NORM", "BN", "MODEL.BACKBONE.FREEZE_AT", "0")
MODELS = [
    ("detectron2:configs/mask_rcnn_grapes.yaml", R50_LIKE_TORCHVISION),
    ("torchvision:maskrcnn_resnet50_fpn", ()),
    ("detectron2:configs/mask_rcnn_grapes_cpu_demo.yaml", ()),
]


@exit_on_user_error
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", type=int, default=384, help="square input side (px)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-iters", type=int, default=3)
    p.add_argument("--skip-converters", action="store_true")
    p.add_argument("--out", default="bench/benchmark.json")
    args = p.parse_args(argv)
    logger = setup_logger(name="grape_instances")
    report = {"models": [], "converters": []}
    for model, opts in MODELS:
        logger.info("benchmarking %s", model)
        spec = BenchSpec(model, args.size, args.batch, args.threads, args.train_iters, opts=opts)
        report["models"].append(run_in_subprocess(spec))
    print(format_table(report["models"], MODEL_COLUMNS))
    if not args.skip_converters:
        from grape_instances.experiments.convert_benchmark import (
            CONVERTER_COLUMNS,
            run_converter_benchmark,
        )

        report["converters"] = run_converter_benchmark()
        print()
        print(format_table(report["converters"], CONVERTER_COLUMNS))
    write_json_atomic(args.out, report, indent=2)
    logging.getLogger("grape_instances").info("wrote %s", args.out)


if __name__ == "__main__":
    main()
