#!/usr/bin/env python
"""Measure every grape bunch: size, shape, colour, occlusion and, with depth, cm and cm³.

From masks that already exist (a COCO instances file, or a COCO results list):

    python tools/measure.py --coco masks.json --images DIR [--depth DIR] \
        [--fx FX --fy FY | --fov-deg H | --camera camera.json] [--weight-model MODEL] \
        --out table.csv

or from a trained model (the flags of tools/visualize.py):

    python tools/measure.py --config-file configs/mask_rcnn_grapes_cpu_demo.yaml \
        --input photos/ --out table.csv --overlays overlays/ \
        --opts MODEL.WEIGHTS output/demo/model_final.pth

Writes table.csv (one row per bunch), table_images.csv and table_images.json (per image:
count and totals), table_folders.csv (per folder: one vine or row). Depth images are 16-bit
PNGs in millimetres (0 = no reading) with the RGB image's stem under --depth, or named by
the COCO images' depth_file. A results list finds its images through --coco-images, through
the file_name that tools/visualize.py writes, or by image_id = file stem (see
grape_instances/measure/sources.py). --overlays draws each bunch with its table id.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from grape_instances.core.errors import GrapeInputError, exit_on_user_error
from grape_instances.inference.cli import add_config_file, add_overrides, add_prediction_args

if TYPE_CHECKING:
    from grape_instances.measure.depth import Camera

# torch, Detectron2 and the measuring code are imported in main(), after the arguments are
# parsed: --help and a wrong flag answer at once.


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--coco", metavar="MASKS.json",
                        help="COCO instances JSON or COCO results list (RLE masks)")
    add_config_file(source, help="model config (YAML): predict the masks", required=False)
    p.add_argument("--images", help="image root of --coco (file names are relative to it)")
    p.add_argument("--coco-images", metavar="INSTANCES.json",
                   help="for a results list: the COCO JSON its image_ids refer to")
    p.add_argument("--input", nargs="+", help="with --config-file: image files, folders, globs")
    p.add_argument("--out", required=True, help="per-bunch table (.csv); the per-image and "
                   "per-folder tables are written beside it")
    p.add_argument("--overwrite", action="store_true", help="replace existing tables")
    p.add_argument("--overlays", metavar="DIR",
                   help="also draw each image with its bunches' ids (folder replaced whole)")
    p.add_argument("--depth", metavar="DIR", help="aligned 16-bit depth images (mm), same stem")
    p.add_argument("--fx", type=float, help="focal length along x (pixels)")
    p.add_argument("--fy", type=float, help="focal length along y (pixels; default: --fx)")
    p.add_argument("--fov-deg", type=float, help="horizontal field of view (degrees), "
                   "instead of --fx/--fy")
    p.add_argument("--camera", metavar="JSON", help="camera JSON with fx, fy (pixels)")
    p.add_argument("--weight-model", metavar="MODEL",
                   help="folder (or model.joblib) written by tools/fit_weight.py")
    p.add_argument("--confidence-threshold", type=float, default=0.5,
                   help="minimum score of predicted bunches (model or results list)")
    add_prediction_args(p, tile_overlap=True, runtime=True, only="with --config-file")
    add_overrides(p, flag=True)
    return p.parse_args(argv)


def camera_from_args(args: argparse.Namespace) -> Camera | None:
    from grape_instances.measure.depth import Camera

    given = [n for n, v in (("--fx/--fy", args.fx if args.fx is not None else args.fy),
                            ("--fov-deg", args.fov_deg), ("--camera", args.camera))
             if v is not None]
    if len(given) > 1:
        raise GrapeInputError(f"give one of {' / '.join(given)}, not several")
    if args.camera:
        return Camera.from_json(args.camera)
    if args.fov_deg is not None:
        return Camera(fov_deg=args.fov_deg)
    if args.fx is None and args.fy is not None:
        raise GrapeInputError("--fy needs --fx")
    if args.fx is not None:
        return Camera(fx=args.fx, fy=args.fy if args.fy is not None else args.fx)
    return None


@exit_on_user_error
def main(argv=None) -> None:
    args = parse_args(argv)
    from detectron2.utils.logger import setup_logger

    from grape_instances.inference.measure import measure_jobs

    setup_logger(name="grape_instances")
    camera = camera_from_args(args)
    weight_model = None
    if args.weight_model:
        from grape_instances.measure.weight import WeightModel

        weight_model = WeightModel(args.weight_model)
    common = dict(depth_dir=args.depth, camera=camera, weight_model=weight_model,
                  overlays=args.overlays, overwrite=args.overwrite)
    if args.coco:
        if not args.images or args.input:
            raise GrapeInputError("--coco needs --images DIR (and takes no --input)")
        from grape_instances.core.warning_counter import WarningCounter
        from grape_instances.measure.sources import load_mask_file

        warnings = WarningCounter()
        _, jobs = load_mask_file(args.coco, args.images, args.coco_images,
                                 args.confidence_threshold, warnings)
        summary = measure_jobs(jobs, args.out, source=args.coco,
                               inputs=[args.coco, *([args.coco_images] if args.coco_images
                                                    else [])], warnings=warnings, **common)
    else:
        if not args.input or args.images or args.coco_images:
            raise GrapeInputError("--config-file needs --input (--images and --coco-images "
                                  "are for --coco)")
        setup_logger(name="detectron2")
        import grape_instances.modeling  # noqa: F401  (registers the semantic models)
        from grape_instances.core.images import expand_inputs
        from grape_instances.inference.predictor import Predictor, prediction_config
        from grape_instances.measure.sources import jobs_from_files

        cfg = prediction_config(args.config_file, args.opts,
                                confidence_threshold=args.confidence_threshold, tile=args.tile,
                                tile_overlap=args.tile_overlap)
        jobs = jobs_from_files(expand_inputs(args.input))
        if args.runtime != "eager" or args.exported:
            from grape_instances.inference.runtime import build_runtime

            predictor = build_runtime(cfg, args.runtime, args.exported)
        else:
            predictor = Predictor(cfg)
        summary = measure_jobs(jobs, args.out, predictor=predictor,
                               source=args.config_file, **common)
    if summary["skipped"]:
        print(f"skipped {len(summary['skipped'])} image(s): see the warnings above")
    counted = summary["categories"]
    what = (f"{summary['bunches']} bunches" if set(counted) <= {"bunch"} else
            f"{summary['bunches']} instances ("
            + ", ".join(f"{name} {n}" for name, n in counted.items()) + ")")
    print(f"{what} in {summary['images']} images: "
          f"{', '.join(summary['outputs'].values())}"
          + (f"; overlays in {summary['overlays']}" if summary["overlays"] else ""))


if __name__ == "__main__":
    main()
