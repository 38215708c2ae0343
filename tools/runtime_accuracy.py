#!/usr/bin/env python
"""Exported vs eager on annotated photos (issue 17's correctness check): segm AP and AP50
per runtime, and at the working threshold the bunches each finds and how they match eager's.

    python tools/export_model.py --config-file configs/mask_rcnn_grapes_cpu_real_plain.yaml \\
        --format onnx --output export/ MODEL.WEIGHTS output/real_plain/model_final.pth  # etc.
    python tools/runtime_accuracy.py --config-file configs/mask_rcnn_grapes_cpu_real_plain.yaml \\
        --coco datasets/real/split/wgisd_train_val.json --images ../shared/real-data/wgisd-train \\
        --exported export/ --runtimes eager onnx openvino openvino_int8 \\
        MODEL.WEIGHTS output/real_plain/model_final.pth

The first runtime is the reference. Writes the table (Markdown) and a JSON to --output.
"""

import argparse
import os

from grape_instances.core.errors import exit_on_user_error
from grape_instances.core.fileio import atomic_open, write_json_atomic
from grape_instances.core.tables import markdown_table


@exit_on_user_error
def main(argv=None) -> None:
    from detectron2.utils.logger import setup_logger

    from grape_instances.experiments.runtime_accuracy import ACCURACY_COLUMNS, runtime_accuracy

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--coco", required=True, help="COCO instances JSON of the photos to score")
    p.add_argument("--images", required=True, help="root its file_name entries are under")
    p.add_argument("--exported", help="folder written by tools/export_model.py")
    p.add_argument("--runtimes", nargs="+", default=["eager", "onnx", "openvino"])
    p.add_argument("--score", type=float, default=0.5,
                   help="working score threshold for the count and IoU columns")
    p.add_argument("--output", default="output/runtime_accuracy")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = p.parse_args(argv)
    setup_logger(name="grape_instances")
    rows = runtime_accuracy(args.config_file, args.coco, args.images, args.runtimes,
                            args.exported, args.opts, score_thresh=args.score)
    table = markdown_table([c[1] for c in ACCURACY_COLUMNS],
                           [[format(r[key], fmt) for key, _, fmt in ACCURACY_COLUMNS]
                            for r in rows])
    os.makedirs(args.output, exist_ok=True)
    write_json_atomic(os.path.join(args.output, "runtime_accuracy.json"), rows, indent=2,
                      nan_as_null=True)
    with atomic_open(os.path.join(args.output, "runtime_accuracy.md")) as f:
        f.write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
