"""Issue 15's ablation table: finished ``make real`` runs (each folder's
``real_summary.json``), one row per run and, for every variant trained with more than one
seed, the mean ± sample standard deviation over its seeds. The README's ablation table is
this module's output, so it can be regenerated from the run folders.

A run is ``(variant, seed, folder)``: the seed is given because ``real_summary.json`` does
not record the config's overrides. With a score threshold, the P / R / F1, count and
false-positive columns come from ``tools/fp_kinds.py``'s rows at that threshold, written to
``FOLDER/grid`` (containment off; the config as it is, or one of its inference variants,
e.g. ``flip`` for ``--variant flip "TEST.AUG.ENABLED True ..."``): runs scored at another
``TEST.F1_SCORE_THRESH`` are then compared at one threshold.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..core.errors import GrapeInputError
from ..core.fileio import read_json
from ..core.tables import markdown_table
from .compare import mean_std

#: (column, header, format): the whole-photo scores of ``make real`` on the validation part.
COLUMNS = [
    ("segm_ap", "segm AP", "{:.1f}"),
    ("segm_ap50", "AP50", "{:.1f}"),
    ("segm_ap75", "AP75", "{:.1f}"),
    ("p50", "P@0.5", "{:.1f}"),
    ("r50", "R@0.5", "{:.1f}"),
    ("f1_30", "F1@0.3", "{:.1f}"),
    ("f1_50", "F1@0.5", "{:.1f}"),
    ("f1_80", "F1@0.8", "{:.1f}"),
    ("count_mae", "count MAE", "{:.2f}"),
    ("fp_fragment", "FP frag.", "{:.0f}"),
    ("fp_duplicate", "FP dup.", "{:.0f}"),
    ("fp_merge", "FP merge", "{:.0f}"),
    ("fp_background", "FP bg.", "{:.0f}"),
    ("train_min", "train min", "{:.1f}"),
]


#: Where :func:`run_row` reads a run's scores at another threshold (fp_kinds.py's output).
GRID = Path("grid") / "fp_kinds.json"


def grid_scores(folder: str | os.PathLike, score: float, inference: str = "plain") -> dict:
    """The row of ``FOLDER/grid/fp_kinds.json`` at ``score``, containment off, of the
    inference variant ``inference`` (``plain``: the config as it is)."""
    path = Path(folder) / GRID
    if not path.is_file():
        raise GrapeInputError(
            f"{path}: not found; run tools/fp_kinds.py --weights {folder}/model_final.pth "
            f"--containment 0 --score {score} --output-dir {path.parent} first")
    for row in read_json(path, expect=list):
        if (isinstance(row, dict) and row.get("variant") == inference
                and row.get("containment") == 0 and row.get("score") == score):
            return row
    raise GrapeInputError(f"{path}: no row of the {inference} variant at score {score} with "
                          "containment 0")


def run_row(variant: str, seed: int, folder: str | os.PathLike,
            score: float | None = None, inference: str = "plain") -> dict:
    """One run's whole-photo scores (``None`` where its summary lacks a figure); with
    ``score``, those of :func:`grid_scores` at that threshold for the inference variant
    ``inference`` (AP does not depend on the threshold)."""
    path = Path(folder) / "real_summary.json"
    summary = read_json(path, expect=dict)
    try:
        whole = summary["results"]["whole"]
    except (KeyError, TypeError):
        raise GrapeInputError(f"{path}: no whole-photo results (not a `make real` summary)"
                              ) from None
    if score is not None:
        whole = grid_scores(folder, score, inference)
    segm, inst = whole.get("segm", {}), whole.get("instance", {})
    fp, count = whole.get("fp_kinds", {}), whole.get("count", {})
    timings = summary.get("timings", {})
    # A resumed run's training time covers only its last part: no whole-run figure.
    trained_whole = summary.get("resumed_from_iteration", 0) == 0
    train_s = timings.get("train_s") if trained_whole else None
    return {
        "variant": variant, "seed": seed, "folder": str(folder), "score": score,
        "inference": inference,
        "iterations": summary.get("iterations"), "config": summary.get("config"),
        "segm_ap": segm.get("AP"), "segm_ap50": segm.get("AP50"), "segm_ap75": segm.get("AP75"),
        "p50": inst.get("P@50"), "r50": inst.get("R@50"), "f1_30": inst.get("F1@30"),
        "f1_50": inst.get("F1@50"), "f1_80": inst.get("F1@80"), "count_mae": count.get("MAE"),
        "fp_fragment": fp.get("fragment"), "fp_duplicate": fp.get("duplicate"),
        "fp_merge": fp.get("merge"), "fp_background": fp.get("background"),
        "train_min": train_s / 60 if train_s is not None else None,
    }


def variant_means(rows: Sequence[dict]) -> list[dict]:
    """Per variant with two or more seeds: each column's mean and its ``_std``, in the order
    the variants first appear."""
    by_variant: dict[str, list[dict]] = {}
    for row in rows:
        by_variant.setdefault(row["variant"], []).append(row)
    means = []
    for variant, runs in by_variant.items():
        if len(runs) < 2:
            continue
        mean = {"variant": variant, "seeds": len(runs)}
        for key, _, _ in COLUMNS:
            mean[key], mean[f"{key}_std"] = mean_std([r[key] for r in runs])
        means.append(mean)
    return means


def _cell(value: float | None, std: float | None, fmt: str) -> str:
    if value is None:
        return ""
    return fmt.format(value) + (f" ± {fmt.format(std)}" if std is not None else "")


def ablation_table(rows: Sequence[dict]) -> str:
    """The runs, then each variant's mean ± std over seeds (bold label), as Markdown."""
    headers = ["variant", "seed", *(h for _, h, _ in COLUMNS)]
    body = [[r["variant"], str(r["seed"]), *(_cell(r[k], None, f) for k, _, f in COLUMNS)]
            for r in rows]
    body += [[f"**{m['variant']}, mean of {m['seeds']}**", "",
              *(_cell(m[k], m[f"{k}_std"], f) for k, _, f in COLUMNS)]
             for m in variant_means(rows)]
    return markdown_table(headers, body, ["left", "right", *["right"] * len(COLUMNS)])
