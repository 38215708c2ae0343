#!/usr/bin/env python
"""Draw a trained model's predictions on images, folders or globs.

    python tools/visualize.py --config-file configs/mask_rcnn_grapes_cpu_demo.yaml \
        --input datasets/grapes_synth/images/val --output output/vis \
        --opts MODEL.WEIGHTS output/demo/model_final.pth

Instance models: one overlay PNG per input plus coco_results.json (the detections).
Semantic models (configs/semantic/*): one overlay PNG and one <name>_labels.png (class index
per pixel, 0 = background) per input; their coco_results.json is an empty list.
"""

import argparse

from grape_instances.core.errors import exit_on_user_error
from grape_instances.inference.cli import add_config_file, add_overrides, add_prediction_args

# torch, Detectron2 and the model code are imported in main(), after the arguments are
# parsed: --help and a wrong flag answer at once.


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_config_file(p)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", help="image files, folders or globs")
    source.add_argument("--video-input", help="a video: writes an annotated video and "
                        "<stem>_counts.csv (bunches per frame)")
    p.add_argument("--output", required=True,
                   help="folder for the overlays and coco_results.json (replaced whole), an "
                        "image file for one input, or a video file for --video-input")
    p.add_argument("--depth", metavar="DIR",
                   help="RGB-D models (INPUT.DEPTH.ENABLED): folder of the depth images, "
                        "16-bit PNGs in mm named <photo stem>.png")
    p.add_argument("--confidence-threshold", type=float, default=0.5,
                   help="minimum score of the instances drawn and saved")
    add_prediction_args(p, tile_overlap=True, runtime=True)
    add_overrides(p, flag=True)
    return p.parse_args(argv)


@exit_on_user_error
def main(argv=None) -> None:
    args = parse_args(argv)
    from detectron2.utils.logger import setup_logger

    import grape_instances.modeling  # noqa: F401  (registers the semantic meta-architectures)
    from grape_instances.core.images import expand_inputs
    from grape_instances.inference.predictor import prediction_config
    from grape_instances.inference.writers import visualize_files, visualize_video

    setup_logger(name="grape_instances")
    setup_logger(name="detectron2")
    cfg = prediction_config(args.config_file, args.opts,
                            confidence_threshold=args.confidence_threshold, tile=args.tile,
                            tile_overlap=args.tile_overlap)
    if args.video_input:
        done = visualize_video(cfg, args.video_input, args.output)
        print(f"{done['video']} ({done['frames']} frames) and {done['counts']} written")
        return
    predictor = None
    if args.runtime != "eager" or args.exported:
        from grape_instances.inference.runtime import build_runtime

        predictor = build_runtime(cfg, args.runtime, args.exported)
    summary = visualize_files(cfg, expand_inputs(args.input), args.output, depth_dir=args.depth,
                              predictor=predictor)
    if summary.get("skipped"):
        print(f"skipped {len(summary['skipped'])} unreadable image(s): see the warnings above")
    print(f"{len(summary['overlays'])} overlays, {len(summary['label_maps'])} label maps and "
          f"{summary['results']} ({summary['num_detections']} detections) written to "
          f"{args.output}")


if __name__ == "__main__":
    main()
