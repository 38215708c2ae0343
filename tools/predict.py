#!/usr/bin/env python
"""Predict a season: run a trained instance model over a folder tree of photos.

    python tools/predict.py --config-file configs/mask_rcnn_grapes_cpu_real.yaml \
        --input photos/ --output predictions/ --measure [--overlays] \
        MODEL.WEIGHTS output/real/model_final.pth

Writes OUT/results.json (COCO results: file_name relative to --input, the dataset's own
category ids; `convert.py from-predictions` and `measure.py --coco` read it), with --measure
OUT/bunches.csv + bunches_images.csv + bunches_folders.csv + bunches_images.json (the measure
package's tables), with --overlays OUT/overlays/<same relative path>, and OUT/summary.json.
Interrupted? Run the same command again: finished shards (OUT/.shards) are kept.

Exported models (tools/export_model.py, plain mask head only: train
configs/mask_rcnn_grapes_cpu_real_plain.yaml for them): --runtime torchscript|onnx|openvino
--exported DIR.
Many processes or machines, as tools/train_net.py: --num-gpus N (N processes on a CPU
machine, gloo), --num-machines, --machine-rank, --dist-url.
"""

import argparse
import os

from detectron2.engine import launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from grape_instances.core.errors import GrapeInputError, exit_on_user_error
from grape_instances.inference.cli import (
    add_config_file,
    add_launch_args,
    add_overrides,
    add_prediction_args,
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_config_file(p)
    p.add_argument("--input", required=True, help="root folder of the photos (walked "
                   "recursively; the outputs keep its layout)")
    p.add_argument("--list", metavar="FILE", help="predict only the photos this file names, "
                   "one per line, relative to --input")
    p.add_argument("--output", required=True, help="output folder (outside --input)")
    p.add_argument("--overlays", action="store_true", help="also draw every photo")
    p.add_argument("--measure", action="store_true",
                   help="also write the per-bunch, per-photo and per-folder tables")
    p.add_argument("--confidence-threshold", type=float, default=0.5,
                   help="minimum score of the bunches kept")
    add_prediction_args(p, runtime=True)
    p.add_argument("--workers", type=int, default=None,
                   help="data loader processes decoding photos ahead of the model (default: 2 "
                        "on a GPU, none on a CPU, where the model's threads take every core)")
    p.add_argument("--shard-size", type=int, default=32,
                   help="photos per resumable shard")
    p.add_argument("--threads", type=int, default=None,
                   help="torch / runtime threads per process (default: OMP_NUM_THREADS, or "
                        "torch's default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_launch_args(p)
    add_overrides(p)
    return p.parse_args(argv)


def build(args):
    """Config, runtime, photo list and options, checked in the launching process (bad input
    is one line before any process starts or anything is written)."""
    import grape_instances.modeling  # noqa: F401  (registers the semantic models)
    from grape_instances.inference.batch import BatchOptions, check_output_dir, list_photos
    from grape_instances.inference.predictor import prediction_config
    from grape_instances.inference.runtime import build_runtime

    if args.shard_size < 1:
        raise GrapeInputError(f"--shard-size {args.shard_size}: must be at least 1")
    opts = list(args.opts)
    if opts[:1] == ["--"]:
        opts = opts[1:]
    cfg = prediction_config(args.config_file, opts, confidence_threshold=args.confidence_threshold,
                            tile=args.tile)
    photos = list_photos(args.input, args.list)
    check_output_dir(args.input, args.output)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    runtime_name = args.runtime
    runtime = build_runtime(cfg, runtime_name, args.exported)
    options = BatchOptions(overlays=args.overlays, measure=args.measure,
                           shard_size=args.shard_size, workers=args.workers,
                           progress=not args.no_progress)
    return cfg, runtime, photos, options


def run(args, built=None) -> dict:
    """One process's part (under ``launch``)."""
    from grape_instances.engine.trainer import _leave_process_group
    from grape_instances.inference.batch import predict_folder

    if comm.get_world_size() > 1:  # a spawned process: its own logging
        setup_logger(name="grape_instances", distributed_rank=comm.get_rank())
    try:
        cfg, runtime, photos, options = built if built is not None else build(args)
        return predict_folder(runtime, args.input, photos, args.output, options,
                              exported=args.exported, rank=comm.get_rank(),
                              world_size=comm.get_world_size(), synchronize=comm.synchronize)
    finally:
        if comm.get_world_size() > 1:
            comm.synchronize()
        _leave_process_group()


def report(summary: dict, output: str) -> None:
    t = summary["timing"]
    if summary["skipped_done"]:
        print(f"resumed: {summary['skipped_done']} photo(s) already done were skipped")
    if summary["skipped"]:
        print(f"skipped {len(summary['skipped'])} undecodable photo(s): see summary.json")
    print(f"{summary['predicted']} of {summary['photos']} photos predicted, "
          f"{summary['detections']} bunches: {os.path.join(output, 'results.json')}"
          + (f" and {', '.join(summary['tables'].values())}" if "tables" in summary else ""))
    if t["photos"]:
        print(f"this run: {t['photos']} photos in {t['wall_s']:.1f} s ({t['photos_per_s']:.2f} "
              f"photos/s; decode {t['decode_s']:.1f} s, model {t['model_s']:.1f} s, post "
              f"{t['post_s']:.1f} s, write {t['write_s']:.1f} s; {t['cpu_s']:.1f} CPU-s)")


@exit_on_user_error
def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logger(name="grape_instances")
    setup_logger(name="detectron2")
    world = args.num_gpus * args.num_machines
    built = build(args)  # checks everything once, before any process starts
    if world > 1:
        launch(run, args.num_gpus, num_machines=args.num_machines,
               machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,))
        if args.machine_rank == 0:
            from grape_instances.core.fileio import read_json
            from grape_instances.inference.batch import SUMMARY

            summary = read_json(os.path.join(args.output, SUMMARY), expect=dict)
            print(f"{summary['predicted']} of {summary['photos']} photos predicted by "
                  f"{world} processes, {summary['detections']} bunches: "
                  f"{os.path.join(args.output, 'results.json')}")
        return
    report(run(args, built), args.output)


if __name__ == "__main__":
    main()
