#!/usr/bin/env python
"""``make peer-real``: the real-photo recipe against Ultralytics YOLO11n-seg / YOLO11s-seg.

    python tools/peer_real.py --recipe-dir output/real --output-dir output/peer_real

Trains each YOLO model from its YAML (random weights) on the training part of `make real`'s
split for the recipe's training time (its OUTPUT_DIR/training_time.json, or --budget-minutes),
scores it and the recipe's weights on the validation part with the project's evaluators, and
times both whole pipelines on the validation photos at 1024 px. Needs the optional extra
(AGPL-3.0): make install-peers. Writes peer_real.json and peer_real.md in --output-dir.
"""

import argparse
import os
import shlex
import sys

from grape_instances.core import paths
from grape_instances.core.errors import exit_on_user_error


@exit_on_user_error
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", default=paths.WGISD_ROOT, help="WGISD root (data/, *_masked.txt)")
    p.add_argument("--data-dir", default=paths.REAL_DATA_DIR,
                   help="make real's --data-dir: split/wgisd_train_{train,val}.json")
    p.add_argument("--recipe-dir", default="output/real",
                   help="make real's --output-dir: training_time.json gives the budget")
    p.add_argument("--weights", help="the recipe's weights (default: RECIPE_DIR/model_final.pth)")
    p.add_argument("--output-dir", default="output/peer_real")
    p.add_argument("--models", nargs="+", default=["yolo11n-seg", "yolo11s-seg"],
                   help="Ultralytics model YAML names (built with random weights)")
    p.add_argument("--budget-minutes", type=float,
                   help="training wall time per model (default: the recipe's)")
    p.add_argument("--epochs", type=int,
                   help="train exactly this many epochs instead of the time budget (smokes)")
    p.add_argument("--imgsz", type=int, default=1024, help="YOLO input size (train and test)")
    p.add_argument("--batch", type=int, default=4, help="YOLO batch (the recipe's is 4)")
    p.add_argument("--threads", type=int, default=2, help="torch threads, both sides")
    p.add_argument("--scores", type=float, nargs="+", default=[0.25, 0.5],
                   help="score thresholds of P / R / F1 and the count")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best",
                   help="YOLO weights to score: best on validation (Ultralytics' pick) or last")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retrain", action="store_true",
                   help="train again even when --output-dir holds a finished run")
    p.add_argument("--config-file", default="configs/mask_rcnn_grapes_cpu_real.yaml")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="recipe config overrides: KEY VALUE")
    args = p.parse_args(argv)
    from detectron2.utils.logger import setup_logger

    from grape_instances.experiments.peer_real import run_peer_real

    setup_logger(name="grape_instances")
    weights = args.weights or os.path.join(args.recipe_dir, "model_final.pth")
    summary = run_peer_real(
        args.root, args.data_dir, args.recipe_dir, weights, args.output_dir,
        models=args.models, budget_minutes=args.budget_minutes, epochs=args.epochs,
        imgsz=args.imgsz, batch=args.batch, threads=args.threads, scores=args.scores,
        seed=args.seed, checkpoint=args.checkpoint, config_file=args.config_file,
        retrain=args.retrain, opts=args.opts)
    budget = summary["budget"]
    print("\n=== the recipe against Ultralytics YOLO-seg (validation part) ===")
    print(summary["table"])
    print(f"\ntraining budget: {budget['seconds'] / 60:.1f} min ({budget['source']})"
          + (f"; {budget['note']}" if "note" in budget else ""))
    print(f"speed: whole pipeline over {summary['speed_photos']}, {args.threads} threads; "
          f"recipe at score >= {summary['recipe_predict_score']}, YOLO at its default 0.25")
    print(f"results: {os.path.join(args.output_dir, 'peer_real.json')}, peer_real.md")
    print("command: " + shlex.join([os.path.relpath(sys.argv[0]) if argv is None
                                    else "tools/peer_real.py", *(argv or sys.argv[1:])]))


if __name__ == "__main__":
    main()
