#!/usr/bin/env python
"""Count the bunches along a row video: one track per bunch, counts per segment and in total.

    python tools/count_row.py --config-file configs/mask_rcnn_grapes_row_cpu.yaml \
        --video-input row.mp4 --output output/count_row [--segments segments.csv] \
        [--frame-step 2] [--line 0.5] [--tile 256] MODEL.WEIGHTS output/row_model/model_final.pth

Writes into --output (replaced whole, only when the run succeeds): tracks.csv (one row per
track: frames, segment, best mask's size and colour, metric size with --mm-per-px or
--depth-video), counts.csv (segment,bunches ... total,N), annotated.mp4, results.json (COCO
results per frame with track ids), mot.txt (MOTChallenge) and summary.json (timings).
Segments: a CSV of frame ranges (segment,first_frame,last_frame; frames from 0); without
one the whole video is one segment. Tracking settings are the config's TRACKING.* keys.
"""

import argparse

from detectron2.utils.logger import setup_logger

from grape_instances.core.errors import GrapeInputError, exit_on_user_error
from grape_instances.inference.cli import add_config_file, add_overrides, add_prediction_args
from grape_instances.inference.predictor import prediction_config
from grape_instances.inference.row_count import count_row
from grape_instances.measure.depth import Camera


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_config_file(p, help="instance model config (YAML)")
    p.add_argument("--video-input", required=True, help="the row video")
    p.add_argument("--output", required=True, help="output folder (replaced whole)")
    p.add_argument("--segments", metavar="CSV", help="segments as frame ranges: "
                   "segment,first_frame,last_frame (frames from 0)")
    p.add_argument("--frame-step", type=int, default=1, metavar="N",
                   help="process every Nth frame (TRACKING.MAX_GAP and MIN_FRAMES count "
                        "processed frames)")
    p.add_argument("--line", type=float, default=None, metavar="X",
                   help="vertical counting line at X (fraction of the width): only bunches "
                        "crossing it count; default: no line, assignment at the frame middle")
    add_prediction_args(p)
    p.add_argument("--depth-video", metavar="DIR",
                   help="aligned depth frames: DIR/NNNNNN.png (16-bit mm, frame index from 0); "
                        "with --camera or --fov-deg gives metric sizes")
    p.add_argument("--camera", metavar="JSON", help="camera intrinsics {fx, fy} in pixels")
    p.add_argument("--fov-deg", type=float, help="horizontal field of view instead of --camera")
    p.add_argument("--mm-per-px", type=float, help="a fixed scale for metric sizes (no depth)")
    p.add_argument("--confidence-threshold", type=float, default=None,
                   help="minimum detection score (TRACKING.SCORE_THRESH)")
    p.add_argument("--no-video", action="store_true", help="skip the annotated video")
    add_overrides(p)
    return p.parse_args(argv)


@exit_on_user_error
def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logger(name="grape_instances")
    setup_logger(name="detectron2")
    if len(args.opts) % 2:
        raise GrapeInputError(f"config overrides must be KEY VALUE pairs, got {args.opts}")
    opts = list(args.opts)
    if args.confidence_threshold is not None:
        opts += ["TRACKING.SCORE_THRESH", str(args.confidence_threshold)]
    cfg = prediction_config(args.config_file, opts, confidence_threshold=None, tile=args.tile)
    camera = None
    if args.camera:
        camera = Camera.from_json(args.camera)
    elif args.fov_deg is not None:
        camera = Camera(fov_deg=args.fov_deg)
    s = count_row(cfg, args.video_input, args.output, segments_csv=args.segments,
                  frame_step=args.frame_step, line=args.line, depth_dir=args.depth_video,
                  camera=camera, mm_per_px=args.mm_per_px, write_video=not args.no_video)
    per = ", ".join(f"{k} {v}" for k, v in s["segments"].items())
    print(f"{s['total']} bunches ({per}) in {s['frames']} frames, {s['pipeline_fps']} frames/s "
          f"(model {s['model_s']} s, tracker {s['tracker_s']} s, writing {s['write_s']} s) "
          f"-> {args.output}")


if __name__ == "__main__":
    main()
