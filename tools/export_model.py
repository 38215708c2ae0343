#!/usr/bin/env python
"""Export a trained Mask R-CNN for CPU runtimes, as Detectron2's tools/deploy/export_model.py
(tracing with TracingAdapter):

    python tools/export_model.py --config-file configs/mask_rcnn_grapes_cpu_real_plain.yaml \
        --format onnx --output output/export MODEL.WEIGHTS output/real_plain/model_final.pth
    python tools/export_model.py ... --format openvino --int8 --calibration photos/train ...

Formats: torchscript (model.ts), onnx (model.onnx), openvino (model.xml + .bin; --int8:
model_int8.xml, NNCF post-training quantization on --calibration photos). Several formats
can share one EXPORT_DIR; export.json says what the files were exported from. Run them with
tools/predict.py --runtime torchscript|onnx|openvino|openvino_int8 --exported EXPORT_DIR
(openvino_bf16 and openvino_int8_bf16: the same OpenVINO files computed in bfloat16).
The graph keeps detections above MODEL.ROI_HEADS.SCORE_THRESH_TEST (default here 0.05), so
predict can apply any higher --confidence-threshold. PointRend models (the real-photo
recipe, configs/mask_rcnn_grapes_cpu_real.yaml) are not exported: train the plain-head
configs/mask_rcnn_grapes_cpu_real_plain.yaml for these runtimes.
"""

import argparse

from detectron2.utils.logger import setup_logger

from grape_instances.core.errors import exit_on_user_error
from grape_instances.inference.cli import add_config_file, add_overrides


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_config_file(p)
    p.add_argument("--format", required=True, choices=["torchscript", "onnx", "openvino"])
    p.add_argument("--output", required=True, metavar="EXPORT_DIR", help="export folder")
    p.add_argument("--int8", action="store_true",
                   help="openvino: quantize to int8 with NNCF (needs --calibration)")
    p.add_argument("--calibration", metavar="DIR",
                   help="photos (e.g. the training photos) to trace and to calibrate int8 on")
    p.add_argument("--calibration-size", type=int, default=100,
                   help="at most this many --calibration photos")
    p.add_argument("--score-thresh", type=float, default=0.05,
                   help="lowest score the exported graph keeps")
    add_overrides(p)
    return p.parse_args(argv)


@exit_on_user_error
def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logger(name="grape_instances")
    import grape_instances.modeling  # noqa: F401  (registers the semantic models)
    from grape_instances.data.build import build_config
    from grape_instances.inference.export import export_model

    opts = list(args.opts)
    if opts[:1] == ["--"]:
        opts = opts[1:]
    cfg = build_config(args.config_file, opts + [
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(args.score_thresh)])
    info = export_model(cfg, args.format, args.output, calibration=args.calibration,
                        int8=args.int8, calibration_size=args.calibration_size)
    key = "openvino_int8" if args.int8 else args.format
    print(f"exported {key}: {args.output}/{info['files'][key]}")


if __name__ == "__main__":
    main()
