#!/usr/bin/env python
"""Issue 15's ablation table from finished `make real` runs: one row per run (whole photo,
validation part), then each variant's mean ± standard deviation over its seeds.

    python tools/real_ablation.py --output output/real_ablation \\
        --run recipe 0 output/real --run recipe 1 output/real_seed1 \\
        --run copy-paste 0 output/real_cp [--score 0.6] \\
        --run "recipe, flipped" 0 output/real flip   # fp_kinds.py's --variant flip rows

Writes OUT.md (the table) and OUT.json (the rows), and prints the table.
"""

import argparse

from grape_instances.core.errors import GrapeInputError, exit_on_user_error
from grape_instances.core.fileio import atomic_open, write_json_atomic
from grape_instances.experiments.real_ablation import ablation_table, run_row, variant_means


@exit_on_user_error
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", nargs="+", action="append", required=True,
                   metavar="VARIANT SEED FOLDER [INFERENCE]",
                   help="a finished `make real` output folder, its variant label and seed; "
                        "with --score, INFERENCE picks the rows of that tools/fp_kinds.py "
                        "--variant (default: plain, the config as it is)")
    p.add_argument("--score", type=float, default=None,
                   help="P / R / F1, count and false positives at this score threshold, from "
                        "tools/fp_kinds.py's FOLDER/grid/fp_kinds.json (default: the run's "
                        "own TEST.F1_SCORE_THRESH, its real_summary.json)")
    p.add_argument("--output", default=None, help="write OUTPUT.md and OUTPUT.json")
    args = p.parse_args(argv)
    rows = []
    for run in args.run:
        if len(run) not in (3, 4):
            raise GrapeInputError(f"--run {' '.join(run)}: give VARIANT SEED FOLDER [INFERENCE]")
        variant, seed, folder, *inference = run
        if not seed.lstrip("-").isdigit():
            raise GrapeInputError(f"--run {variant} {seed} {folder}: the seed must be an integer")
        if inference and args.score is None:
            raise GrapeInputError(f"--run ... {inference[0]}: an inference variant's rows are "
                                  "read at a --score threshold")
        rows.append(run_row(variant, int(seed), folder, args.score, *inference))
    table = ablation_table(rows)
    if args.output:
        with atomic_open(f"{args.output}.md") as f:
            f.write(table + "\n")
        write_json_atomic(f"{args.output}.json", {"runs": rows, "means": variant_means(rows)})
    print(table)


if __name__ == "__main__":
    main()
