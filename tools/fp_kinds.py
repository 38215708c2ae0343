#!/usr/bin/env python
"""Score a trained real-photo model on the validation part under several containment
thresholds and P / R / F1 score thresholds, with the false positives by kind (fragment /
duplicate / merge / background / loose; grape_instances.evaluation.fp_kinds), and under
inference variants (--variant LABEL "KEY VALUE ...", e.g. test-time augmentation), each with
its seconds per photo, beside the config as it is ("plain").

    python tools/fp_kinds.py --weights output/real_v2/model_final.pth \\
        --containment 0 0.5 0.7 0.9 --score 0.5 0.7
    python tools/fp_kinds.py --weights output/real_v2/model_final.pth --containment 0 \\
        --output-dir output/real_v2/tta --variant tta "TEST.AUG.ENABLED True"

The model runs once per photo and variant; the table and a JSON land in --output-dir.
"""

import argparse
import os

from grape_instances.core.errors import exit_on_user_error
from grape_instances.core.fileio import atomic_open, write_json_atomic
from grape_instances.experiments.fragments import score_settings, settings_table
from grape_instances.experiments.real import DEFAULT_ROOT, REAL_CONFIG, real_config


@exit_on_user_error
def main(argv=None) -> None:
    from detectron2.utils.logger import setup_logger

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--weights", required=True)
    p.add_argument("--root", default=DEFAULT_ROOT, help="WGISD root (data/, *_masked.txt)")
    p.add_argument("--data-dir", default="datasets/real",
                   help="where `make real` wrote split/wgisd_train_{train,val}.json")
    p.add_argument("--config-file", default=REAL_CONFIG)
    p.add_argument("--output-dir", default=None, help="default: beside --weights")
    p.add_argument("--containment", type=float, nargs="+", default=[0.0, 0.5, 0.7, 0.9])
    p.add_argument("--score", type=float, nargs="+", default=[0.5])
    p.add_argument("--variant", nargs=2, action="append", default=[],
                   metavar=("LABEL", "OVERRIDES"),
                   help='an inference variant scored after the plain config: a label and its '
                        'config overrides in one string, e.g. tta "TEST.AUG.ENABLED True"')
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = p.parse_args(argv)
    setup_logger(name="grape_instances")
    out = args.output_dir or os.path.dirname(os.path.abspath(args.weights))
    splits = {k: os.path.join(args.data_dir, "split", f"wgisd_train_{k}.json")
              for k in ("train", "val")}
    cfg = real_config(args.root, splits, out, args.config_file, args.opts)
    variants = [("plain", []), *((label, overrides.split()) for label, overrides in args.variant)]
    rows = score_settings(cfg, args.weights, "wgisd_val", args.containment, args.score,
                          variants)
    table = settings_table(rows)
    write_json_atomic(os.path.join(out, "fp_kinds.json"), rows, indent=2, nan_as_null=True)
    with atomic_open(os.path.join(out, "fp_kinds.md")) as f:
        f.write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
