"""The weight model: join weighed bunches to measurements, cross-validate, save, apply."""

from __future__ import annotations

import csv
import importlib.util
import json

import cv2
import numpy as np
import pytest

from grape_instances.core.errors import GrapeInputError
from grape_instances.measure.table import BUNCH_COLUMNS
from grape_instances.measure.weight import WeightModel, fit_weight_model
from tests.helpers import REPO, run_tool
from tests.measure_helpers import F, read_csv, write_scene


def write_table(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=BUNCH_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def known_law(n=40, seed=0):
    """Bunches at 400..900 mm whose weight follows their metric volume (+-3 %): pixel area
    alone cannot tell a near small bunch from a far big one."""
    rng = np.random.default_rng(seed)
    rows, weights = [], []
    for i in range(n):
        area_cm2 = rng.uniform(20, 120)
        volume = 0.75 * area_cm2**1.5 * rng.uniform(0.97, 1.03)
        z = rng.uniform(400, 900)
        rows.append({"image": f"v{i % 3}/img_{i:03d}.jpg", "folder": f"v{i % 3}", "instance": 1,
                     "area_px": round(area_cm2 * 100 * (F / z) ** 2),
                     "length_px": rng.uniform(50, 90), "width_px": rng.uniform(30, 60),
                     "perimeter_px": rng.uniform(100, 300), "compactness": rng.uniform(0.5, 0.9),
                     "hsv_h_deg": rng.uniform(0, 360), "hsv_s": rng.uniform(0, 1),
                     "hsv_v": rng.uniform(0, 1), "pieces": 1, "median_depth_mm": z,
                     "area_cm2": area_cm2, "length_cm": 1, "width_cm": 1, "volume_cm3": volume})
        weights.append(0.62 * volume)
    return rows, weights


@pytest.fixture
def law(tmp_path):
    rows, grams = known_law()
    write_table(tmp_path / "table.csv", rows)
    with open(tmp_path / "weights.csv", "w") as f:
        f.write("image,weight_g\n")
        for row, g in zip(rows, grams, strict=True):
            f.write(f"{row['image'].split('/')[1]},{g:.2f}\n")
    return tmp_path, rows, grams


@pytest.mark.slow
def test_fit_weight_recovers_a_known_law(law):
    root, rows, grams = law
    proc = run_tool("fit_weight.py", "--measurements", str(root / "table.csv"), "--weights",
                    str(root / "weights.csv"), "--out", str(root / "model"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((root / "model" / "report.json").read_text())
    assert report["bunches"] == 40 and report["folds"] == 5
    linear = report["models"]["linear_area1.5_volume"]
    assert linear["features"] == ["area_cm2", "volume_cm3"]
    assert linear["r2"] > 0.97 and linear["mape_pct"] < 5 and len(linear["r2_folds"]) == 5
    assert report["models"]["random_forest"]["r2"] > 0.7
    assert report["best"] == "linear_area1.5_volume"
    assert "| linear_area1.5_volume (chosen) |" in proc.stdout
    plot = cv2.imread(str(root / "model" / "pred_vs_measured.png"))
    assert plot is not None and plot.shape[0] > 300
    cv = read_csv(root / "model" / "cv_predictions.csv")
    assert len(cv) == 40 and float(cv[0]["weight_g"]) == pytest.approx(grams[0], abs=0.01)
    model = WeightModel(root / "model")
    assert model.features == ["area_cm2", "volume_cm3"] and model.needs_depth
    pred = model.predict([{k: float(v) for k, v in r.items() if k in model.features}
                          for r in rows[:5]] + [{"area_cm2": 3.0}])
    assert pred[:5] == pytest.approx(grams[:5], rel=0.05)
    assert pred[5] is None  # no volume: no weight
    # without depth only pixel features remain, and the law is lost in the distance
    flat = fit_weight_model(root / "table.csv", root / "weights.csv", root / "flat",
                            use_depth=False)
    assert flat["models"]["linear_area1.5"]["features"] == ["area_px"]
    assert "median_depth_mm" not in flat["models"]["random_forest"]["features"]
    assert flat["models"][flat["best"]]["r2"] < linear["r2"] - 0.2


def test_measure_fit_and_weigh_end_to_end(tmp_path, capsys):
    """Single bunches at several distances: measure with depth, fit, then measure again
    with the model; its weights match the truth and the totals add up."""
    rng = np.random.default_rng(1)
    scene = {f"{'AB'[i % 2]}/b{i:02d}.png": [dict(
        centre=(64, 48), a=float(rng.uniform(18, 40)), b=float(rng.uniform(10, 18)),
        angle=float(rng.uniform(-60, 60)), z_mm=float(rng.integers(400, 800)))]
        for i in range(12)}
    for bunch in scene.values():  # keep each bunch inside the 128 x 96 frame
        bunch[0]["a"] = min(bunch[0]["a"], 40)
    truth = write_scene(tmp_path, scene)
    spec = importlib.util.spec_from_file_location("measure_tool", REPO / "tools" / "measure.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    base = ["--coco", str(tmp_path / "masks.json"), "--images", str(tmp_path / "images"),
            "--depth", str(tmp_path / "depth"), "--fx", str(F)]
    tool.main(base + ["--out", str(tmp_path / "m.csv")])
    with open(tmp_path / "w.csv", "w") as f:
        f.write("image,weight_g\n" + "".join(f"{n.split('/')[1]},{t[0]['weight_g']:.3f}\n"
                                             for n, t in truth.items()))
    report = fit_weight_model(tmp_path / "m.csv", tmp_path / "w.csv", tmp_path / "model",
                              folds=3)
    assert report["models"]["linear_area1.5_volume"]["r2"] > 0.95
    tool.main(base + ["--weight-model", str(tmp_path / "model"), "--out",
                      str(tmp_path / "t.csv")])
    rows = read_csv(tmp_path / "t.csv")
    for row in rows:
        assert float(row["weight_g"]) == pytest.approx(truth[row["image"]][0]["weight_g"],
                                                       rel=0.1)
    images = read_csv(tmp_path / "t_images.csv")
    assert [float(i["weight_g"]) for i in images] == [float(r["weight_g"]) for r in rows]
    folders = read_csv(tmp_path / "t_folders.csv")
    assert [f["folder"] for f in folders] == ["A", "B"]
    assert float(folders[0]["weight_g"]) == pytest.approx(
        sum(float(r["weight_g"]) for r in rows if r["folder"] == "A"), abs=0.01)
    # a depth model without depth: one line before any work
    with pytest.raises(SystemExit):
        tool.main(["--coco", str(tmp_path / "masks.json"), "--images",
                   str(tmp_path / "images"), "--weight-model", str(tmp_path / "model"),
                   "--out", str(tmp_path / "u.csv")])
    assert "uses depth features" in capsys.readouterr().err


def test_dataset4_weights_table_in_kilograms(law):
    root, rows, grams = law
    with open(root / "d4.csv", "w") as f:
        f.write("Sample ID;Bunch weight (kg)\n")
        for row, g in zip(rows, grams, strict=True):
            stem = row["image"].split("/")[1][:-4]
            f.write(f"{stem.upper()}_rgb;{g / 1000:.5f}\n".replace(".", ","))
    report = fit_weight_model(root / "table.csv", root / "d4.csv", root / "m", folds=4)
    assert report["bunches"] == 40 and report["folds"] == 4
    assert report["models"]["linear_area1.5_volume"]["r2"] > 0.97


def test_bad_tables_are_one_line_errors(law, capsys):
    root, rows, grams = law
    spec = importlib.util.spec_from_file_location("fit_tool", REPO / "tools" / "fit_weight.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    (root / "w.csv").write_text("image,weight_g\nimg_000.jpg,heavy\n")
    with pytest.raises(SystemExit) as e:
        tool.main(["--measurements", str(root / "table.csv"), "--weights", str(root / "w.csv"),
                   "--out", str(root / "m")])
    err = capsys.readouterr().err
    assert e.value.code == 1 and "Traceback" not in err
    assert err.count("error:") == 1 and "w.csv: row 2: weight 'heavy' is not a number" in err

    def fails(weights_text=None, table_rows=None, match="", **kw):
        if weights_text is not None:
            (root / "w.csv").write_text(weights_text)
        if table_rows is not None:
            write_table(root / "t.csv", table_rows)
        with pytest.raises(GrapeInputError, match=match) as e:
            fit_weight_model(root / ("t.csv" if table_rows is not None else "table.csv"),
                             root / ("w.csv" if weights_text is not None else "weights.csv"),
                             root / "m", **kw)
        assert "\n" not in str(e.value)

    fails("image,weight_g\nimg_000.jpg,10\nnope.jpg,12\n", match="'nope' is not in")
    fails("image,weight_g\nimg_000.jpg,\n", match="no row of .* has a weight")
    fails("image,weight_g\nimg_000.jpg,10\nimg_001.jpg,12\n", match="2 weighed bunch.*fewer "
          "than the 5")
    fails(table_rows=[{**rows[0], "instance": 1}, {**rows[0], "instance": 2}, *rows[1:]],
          match="matches 2 bunches of image v0/img_000.jpg")
    (root / "t.csv").write_text("picture,area\nimg_000.jpg,3\n")
    with pytest.raises(GrapeInputError, match="missing column.*image, area_px"):
        fit_weight_model(root / "t.csv", root / "weights.csv", root / "m")
    fails(match="at least 2 folds", folds=1)
    (root / "m").mkdir()
    (root / "m" / "keep.txt").write_text("mine")
    fails(match="not empty")
    with pytest.raises(GrapeInputError, match="output folder holds the input"):
        fit_weight_model(root / "table.csv", root / "weights.csv", root)
    assert (root / "m" / "keep.txt").read_text() == "mine"


def test_seven_bunches_in_five_folds_fit_without_naming_a_temporary_folder(law):
    """Folds of one bunch have no R² (NaN): written as null, not refused naming the
    temporary folder the model is written in (issue 18's probe)."""
    root, rows, grams = law
    write_table(root / "t7.csv", rows[:7])
    (root / "w7.csv").write_text("".join((root / "weights.csv").read_text().splitlines(True)[:8]))
    report = fit_weight_model(root / "t7.csv", root / "w7.csv", root / "m7", folds=5)
    assert report["bunches"] == 7
    saved = json.loads((root / "m7" / "report.json").read_text())
    assert None in saved["models"][saved["best"]]["r2_folds"]
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")]


def test_a_negative_measurement_is_refused_naming_its_row(law):
    root, rows, _ = law
    write_table(root / "t.csv", [{**rows[0], "area_px": -250}, *rows[1:]])
    with pytest.raises(GrapeInputError, match=r"t.csv: row 2: area_px -250 is negative"):
        fit_weight_model(root / "t.csv", root / "weights.csv", root / "m")
    assert not (root / "m").exists()
