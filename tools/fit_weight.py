#!/usr/bin/env python
"""Fit a bunch-weight model on weighed bunches and check it by cross-validation.

    python tools/fit_weight.py --measurements table.csv --weights weights.csv --out model/

table.csv comes from tools/measure.py (ground-truth or predicted masks, with depth if you
have it); weights.csv is a plain image,weight_g table or GrapesNet Dataset-4's weights
table (CSV or XLSX). Each weighed image must hold exactly one bunch. Writes into model/:
model.joblib (the best model by cross-validated R², refitted on all bunches, with its
features), report.json (R², MAE in g and MAPE of every model), cv_predictions.csv and
pred_vs_measured.png. Apply it with tools/measure.py --weight-model model/.
"""

import argparse

from detectron2.utils.logger import setup_logger

from grape_instances.core.errors import exit_on_user_error
from grape_instances.measure.weight import fit_weight_model, write_report_summary


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--measurements", required=True, help="bunch table from tools/measure.py")
    p.add_argument("--weights", required=True, help="weights table (CSV / XLSX)")
    p.add_argument("--out", required=True, help="output folder (replaced whole)")
    p.add_argument("--folds", type=int, default=5, help="k of k-fold cross-validation")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds and the forest")
    p.add_argument("--no-depth", action="store_true",
                   help="ignore the depth columns (to measure what depth adds)")
    p.add_argument("--key-column", help="weights table column naming the image")
    p.add_argument("--weight-column", help="weights table column holding the weight")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    return p.parse_args(argv)


@exit_on_user_error
def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logger(name="grape_instances")
    report = fit_weight_model(args.measurements, args.weights, args.out, folds=args.folds,
                              seed=args.seed, use_depth=not args.no_depth,
                              overwrite=args.overwrite, key_column=args.key_column,
                              weight_column=args.weight_column)
    print(write_report_summary(report))


if __name__ == "__main__":
    main()
