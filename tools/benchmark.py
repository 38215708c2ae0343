#!/usr/bin/env python
"""``make bench``: our Mask R-CNN beside torchvision's, and the converters, in one run.

Prints Markdown tables and writes all rows as JSON (``--out``).
"""

import argparse
import logging
import os

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
    p.add_argument("--skip-models", action="store_true", help="no training/inference rows")
    g = p.add_argument_group("prediction rows (tools/predict.py per runtime)")
    # the plain mask head: exported runtimes do not take the recipe's PointRend head
    g.add_argument("--predict-weights", default="output/real_plain/model_final.pth",
                   help="trained checkpoint of --predict-config (rows skipped when absent)")
    g.add_argument("--predict-config", default="configs/mask_rcnn_grapes_cpu_real_plain.yaml")
    g.add_argument("--predict-photos", default="../shared/real-data/wgisd-train/data",
                   help="photos to predict (shrunk to --predict-width px wide)")
    g.add_argument("--predict-count", type=int, default=24)
    g.add_argument("--predict-width", type=int, default=1024)
    g.add_argument("--predict-workers", type=int, default=None,
                   help="loader workers (default: as tools/predict.py)")
    g.add_argument("--runtimes", default="eager,torchscript,onnx,openvino,openvino_int8")
    g.add_argument("--calibration", default=None,
                   help="int8 calibration photos (default: --predict-photos)")
    g.add_argument("--predict-opts", nargs="*", default=[],
                   help="config overrides for the prediction rows (KEY VALUE ...)")
    g.add_argument("--work-dir", default="bench/predict")
    args = p.parse_args(argv)
    logger = setup_logger(name="grape_instances")
    report = {"models": [], "converters": [], "predict": []}
    for model, opts in [] if args.skip_models else MODELS:
        logger.info("benchmarking %s", model)
        spec = BenchSpec(model, args.size, args.batch, args.threads, args.train_iters, opts=opts)
        report["models"].append(run_in_subprocess(spec))
    if report["models"]:
        print(format_table(report["models"], MODEL_COLUMNS))
    if os.path.isfile(args.predict_weights) and os.path.isdir(args.predict_photos):
        from grape_instances.experiments.predict_benchmark import PREDICT_COLUMNS, predict_rows

        report["predict"] = predict_rows(
            args.predict_config, args.predict_weights, args.predict_photos, args.work_dir,
            runtimes=args.runtimes.split(","), count=args.predict_count,
            width=args.predict_width, threads=args.threads, workers=args.predict_workers,
            opts=args.predict_opts, calibration=args.calibration or args.predict_photos,
            processes_table=True, log=logger.info)
        print()
        print(format_table(report["predict"], PREDICT_COLUMNS))
    else:
        logger.info("prediction rows skipped: no %s or no %s (train with make real "
                    "REAL_CONFIG=configs/mask_rcnn_grapes_cpu_real_plain.yaml REAL_OUT=...)",
                    args.predict_weights, args.predict_photos)
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
