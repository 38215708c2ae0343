"""Bunch weight from measurements: fit, cross-validate, save and apply a regressor.

Why two models: a bunch is roughly a solid of fixed density, so its weight grows like
area^1.5 (pixel area, or metric area when depth gives it) and like its volume; a linear
model on those two is hard to overfit and extrapolates sensibly. A random forest on every
numeric feature can also use shape, colour (variety) and occlusion, but only within the
range it has seen. Both are scored by k-fold cross-validation (seeded), the one with the
best cross-validated R² is refitted on all weighed bunches and saved with its feature list.

Weights are joined to measurements by image, because a weighed bunch is photographed alone
(GrapesNet Dataset 4): a weights key (read by the GrapesNet importer's
:func:`~grape_instances.convert.grapesnet.read_weights`, so plain ``image,weight_g`` CSVs and
the Dataset-4 table both work) matches an image by its relative path, else its stem, else
one of its folders, with RGB tokens (``_rgb``, ``color``) removed as when pairing RGB-D files.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from ..convert.grapesnet import read_weights
from ..convert.grapesnet import strip_tokens as strip_tokens
from ..core.errors import GrapeInputError
from ..core.fileio import (
    atomic_open,
    check_not_input,
    path_exists,
    replacing_folder,
    write_json_atomic,
)
from ..core.warning_counter import WarningCounter
from .depth import METRIC_FIELDS

logger = logging.getLogger(__name__)

#: Numeric columns of the bunch table a model may use (ids, boxes and scores are not
#: properties of the bunch; ``weight_g`` would be a previous model's output).
FEATURES = ("area_px", "length_px", "width_px", "perimeter_px", "compactness", "hsv_h_deg",
            "hsv_s", "hsv_v", "pieces", *METRIC_FIELDS)
DEPTH_FEATURES = frozenset(METRIC_FIELDS)
RGB_TOKENS = ("rgb", "color", "colour")
MODEL_FILE, REPORT_FILE, PLOT_FILE, CV_FILE = ("model.joblib", "report.json",
                                               "pred_vs_measured.png", "cv_predictions.csv")


def area_power(x: np.ndarray) -> np.ndarray:
    """Raise the first column (an area) to 1.5: weight ~ volume ~ area^1.5."""
    x = np.array(x, dtype=np.float64, copy=True)
    x[:, 0] = np.abs(x[:, 0]) ** 1.5
    return x


def read_measurements(path: str | os.PathLike) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a bunch table written by tools/measure.py."""
    path = Path(path)
    if not path.is_file():
        raise GrapeInputError(f"{path}: measurements table not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = list(reader.fieldnames or [])
    except (UnicodeDecodeError, csv.Error) as e:
        raise GrapeInputError(f"{path}: not a readable CSV ({type(e).__name__})") from None
    missing = [c for c in ("image", "area_px") if c not in header]
    if missing:
        raise GrapeInputError(f"{path}: missing column(s) {', '.join(missing)} (a table "
                              "written by tools/measure.py has them)")
    if not rows:
        raise GrapeInputError(f"{path}: measurements table has no rows")
    return header, rows


def _number(value: str | None, path: Path, lineno: int, column: str) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        x = float(value)
    except ValueError:
        raise GrapeInputError(f"{path}: row {lineno}: {column} {value!r} is not a number"
                              ) from None
    return x if math.isfinite(x) else None


def image_keys(name: str) -> tuple[set[str], set[str], set[str]]:
    """How a weights key may name an image: relative path, stem, or a folder (normalised)."""
    parts = PurePosixPath(name).parts
    stem = PurePosixPath(name).stem
    folders = [strip_tokens(p, RGB_TOKENS) for p in parts[:-1]]
    full = "/".join(p for p in [*folders, strip_tokens(stem, RGB_TOKENS)] if p)
    return ({full}, {strip_tokens(stem, RGB_TOKENS), stem.lower()}, {f for f in folders if f})


def join_weights(rows: list[dict[str, str]], weights: dict[str, float],
                 measurements: str | os.PathLike, weights_path: str | os.PathLike
                 ) -> list[tuple[dict[str, str], float, int]]:
    """``(bunch row, grams, line number)`` for every weighed image; one-line errors for a
    key naming no image, several images, or an image with several bunches."""
    lines: dict[str, list[int]] = defaultdict(list)
    for lineno, row in enumerate(rows, start=2):
        lines[row["image"]].append(lineno)
    index: list[dict[str, set[str]]] = [defaultdict(set) for _ in range(3)]
    for image in lines:
        for level, keys in enumerate(image_keys(image)):
            for key in keys:
                index[level][key].add(image)
    joined, used = [], {}
    for key, grams in weights.items():
        images = next((index[level][key] for level in range(3) if index[level].get(key)), set())
        if not images:
            raise GrapeInputError(f"{weights_path}: weighed image {key!r} is not in "
                                  f"{measurements}")
        if len(images) > 1:
            shown = ", ".join(sorted(images)[:3])
            raise GrapeInputError(f"{weights_path}: {key!r} matches several images of "
                                  f"{measurements} ({shown}); name images by relative path")
        image = images.pop()
        if image in used:
            raise GrapeInputError(f"{weights_path}: image {image} is weighed twice ({used[image]!r}"
                                  f" and {key!r})")
        used[image] = key
        if len(lines[image]) > 1:
            raise GrapeInputError(f"{weights_path}: {key!r} matches {len(lines[image])} bunches "
                                  f"of image {image} in {measurements}; a weight needs one "
                                  "bunch per image (raise --confidence-threshold?)")
        lineno = lines[image][0]
        joined.append((rows[lineno - 2], grams, lineno))
    return joined


def feature_matrix(joined: list[tuple[dict[str, str], float, int]], header: Sequence[str],
                   path: Path, use_depth: bool) -> tuple[dict[str, np.ndarray], list[str]]:
    """Numeric columns usable as features (a number in every weighed row); and the
    columns left out because some rows lack them."""
    columns: dict[str, np.ndarray] = {}
    partial = []
    for name in FEATURES:
        if name not in header or (name in DEPTH_FEATURES and not use_depth):
            continue
        values = [_number(row.get(name), path, lineno, name) for row, _, lineno in joined]
        for (_, _, lineno), v in zip(joined, values, strict=True):
            if v is not None and v < 0:  # sizes, counts, colours and depths never are
                raise GrapeInputError(f"{path}: row {lineno}: {name} {v:g} is negative (no "
                                      "bunch measurement is; a damaged table?)")
        if all(v is None for v in values):
            continue
        if any(v is None for v in values):
            partial.append(name)
            continue
        columns[name] = np.array(values, dtype=np.float64)
    return columns, partial


def candidate_models(columns: dict[str, np.ndarray], seed: int) -> dict[str, tuple[list[str],
                                                                                   object]]:
    """``{name: (features, unfitted estimator)}``: the linear area^1.5 + volume model and
    the random forest on everything."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    metric = "area_cm2" in columns and "volume_cm3" in columns
    linear = ["area_cm2", "volume_cm3"] if metric else ["area_px"]
    return {
        "linear_area1.5_volume" if metric else "linear_area1.5": (
            linear, make_pipeline(FunctionTransformer(area_power), LinearRegression())),
        "random_forest": (list(columns), RandomForestRegressor(
            n_estimators=200, min_samples_leaf=2, random_state=seed, n_jobs=1)),
    }


def _scores(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, r2_score

    return {"r2": float(r2_score(y, pred)), "mae_g": float(mean_absolute_error(y, pred)),
            "mape_pct": float(np.mean(np.abs(pred - y) / y) * 100)}


def _check_out_dir(out: Path, inputs: Sequence[Path], overwrite: bool) -> None:
    check_not_input(out, inputs, folder=True)
    if path_exists(out) and not out.is_dir():
        raise GrapeInputError(f"{out}: --out exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise GrapeInputError(f"{out}: output folder exists and is not empty (pass --overwrite "
                              "to replace it)")


def fit_weight_model(measurements: str | os.PathLike, weights: str | os.PathLike,
                     out: str | os.PathLike, *, folds: int = 5, seed: int = 0,
                     use_depth: bool = True, overwrite: bool = False,
                     key_column: str | None = None, weight_column: str | None = None) -> dict:
    """Fit, cross-validate and save a weight model into ``out``; returns the report."""
    from sklearn.base import clone
    from sklearn.model_selection import KFold, cross_val_predict

    measurements, weights, out = Path(measurements), Path(weights), Path(out)
    if folds < 2:
        raise GrapeInputError(f"--folds {folds}: cross-validation needs at least 2 folds")
    _check_out_dir(out, [measurements, weights], overwrite)
    header, rows = read_measurements(measurements)
    warnings = WarningCounter()
    table = read_weights(weights, key_column, weight_column, warnings, RGB_TOKENS)
    warnings.log(logger, prefix="weights: ")
    if not table:
        raise GrapeInputError(f"{weights}: no row of the weights table has a weight")
    joined = join_weights(rows, table, measurements, weights)
    if len(joined) < folds:
        raise GrapeInputError(f"{weights}: {len(joined)} weighed bunch(es), fewer than the "
                              f"{folds} cross-validation folds (--folds)")
    columns, partial = feature_matrix(joined, header, measurements, use_depth)
    if "area_px" not in columns:
        raise GrapeInputError(f"{measurements}: area_px is empty in some weighed rows")
    if partial:
        logger.warning("features left out because some weighed bunches lack them (no depth "
                       "reading?): %s", ", ".join(partial))
    y = np.array([grams for _, grams, _ in joined])
    images = [row["image"] for row, _, _ in joined]
    kfold = KFold(n_splits=folds, shuffle=True, random_state=seed)
    report: dict = {"measurements": str(measurements), "weights": str(weights),
                    "bunches": len(joined), "folds": folds, "seed": seed,
                    "depth_features": use_depth and any(c in DEPTH_FEATURES for c in columns),
                    "features_left_out": partial, "models": {}}
    cv_pred: dict[str, np.ndarray] = {}
    for name, (features, estimator) in candidate_models(columns, seed).items():
        x = np.column_stack([columns[f] for f in features])
        pred = cross_val_predict(estimator, x, y, cv=kfold)
        fold_r2 = [_scores(y[test], pred[test])["r2"] for _, test in kfold.split(x)]
        report["models"][name] = {"features": features, **_scores(y, pred),
                                  "r2_folds": fold_r2}
        cv_pred[name] = pred
        logger.info("%s: CV R2 %.3f, MAE %.1f g, MAPE %.1f %%", name,
                    report["models"][name]["r2"], report["models"][name]["mae_g"],
                    report["models"][name]["mape_pct"])
    best = max(report["models"], key=lambda n: report["models"][n]["r2"])
    report["best"] = best
    features, estimator = candidate_models(columns, seed)[best]
    final = clone(estimator).fit(np.column_stack([columns[f] for f in features]), y)
    import joblib
    import sklearn

    bundle = {"format": 1, "name": best, "features": features, "estimator": final,
              "sklearn_version": sklearn.__version__, "cv": report["models"][best]}
    with replacing_folder(out) as tmp:
        joblib.dump(bundle, tmp / MODEL_FILE)
        write_json_atomic(tmp / REPORT_FILE, report, indent=2, nan_as_null=True)  # R² of a
        # one-bunch fold is undefined (NaN): written as null
        with atomic_open(tmp / CV_FILE, "w") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["image", "weight_g", *(f"cv_{n}" for n in cv_pred)])
            for i, image in enumerate(images):
                writer.writerow([image, f"{y[i]:.6g}",
                                 *(f"{cv_pred[n][i]:.6g}" for n in cv_pred)])
        plot_cv(y, cv_pred, best, report, tmp / PLOT_FILE)
    report["out"] = str(out)
    return report


def plot_cv(y: np.ndarray, cv_pred: dict[str, np.ndarray], best: str, report: dict,
            path: Path) -> None:
    """Cross-validated predicted against measured weight, the chosen model in front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    hi = float(max(y.max(), *(p.max() for p in cv_pred.values()))) * 1.05
    ax.plot([0, hi], [0, hi], color="0.6", lw=1, ls="--", label="predicted = measured")
    for name in sorted(cv_pred, key=lambda n: n == best):
        m = report["models"][name]
        ax.scatter(y, cv_pred[name], s=14, alpha=0.9 if name == best else 0.35,
                   label=f"{name}: R² {m['r2']:.3f}, MAPE {m['mape_pct']:.1f} %")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel("measured weight (g)")
    ax.set_ylabel(f"predicted weight (g), {report['folds']}-fold cross-validated")
    ax.set_title(f"{report['bunches']} weighed bunches; chosen: {best}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


class WeightModel:
    """A saved weight model, applied to bunch rows (dicts of features)."""

    def __init__(self, path: str | os.PathLike) -> None:
        path = Path(path)
        file = path / MODEL_FILE if path.is_dir() else path
        if not file.is_file():
            raise GrapeInputError(f"{path}: no weight model here (expected {MODEL_FILE}, "
                                  "written by tools/fit_weight.py)")
        import joblib

        try:
            bundle = joblib.load(file)
        except Exception as e:  # pickle raises many types for a foreign or damaged file
            raise GrapeInputError(f"{file}: cannot load the weight model ({type(e).__name__})"
                                  ) from None
        if not isinstance(bundle, dict) or bundle.get("format") != 1:
            raise GrapeInputError(f"{file}: not a weight model written by tools/fit_weight.py")
        missing = [k for k in ("name", "features", "estimator") if k not in bundle]
        if missing:
            raise GrapeInputError(f"{file}: weight model without {', '.join(missing)} (a "
                                  "damaged or foreign file; refit it with tools/fit_weight.py)")
        features = bundle["features"]
        if (not isinstance(features, (list, tuple)) or not features
                or not all(isinstance(f, str) and f in FEATURES for f in features)):
            raise GrapeInputError(f"{file}: weight model features {str(features)[:80]} are "
                                  f"not columns of the bunch table ({', '.join(FEATURES)})")
        if not callable(getattr(bundle["estimator"], "predict", None)):
            raise GrapeInputError(f"{file}: the weight model's estimator "
                                  f"({type(bundle['estimator']).__name__}) cannot predict")
        self.path = file
        self.name: str = str(bundle["name"])
        self.features: list[str] = list(features)
        self.estimator = bundle["estimator"]

    @property
    def needs_depth(self) -> bool:
        return any(f in DEPTH_FEATURES for f in self.features)

    def predict(self, rows: Sequence[dict]) -> list[float | None]:
        """Grams per row (never negative); None where a feature is missing (no depth)."""
        out: list[float | None] = [None] * len(rows)
        ok = [i for i, r in enumerate(rows) if all(r.get(f) is not None for f in self.features)]
        if ok:
            x = np.array([[float(rows[i][f]) for f in self.features] for i in ok])
            try:
                predicted = np.asarray(self.estimator.predict(x), dtype=np.float64).reshape(-1)
            except Exception as e:  # an estimator fitted on other columns, a foreign object
                raise GrapeInputError(f"{self.path}: the weight model cannot predict from its "
                                      f"features ({type(e).__name__}: {str(e)[:100]})"
                                      ) from None
            if len(predicted) != len(ok):
                raise GrapeInputError(f"{self.path}: the weight model gave {len(predicted)} "
                                      f"weights for {len(ok)} bunches")
            for i, grams in zip(ok, predicted, strict=True):
                out[i] = max(0.0, float(grams)) if math.isfinite(grams) else None
        return out


def write_report_summary(report: dict) -> str:
    """What tools/fit_weight.py prints: the cross-validation table and where the model went."""
    from ..core.tables import markdown_table

    rows = [[name + (" (chosen)" if name == report["best"] else ""), f"{m['r2']:.3f}",
             f"{m['mae_g']:.1f}", f"{m['mape_pct']:.1f}",
             ", ".join(m["features"]) if len(m["features"]) <= 3
             else f"{len(m['features'])} columns (report.json)"]
            for name, m in report["models"].items()]
    table = markdown_table(["model", "CV R²", "MAE (g)", "MAPE (%)", "features"], rows,
                           align=["left", "right", "right", "right", "left"])
    return (f"{report['bunches']} weighed bunches, {report['folds']}-fold cross-validation:\n"
            f"{table}\nsaved {report['best']} to {report['out']}")
