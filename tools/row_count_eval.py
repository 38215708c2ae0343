#!/usr/bin/env python
"""Score row counting on rendered videos: tune the tracker on val, report on test.

    python tools/row_count_eval.py --root datasets/row_videos --output output/row_eval \
        --config-file configs/mask_rcnn_grapes_row_cpu.yaml \
        MODEL.WEIGHTS output/row_model/model_final.pth
    python tools/row_count_eval.py --root datasets/row_videos --output output/row_eval_oracle \
        --oracle        # ground-truth masks as detections: the tracker's ceiling

Runs the model once per video (detections cached under OUTPUT/detections), compares the
trackers (norfair mask / box IoU with and without camera-motion estimation, supervision's
ByteTrack) over TRACKING.SCORE_THRESH x MAX_GAP x MIN_FRAMES on the validation videos,
picks the lowest count error, and scores it once on the test videos, with and without the
tracker: count error per video and per segment, MOTA, IDF1 and ID switches (motmetrics).
Writes OUTPUT/row_eval.md and row_eval.json. With --score-run RUN --video-dir DIR it
only prints the table of one count_row.py output against one rendered video's truth.
"""

import argparse

from detectron2.utils.logger import setup_logger

from grape_instances.core.errors import GrapeInputError, exit_on_user_error
from grape_instances.data.build import build_config
from grape_instances.experiments.row_count import memory_check, run_row_eval, score_table
from grape_instances.inference.row_count import model_detector


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", default="datasets/row_videos", help="rendered videos (val/, test/)")
    p.add_argument("--output", default="output/row_eval")
    p.add_argument("--config-file", help="instance model config (not with --oracle)")
    p.add_argument("--oracle", action="store_true", help="ground-truth masks as detections")
    p.add_argument("--frame-step", type=int, default=1, metavar="N")
    p.add_argument("--score-thresh", type=float, default=0.05,
                   help="lowest detection score kept in the cache (the grid then tries "
                        "TRACKING.SCORE_THRESH 0.3, 0.5, 0.7 on it)")
    p.add_argument("--memory-check", type=int, metavar="FRAMES",
                   help="render a FRAMES-long row and print count_row's memory at its start "
                        "and end (ground-truth boxes as detections)")
    p.add_argument("--score-run", metavar="RUN", help="a count_row.py output folder to score")
    p.add_argument("--video-dir", metavar="DIR", help="the rendered video of --score-run")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides")
    return p.parse_args(argv)


@exit_on_user_error
def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logger(name="grape_instances")
    if args.memory_check:
        m = memory_check(args.memory_check, args.output)
        print(f"{m['frames']} frames, {m['bunches']} bunches: RSS {m['rss_mb_first']:.0f} MB "
              f"after 50 frames, {m['rss_mb_last']:.0f} MB at the end ({m['cpu_s']:.1f} CPU s)")
        return
    if args.score_run:
        if not args.video_dir:
            raise GrapeInputError("--score-run needs --video-dir (the rendered video folder)")
        print(score_table(args.video_dir, args.score_run))
        return
    detector = None
    if not args.oracle:
        if not args.config_file:
            raise GrapeInputError("give --config-file (and MODEL.WEIGHTS), or --oracle")
        from grape_instances.inference.predictor import Predictor

        cfg = build_config(args.config_file, list(args.opts))
        detector = model_detector(Predictor(cfg), args.score_thresh)
    report = run_row_eval(args.root, args.output, detector, frame_step=args.frame_step,
                          score_thresh=args.score_thresh, oracle=args.oracle)
    print(report["markdown"])


if __name__ == "__main__":
    main()
