#!/usr/bin/env python
"""Convert annotations (VIA, labelme, edge detection, GrapesNet, WGISD) into COCO JSON, and
COCO into a YOLO segmentation dataset.

    python tools/convert.py via --via project.json --images DIR --out train.json
    python tools/convert.py labelme --input DIR --out train.json [--root IMAGES]
    python tools/convert.py split --json all.json --out-dir DIR --val 0.2 --seed 0
    python tools/convert.py merge a.json b.json --out all.json [--label-map map.txt]
    python tools/convert.py validate --json train.json --images DIR [--deep]
    python tools/convert.py edges --images DIR --out edges.json [--via-out project.json]
    python tools/convert.py grapesnet --root GrapesNet --out-dir DIR [--annotations DIR]
    python tools/convert.py wgisd --root wgisd --out-dir DIR [--boxes-json]
    python tools/convert.py from-predictions --predictions VIS/coco_results.json
        --images DIR --via-out project.json [--labelme-out DIR] [--coco val.json]
    python tools/convert.py yolo --train train.json [--val val.json] --images DIR
        --out-dir yolo_data [--copy]        (COCO -> Ultralytics YOLO-seg dataset)

Outputs are written whole or not at all, and refused if they exist, unless --overwrite.
"""

# How this file is built (for developers; not part of --help): every subcommand is one
# add_<name>_parser(subparsers) function that declares its flags, each flag's dest being the
# name of a parameter of the package function the subcommand names as its target
# (grape_instances.convert); dispatch() calls it with them. Nothing else lives here.

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable
from typing import Any

from grape_instances.core.errors import exit_on_user_error
from grape_instances.core.images import DEFAULT_MAX_PIXELS

logger = logging.getLogger("grape_instances.convert")


def add_writer_args(parser: argparse.ArgumentParser) -> None:
    """Flags shared by every subcommand that writes files."""
    parser.add_argument(
        "--overwrite", action="store_true", help="replace outputs that already exist"
    )


def add_image_limit_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help="refuse images with more pixels than this (decompression-bomb guard; "
        "default %(default)s)",
    )


def add_strict_images_arg(parser: argparse.ArgumentParser) -> None:
    """``--strict-images``, shared by the converters that decode every image they list."""
    parser.add_argument(
        "--strict-images",
        action="store_true",
        help="refuse (exit 1) on an undecodable or truncated image instead of leaving it "
        "out with a counted warning",
    )


def add_keep_empty_arg(parser: argparse.ArgumentParser) -> None:
    """``--keep-empty``: the one rule of the VIA and labelme converters for images without
    any region or shape."""
    parser.add_argument(
        "--keep-empty",
        action="store_true",
        help="keep images without any region / shape as images with nothing to find (only "
        "for reviewed photos: an unreviewed one would teach the model it holds nothing); "
        "by default they are left out with a counted warning",
    )


def add_via_parser(subparsers) -> None:
    p = subparsers.add_parser("via", help="VIA 1.x / 2.x / 3.x project or export -> COCO")
    p.add_argument(
        "--via",
        dest="via_path",
        metavar="VIA",
        required=True,
        help="VIA JSON (1.x, 2.x export or project, 3.x)",
    )
    p.add_argument(
        "--images",
        dest="images_dir",
        metavar="IMAGES",
        required=True,
        help="folder holding the annotated images",
    )
    p.add_argument("--out", dest="out_path", metavar="OUT", required=True, help="output COCO JSON")
    p.add_argument("--label-attr", help="region attribute holding the class name")
    p.add_argument("--category", default="bunch", help="class name without --label-attr")
    p.add_argument(
        "--group-attr",
        help="region attribute whose equal values mark parts of one instance (merged)",
    )
    p.add_argument(
        "--polygons", dest="keep_polygons", action="store_true", help="keep polygons instead of RLE"
    )
    add_keep_empty_arg(p)
    add_image_limit_arg(p)
    add_strict_images_arg(p)
    add_writer_args(p)
    p.set_defaults(target="grape_instances.convert.via:convert_via")


def add_labelme_parser(subparsers) -> None:
    p = subparsers.add_parser("labelme", help="labelme JSON files -> COCO")
    p.add_argument(
        "--input",
        dest="inputs",
        metavar="INPUT",
        required=True,
        nargs="+",
        help="labelme JSON files and/or folders of them",
    )
    p.add_argument("--out", dest="out_path", metavar="OUT", required=True, help="output COCO JSON")
    p.add_argument(
        "--root",
        help="folder holding the images: image paths may point anywhere inside it (e.g. "
        "../images/x.jpg) and file names in the output are relative to it, so it is the "
        "image root to train with (default: the input folder)",
    )
    p.add_argument(
        "--labels",
        dest="labels_file",
        metavar="LABELS",
        help="labelme labels.txt (__ignore__, _background_, classes)",
    )
    p.add_argument(
        "--polygons", dest="keep_polygons", action="store_true", help="keep polygons instead of RLE"
    )
    add_keep_empty_arg(p)
    add_image_limit_arg(p)
    add_strict_images_arg(p)
    add_writer_args(p)
    p.set_defaults(target="grape_instances.convert.labelme:convert_labelme")


def add_split_parser(subparsers) -> None:
    p = subparsers.add_parser("split", help="split one COCO JSON by image into train/val/test")
    p.add_argument(
        "--json", dest="json_path", metavar="JSON", required=True, help="input COCO JSON"
    )
    p.add_argument("--out-dir", required=True, help="folder for NAME_train/val/test.json")
    p.add_argument("--val", type=float, default=0.2, help="fraction of images for val")
    p.add_argument("--test", type=float, default=0.0, help="fraction of images for test")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed (same seed, same split)")
    p.add_argument(
        "--group-by",
        help="image key (e.g. subset, plant) whose images stay together in one split",
    )
    p.add_argument(
        "--stratify-by",
        help="image key (e.g. variety) whose every value gets images in each split",
    )
    add_writer_args(p)
    p.set_defaults(target="grape_instances.convert.split:split_coco_file")


def add_merge_parser(subparsers) -> None:
    p = subparsers.add_parser("merge", help="merge COCO JSONs into one, renumbering ids")
    p.add_argument("inputs", nargs="+", help="COCO JSON files")
    p.add_argument("--out", dest="out_path", metavar="OUT", required=True, help="output COCO JSON")
    p.add_argument(
        "--label-map",
        dest="label_map_file",
        metavar="LABEL_MAP",
        help="text file of 'old name: new name' lines to unify categories",
    )
    p.add_argument(
        "--image-dirs",
        nargs="+",
        help="image root of each input (same order); file names are then rewritten "
        "relative to --image-root",
    )
    p.add_argument("--image-root", help="image root of the merged JSON (with --image-dirs)")
    add_writer_args(p)
    p.set_defaults(target="grape_instances.convert.split:merge_coco_files")


def add_validate_parser(subparsers) -> None:
    p = subparsers.add_parser("validate", help="check a COCO JSON against its images")
    p.add_argument(
        "--json", dest="json_path", metavar="JSON", required=True, help="COCO instances JSON"
    )
    p.add_argument(
        "--images",
        dest="images_dir",
        metavar="IMAGES",
        required=True,
        help="image root the file names are relative to",
    )
    p.add_argument("--deep", action="store_true", help="decode every image, not just headers")
    p.add_argument(
        "--boxes-only",
        dest="masks",
        action="store_false",
        help="data for a box model (MODEL.MASK_ON False): annotations without a "
        "segmentation are fine",
    )
    add_image_limit_arg(p)
    p.set_defaults(target=validate)


def add_from_predictions_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "from-predictions",
        help="model predictions -> VIA project / labelme files, to correct instead of draw",
    )
    p.add_argument(
        "--predictions",
        "--results",
        dest="results_json",
        metavar="RESULTS",
        required=True,
        help="visualize.py's coco_results.json or Detectron2's coco_instances_results.json "
        "(or the folder holding it)",
    )
    p.add_argument(
        "--images",
        dest="images_dir",
        metavar="IMAGES",
        required=True,
        help="folder of the predicted images",
    )
    p.add_argument(
        "--coco",
        dest="coco_json",
        metavar="COCO",
        help="COCO JSON the predictions were made on (image_id -> file_name, categories); "
        "without it, each prediction's file_name (visualize.py writes it) or else its image "
        "id as a file stem names an image in --images",
    )
    p.add_argument("--via-out", help="VIA 2.x project to write")
    p.add_argument("--labelme-out", help="folder for one labelme JSON per image")
    p.add_argument("--score-threshold", type=float, default=0.5, help="keep scores >= this")
    p.add_argument(
        "--categories",
        dest="category_names",
        nargs="+",
        metavar="NAME",
        help="names of category ids 1, 2, ... without --coco (default: the model's class "
        "names visualize.py lists beside its results, else bunch)",
    )
    p.add_argument(
        "--simplify",
        type=float,
        default=argparse.SUPPRESS,  # the package's DEFAULT_SIMPLIFY
        metavar="FRACTION",
        help="polygon tolerance as a fraction of each bunch's size, sqrt(mask area) "
        "(default 0.01: tens of vertices per bunch at mask IoU ~0.99; 0: exact outlines)",
    )
    add_image_limit_arg(p)
    add_writer_args(p)
    p.set_defaults(target="grape_instances.convert.predictions:convert_predictions")


def add_edges_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "edges", help="auto-annotate one-bunch images by edge detection -> COCO (+ VIA)"
    )
    p.add_argument(
        "--images",
        dest="images_dir",
        metavar="IMAGES",
        required=True,
        help="folder of one-bunch images",
    )
    p.add_argument("--out", dest="out_json", metavar="OUT", required=True, help="output COCO JSON")
    p.add_argument(
        "--background",
        choices=["black", "natural", "auto"],
        default="auto",
        help="background kind; auto decides per image from the border pixels (default)",
    )
    p.add_argument("--via-out", help="also write a VIA 2 project of the polygons, to correct")
    p.add_argument("--recursive", action="store_true", help="also images in subfolders")
    add_image_limit_arg(p)
    add_strict_images_arg(p)
    add_writer_args(p)
    p.set_defaults(target="grape_instances.convert.edges:convert_edges")


def add_grapesnet_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "grapesnet", help="GrapesNet folders -> one COCO JSON per sub-dataset"
    )
    p.add_argument("--root", required=True, help="GrapesNet root (Dataset-1 ... Dataset-4)")
    p.add_argument("--out-dir", required=True, help="folder for grapesnet_<subset>.json")
    p.add_argument("--annotations", help="folder of VIA / labelme JSON files (searched deep)")
    p.add_argument("--weights", help="Dataset-4 bunch weights table (CSV; XLSX with openpyxl)")
    p.add_argument("--key-column", help="weights column naming the image (default: guessed)")
    p.add_argument("--weight-column", help="weights column in grams (default: guessed)")
    p.add_argument("--layout", help="JSON object replacing folder / file pattern lists")
    p.add_argument(
        "--pattern",
        action="append",
        default=[],
        metavar="KEY=GLOB",
        help="replace one pattern list (repeat for several), e.g. dataset2='multi/*'",
    )
    p.add_argument(
        "--auto",
        choices=["black", "single", "none"],
        default="black",
        help="edge-annotate Dataset-1 black-background images (default), every one-bunch "
        "image (single: Dataset-1 and 4), or none",
    )
    add_image_limit_arg(p)
    add_strict_images_arg(p)
    add_writer_args(p)
    p.set_defaults(target=grapesnet)


def add_wgisd_parser(subparsers) -> None:
    p = subparsers.add_parser("wgisd", help="WGISD (boxes .txt + masks .npz) -> COCO per split")
    p.add_argument("--root", required=True, help="WGISD root (data/, train_masked.txt ...)")
    p.add_argument("--out-dir", required=True, help="folder for wgisd_<split>.json")
    p.add_argument(
        "--boxes-json",
        action="store_true",
        help="also write images with boxes but no masks to wgisd_<split>_boxes.json",
    )
    add_image_limit_arg(p)
    add_strict_images_arg(p)
    add_writer_args(p)
    p.set_defaults(target="grape_instances.convert.wgisd:convert_wgisd")


def add_yolo_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "yolo", help="COCO JSON (per split) -> YOLO segmentation dataset (Ultralytics)"
    )
    p.add_argument("--train", dest="train_json", metavar="JSON", required=True,
                   help="COCO JSON of the training images")
    p.add_argument("--val", dest="val_json", metavar="JSON",
                   help="COCO JSON of the validation images (default: data.yaml's val is train)")
    p.add_argument("--test", dest="test_json", metavar="JSON", help="COCO JSON of test images")
    p.add_argument(
        "--images",
        dest="images_dir",
        metavar="IMAGES",
        required=True,
        help="image root the file names of every JSON are relative to",
    )
    p.add_argument("--out-dir", required=True,
                   help="dataset folder to write: images/, labels/, data.yaml")
    p.add_argument("--copy", dest="copy_images", action="store_true",
                   help="copy the photos instead of symlinking them")
    p.add_argument(
        "--simplify",
        type=float,
        default=argparse.SUPPRESS,  # the package's DEFAULT_SIMPLIFY
        metavar="PX",
        help="outline tolerance in pixels (default 1; 0: every boundary pixel)",
    )
    add_image_limit_arg(p)
    add_strict_images_arg(p)
    add_writer_args(p)
    p.set_defaults(target="grape_instances.convert.yolo:convert_yolo")


def validate(**kwargs: Any) -> None:
    """``validate``: print the report; exit 1 when the JSON is invalid."""
    from grape_instances.convert.validate import validate_coco_file

    report = validate_coco_file(**kwargs)
    print(report.format())
    if not report.ok:
        sys.exit(1)


def grapesnet(layout: str | None, pattern: list[str], **kwargs: Any) -> None:
    """``grapesnet``: ``--layout`` (JSON) and ``--pattern`` overrides make one layout."""
    from grape_instances.convert.grapesnet import GrapesNetLayout, convert_grapesnet

    base = GrapesNetLayout.from_json(layout) if layout else GrapesNetLayout()
    convert_grapesnet(layout=base.with_patterns(pattern), **kwargs)


def dispatch(args: argparse.Namespace) -> Any:
    """Call the subcommand's target (``"module:function"``, imported only now so that
    ``--help`` stays fast, or a function of this file) with its flags as keywords."""
    kwargs = vars(args).copy()
    target: str | Callable[..., Any] = kwargs.pop("target")
    kwargs.pop("command", None)
    if isinstance(target, str):
        module, name = target.split(":")
        target = getattr(importlib.import_module(module), name)
    return target(**kwargs)


SUBCOMMANDS = [
    add_via_parser,
    add_labelme_parser,
    add_split_parser,
    add_merge_parser,
    add_validate_parser,
    add_from_predictions_parser,
    add_edges_parser,
    add_grapesnet_parser,
    add_wgisd_parser,
    add_yolo_parser,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    for add_parser in SUBCOMMANDS:
        add_parser(subparsers)
    return parser


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from detectron2.utils.logger import setup_logger

    setup_logger(name="grape_instances")
    dispatch(args)


if __name__ == "__main__":
    main()
