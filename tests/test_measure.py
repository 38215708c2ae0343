"""Per-bunch measurements: pixel geometry, metric size and volume from depth, the tables,
and tools/measure.py on COCO instances, COCO results and a model."""

from __future__ import annotations

import importlib.util
import json
import math

import cv2
import numpy as np
import pytest
import torch

from grape_instances.measure.depth import Camera, metric_features
from grape_instances.measure.geometry import mean_hsv, shape_features
from grape_instances.measure.sources import load_mask_file
from tests.helpers import DEMO_CONFIG, REPO, run_tool
from tests.measure_helpers import F, ellipse_mask, read_csv, write_scene

# --------------------------------------------------------------------------- geometry


def test_rectangle_geometry():
    mask = np.zeros((120, 200), bool)
    mask[10:60, 20:120] = True  # 100 x 50
    f = shape_features(mask)
    assert (f["box_x"], f["box_y"], f["box_w"], f["box_h"]) == (20, 10, 100, 50)
    assert f["area_px"] == 5000
    assert f["length_px"] == pytest.approx(100) and f["width_px"] == pytest.approx(50)
    assert f["perimeter_px"] == pytest.approx(2 * 99 + 2 * 49)
    assert f["compactness"] == pytest.approx(4 * math.pi * 5000 / 296**2)
    assert f["pieces"] == 1


def test_rotated_rectangle_geometry():
    mask = np.zeros((200, 200), np.uint8)
    box = cv2.boxPoints(((100, 100), (120, 40), 30)).round().astype(np.int32)
    cv2.fillPoly(mask, [box], 1)
    f = shape_features(mask)
    assert f["length_px"] == pytest.approx(120, abs=2.5)
    assert f["width_px"] == pytest.approx(40, abs=2.5)
    assert f["area_px"] == pytest.approx(4800, rel=0.05)
    assert f["box_w"] > 120  # the upright box is not the rotated one


def test_pieces_count_visible_parts_not_specks():
    mask = np.zeros((60, 60), bool)
    mask[5:20, 5:20] = True
    mask[30:50, 30:50] = True
    assert shape_features(mask)["pieces"] == 2
    mask[55, 55] = True  # a one-pixel speck is not a piece
    assert shape_features(mask)["pieces"] == 2
    disc = ellipse_mask((100, 100), (50, 50), 40, 40)
    assert shape_features(disc)["compactness"] == pytest.approx(0.9, abs=0.1)


def test_mean_hue_is_circular():
    """Red straddles hue 0: the mean of 350 and 10 degrees is 0, not 180."""
    hsv = np.zeros((1, 2, 3), np.uint8)
    hsv[0, :, 1:] = 255
    hsv[0, 0, 0], hsv[0, 1, 0] = round(350 / 360 * 256), round(10 / 360 * 256)
    bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR_FULL)
    h, s, v = mean_hsv(bgr, np.ones((1, 2), bool))
    assert min(h, 360 - h) < 2
    assert s == pytest.approx(1, abs=0.02) and v == pytest.approx(1, abs=0.02)


# --------------------------------------------------------------------------- depth


def test_metric_size_of_a_plane_at_known_depth():
    mask = np.zeros((120, 200), bool)
    mask[10:60, 20:120] = True
    depth = np.full(mask.shape, 1000, np.uint16)
    depth[10:20, 20:30] = 0  # no reading: ignored, not a depth of 0
    m = metric_features(mask, depth, 1000.0, 1000.0)
    assert m["median_depth_mm"] == 1000
    assert m["length_cm"] == pytest.approx(10) and m["width_cm"] == pytest.approx(5)
    assert m["area_cm2"] == pytest.approx(50)
    # tall pixels (fy = fx / 2: one pixel is 1 mm wide and 2 mm tall) -> 10 x 10 cm
    m = metric_features(mask, depth, 1000.0, 500.0)
    assert m["length_cm"] == pytest.approx(10) and m["width_cm"] == pytest.approx(10)
    assert m["area_cm2"] == pytest.approx(100)
    # a field of view of 90 degrees: f = width / 2
    assert Camera(fov_deg=90).focal(200) == pytest.approx((100, 100))


@pytest.mark.parametrize("a, b, angle, fy_over_fx", [
    (40, 40, 0, 1.0),     # disc -> sphere
    (60, 25, 30, 1.0),    # rotated ellipse -> prolate spheroid about its long axis
    (25, 60, -70, 1.0),   # long axis near vertical
    (60, 50, 0, 2.0),     # anisotropic pixels: 50 px tall at fy = 2 fx is 25 px of x size
])
def test_volume_is_the_solid_of_revolution(a, b, angle, fy_over_fx):
    z, fx = 800.0, 400.0
    fy = fx * fy_over_fx
    mask = ellipse_mask((200, 200), (100, 100), a, b, angle)
    depth = np.where(mask, z, 0).astype(np.uint16)
    m = metric_features(mask, depth, fx, fy)
    # semi-axes in mm: along x-ish scaled by z / fx; the y extent by z / fy
    if fy_over_fx == 1.0:
        long_mm, short_mm = max(a, b) * z / fx, min(a, b) * z / fx
    else:
        long_mm, short_mm = a * z / fx, b * z / fy
    expected = 4 / 3 * math.pi * long_mm * short_mm**2 / 1000
    assert m["volume_cm3"] == pytest.approx(expected, rel=0.03)
    assert m["length_cm"] == pytest.approx(2 * long_mm / 10, rel=0.03)


# --------------------------------------------------------------------------- the tool

SCENE = {
    "vineA/a1.png": [dict(centre=(40, 48), a=30, b=15, angle=20, z_mm=500),
                     dict(centre=(100, 40), a=12, b=10, z_mm=1000)],
    "vineA/a2.png": [dict(centre=(60, 50), a=25, b=20, z_mm=500)],
    "vineB/b1.png": [dict(centre=(60, 50), a=20, b=12, z_mm=500, no_depth=True)],
}


@pytest.fixture
def scene(tmp_path):
    truth = write_scene(tmp_path, SCENE)
    return tmp_path, truth


def load_tool():
    spec = importlib.util.spec_from_file_location("measure_tool", REPO / "tools" / "measure.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def main_error(capsys, argv) -> str:
    """Run tools/measure.py in this process; its one error line (exit 1, no traceback)."""
    with pytest.raises(SystemExit) as e:
        load_tool().main(argv)
    assert e.value.code == 1
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1
    return lines[0]


def test_measure_coco_with_depth_end_to_end(scene, capsys):
    root, truth = scene
    out = root / "out" / "table.csv"
    proc = run_tool("measure.py", "--coco", str(root / "masks.json"), "--images",
                    str(root / "images"), "--depth", str(root / "depth"), "--fx", str(F),
                    "--fy", str(F), "--out", str(out), "--overlays", str(root / "overlays"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_csv(out)
    assert [(r["image"], r["instance"]) for r in rows] == [
        ("vineA/a1.png", "1"), ("vineA/a1.png", "2"), ("vineA/a2.png", "1"),
        ("vineB/b1.png", "1")]
    first = rows[0]
    assert first["score"] == "" and first["folder"] == "vineA" and first["pieces"] == "1"
    assert float(first["length_px"]) == pytest.approx(60, abs=2)
    assert float(first["length_cm"]) == pytest.approx(6, abs=0.2)  # 1 mm per px at 500 mm
    for row, t in zip(rows[:3], truth["vineA/a1.png"] + truth["vineA/a2.png"], strict=True):
        assert float(row["volume_cm3"]) == pytest.approx(t["volume_cm3"], rel=0.06)
    assert float(rows[1]["median_depth_mm"]) == 1000
    assert float(rows[1]["area_cm2"]) == pytest.approx(math.pi * 12 * 10 * 4 / 100, rel=0.05)
    # the bunch without any depth reading: pixel fields, empty metric fields, a warning
    assert rows[3]["area_px"] != "" and rows[3]["median_depth_mm"] == ""
    assert rows[3]["volume_cm3"] == "" and rows[3]["weight_g"] == ""
    assert "without any depth reading" in proc.stdout  # Detectron2's logger: stdout

    images = read_csv(root / "out" / "table_images.csv")
    assert [int(r["bunches"]) for r in images] == [2, 1, 1]
    assert int(images[0]["area_px"]) == int(rows[0]["area_px"]) + int(rows[1]["area_px"])
    assert float(images[0]["area_cm2"]) == pytest.approx(
        float(rows[0]["area_cm2"]) + float(rows[1]["area_cm2"]), abs=1e-3)
    assert images[2]["bunches_without_depth"] == "1" and images[2]["area_cm2"] == ""
    folders = read_csv(root / "out" / "table_folders.csv")
    assert [(f["folder"], f["images"], f["bunches"]) for f in folders] == [
        ("vineA", "2", "3"), ("vineB", "1", "1")]
    assert float(folders[0]["bunches_per_image"]) == 1.5
    assert int(folders[0]["area_px"]) == sum(int(r["area_px"]) for r in rows[:3])
    summary = json.loads((root / "out" / "table_images.json").read_text())
    assert summary["total"]["bunches"] == 4 and summary["total"]["images"] == 3
    assert sum(summary["warnings"].values()) == 1
    overlay = cv2.imread(str(root / "overlays" / "vineA__a1.png"))
    assert overlay.shape == (96, 128, 3)
    plain = cv2.imread(str(root / "images" / "vineA" / "a1.png"))
    inside = ellipse_mask((96, 128), (40, 48), 30, 15, 20)
    assert (overlay[inside] > 200).all(axis=1).any()  # the white "#1" on the bunch
    assert not (plain[inside] > 200).all(axis=1).any()
    # the same run again refuses to overwrite the tables; --overwrite replaces them
    base = ["--coco", str(root / "masks.json"), "--images", str(root / "images"), "--out",
            str(out)]
    assert "already exists" in main_error(capsys, base)
    load_tool().main(base + ["--overwrite"])
    assert read_csv(out)[0]["volume_cm3"] == ""  # no depth this time


def test_depth_from_coco_depth_file_and_camera_json(scene, capsys):
    root, _ = scene
    coco = json.loads((root / "masks.json").read_text())
    for img in coco["images"]:
        img["depth_file"] = "../depth/" + img["file_name"]  # relative to the image root
    (root / "depth.json").write_text(json.dumps(coco))
    (root / "camera.json").write_text(json.dumps({"fx": F, "fy": F, "cx": 64, "cy": 48}))
    # depth_file must stay inside --images: here it points outside, which is refused
    err = main_error(capsys, ["--coco", str(root / "depth.json"), "--images",
                              str(root / "images"), "--camera", str(root / "camera.json"),
                              "--out", str(root / "t.csv")])
    assert "outside" in err
    for img in coco["images"]:
        img["depth_file"] = "depth/" + img["file_name"]
    (root / "depth.json").write_text(json.dumps(coco))
    (root / "images" / "depth").symlink_to(root / "depth")
    load_tool().main(["--coco", str(root / "depth.json"), "--images", str(root / "images"),
                      "--camera", str(root / "camera.json"), "--out", str(root / "t.csv")])
    rows = read_csv(root / "t.csv")
    assert float(rows[0]["length_cm"]) == pytest.approx(6, abs=0.2)
    assert rows[3]["length_cm"] == ""


def test_results_lists_find_their_images(scene, capsys):
    root, _ = scene
    coco = json.loads((root / "masks.json").read_text())
    names = {img["id"]: img["file_name"] for img in coco["images"]}
    results = [{"image_id": a["image_id"], "category_id": 1, "score": s,
                "segmentation": a["segmentation"]}
               for a, s in zip(coco["annotations"], [0.6, 0.9, 0.8, 0.3], strict=True)]
    images = root / "images"
    # 1. by file_name, as tools/visualize.py writes it (a path from its command line)
    vis = [{**r, "file_name": f"/somewhere/else/{names[r['image_id']]}"} for r in results]
    (root / "vis.json").write_text(json.dumps(vis))
    kind, jobs = load_mask_file(root / "vis.json", images, threshold=0.5)
    assert kind == "results"
    # (only the images the predictions name: b1's one detection scored 0.3 and was dropped
    # from the list, so b1 was not predicted as far as the list says)
    vis = [d for d in vis if d["score"] >= 0.5]
    (root / "vis.json").write_text(json.dumps(vis))
    kind, jobs = load_mask_file(root / "vis.json", images, threshold=0.5)
    assert {j.name: [m.score for m in j.masks] for j in jobs} == {
        "vineA/a1.png": [0.9, 0.6], "vineA/a2.png": [0.8]}
    # 2. with the COCO JSON the predictions were made on
    (root / "results.json").write_text(json.dumps(results))
    _, jobs = load_mask_file(root / "results.json", images, root / "masks.json", 0.0)
    assert [len(j.masks) for j in jobs] == [2, 1, 1]
    # 3. image_id = file stem
    stems = [{**r, "image_id": names[r["image_id"]].split("/")[1][:-4]} for r in results]
    (root / "stems.json").write_text(json.dumps(stems))
    _, jobs = load_mask_file(root / "stems.json", images, threshold=0.7)
    assert [len(j.masks) for j in jobs] == [1, 1, 0]
    # without either, integer ids are not stems: one line
    err = main_error(capsys, ["--coco", str(root / "results.json"), "--images", str(images),
                              "--out", str(root / "t.csv")])
    assert "no image with that file stem" in err and "--coco-images" in err
    # the tool end to end on the visualize-style list: bunch ids follow the score
    load_tool().main(["--coco", str(root / "vis.json"), "--images", str(images),
                      "--out", str(root / "t.csv")])
    rows = read_csv(root / "t.csv")
    assert [(r["image"], r["instance"], r["score"]) for r in rows] == [
        ("vineA/a1.png", "1", "0.9"), ("vineA/a1.png", "2", "0.6"), ("vineA/a2.png", "1", "0.8")]
    assert [r["bunches"] for r in read_csv(root / "t_images.csv")] == ["2", "1"]


def test_unreadable_images_are_skipped_and_counted(scene, capsys):
    root, _ = scene
    (root / "images" / "vineA" / "a2.png").write_bytes(b"not a png")
    load_tool().main(["--coco", str(root / "masks.json"), "--images", str(root / "images"),
                      "--out", str(root / "t.csv")])
    assert [r["image"] for r in read_csv(root / "t_images.csv")] == ["vineA/a1.png",
                                                                      "vineB/b1.png"]
    summary = json.loads((root / "t_images.json").read_text())
    assert summary["warnings"] == {"unreadable images (skipped)": 1}
    for name in ("vineA/a1.png", "vineB/b1.png"):
        (root / "images" / name).unlink()
    err = main_error(capsys, ["--coco", str(root / "masks.json"), "--images",
                              str(root / "images"), "--out", str(root / "u.csv")])
    assert "no image could be measured" in err and "(and 2 more)" in err
    assert not (root / "u.csv").exists() and not (root / "u_images.csv").exists()


def test_bad_inputs_are_one_line_errors(scene, capsys):
    root, _ = scene
    base = ["--coco", str(root / "masks.json"), "--images", str(root / "images")]
    out = ["--out", str(root / "t.csv")]
    assert "depth needs the camera" in main_error(capsys, base + ["--depth", str(root / "depth")]
                                                  + out)
    (root / "bad.json").write_text("{oops")
    assert "not valid JSON" in main_error(capsys, ["--coco", str(root / "bad.json"), "--images",
                                                   str(root / "images")] + out)
    assert "file not found" in main_error(capsys, ["--coco", str(root / "none.json"),
                                                   "--images", str(root / "images")] + out)
    assert "must be a .csv" in main_error(capsys, base + ["--out", str(root / "t.txt")])
    assert "give one of" in main_error(capsys, base + ["--fx", "5", "--fov-deg", "60"] + out)
    depth = root / "depth" / "vineA" / "a2.png"
    cv2.imwrite(str(depth), np.zeros((10, 10), np.uint16))
    err = main_error(capsys, base + ["--depth", str(root / "depth"), "--fx", "500"] + out)
    assert "a2.png: depth image is 10x10 but its RGB image is 128x96" in err
    cv2.imwrite(str(depth), np.zeros((96, 128), np.uint8))
    err = main_error(capsys, base + ["--depth", str(root / "depth"), "--fx", "500"] + out)
    assert "a2.png: not a 16-bit" in err
    assert not (root / "t.csv").exists()  # nothing written by any failed run


def test_model_form_predicts_measures_and_labels(tmp_path, capsys):
    """The visualize flags: a model (random weights, saved as a checkpoint) predicts the
    masks; every predicted bunch gets a row, ids follow the score, overlays are drawn."""
    from detectron2.modeling import build_model

    from grape_instances.data.build import build_config

    torch.manual_seed(0)
    ckpt = tmp_path / "random.pth"
    torch.save({"model": build_model(build_config(DEMO_CONFIG)).state_dict()}, ckpt)
    rng = np.random.default_rng(0)
    for name in ("row1/p1.png", "row2/p2.png"):
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "in" / name), rng.integers(0, 255, (80, 96, 3), np.uint8))
    load_tool().main(["--config-file", DEMO_CONFIG, "--input",
                      str(tmp_path / "in" / "row*" / "*.png"), "--out",
                      str(tmp_path / "t.csv"), "--overlays", str(tmp_path / "ov"),
                      "--confidence-threshold", "0.0", "--opts", "MODEL.WEIGHTS", str(ckpt),
                      "INPUT.MIN_SIZE_TEST", "80", "INPUT.MAX_SIZE_TEST", "96"])
    rows = read_csv(tmp_path / "t.csv")
    images = read_csv(tmp_path / "t_images.csv")
    assert [r["image"] for r in images] == ["row1/p1.png", "row2/p2.png"]
    assert sum(int(r["bunches"]) for r in images) == len(rows) > 0
    for image in images:
        scores = [float(r["score"]) for r in rows if r["image"] == image["image"]]
        assert scores == sorted(scores, reverse=True)
    assert [f["folder"] for f in read_csv(tmp_path / "t_folders.csv")] == ["row1", "row2"]
    assert sorted(p.name for p in (tmp_path / "ov").iterdir()) == ["row1__p1.png",
                                                                   "row2__p2.png"]
    capsys.readouterr()


# ----------------------------------------------------------------------------- issue 18 probes
@pytest.mark.parametrize("camera, message", [
    (["--fx", "1e308"], "fx = 1e+308 px is outside"),  # every size would round to 0
    (["--fx", "1e-320"], "e-321 px is outside"),  # a denormal: sizes overflow
    (["--fx", "0.001"], "fx = 0.001 px is outside"),  # a tiny focal length
    (["--fx", "1e5", "--fy", "1e-5"], "fy = 1e-05 px is outside"),
    (["--fx", "2000", "--fy", "100"], "fx / fy = 2000 / 100 = 20"),  # no camera's pixels
    (["--fov-deg", "179.9999999"], "gives a focal length of"),
    ({"fx": True, "fy": 500}, "fx = true is not a number"),
    ({"fx": "500"}, 'fx = "500" is not a number'),
    ({"fx": 1e-320}, "e-321 px is outside"),
])
def test_degenerate_camera_intrinsics_are_one_line(scene, capsys, camera, message):
    root, _ = scene
    if isinstance(camera, dict):
        (root / "camera.json").write_text(json.dumps(camera))
        camera = ["--camera", str(root / "camera.json")]
    err = main_error(capsys, ["--coco", str(root / "masks.json"), "--images",
                              str(root / "images"), "--depth", str(root / "depth"), *camera,
                              "--out", str(root / "t.csv")])
    assert message in err, err
    assert not (root / "t.csv").exists()


def _png_header(width: int, height: int, bit_depth: int = 16, color_type: int = 0) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` and that holds no pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_depth_png_claiming_a_huge_size_is_one_line(scene, capsys):
    root, _ = scene
    (root / "depth" / "vineA" / "a1.png").write_bytes(_png_header(60000, 60000))
    err = main_error(capsys, ["--coco", str(root / "masks.json"), "--images",
                              str(root / "images"), "--depth", str(root / "depth"), "--fx",
                              "500", "--out", str(root / "t.csv")])
    assert "a1.png" in err and ("above the limit" in err or "decompression-bomb" in err), err


@pytest.mark.parametrize("bundle, message", [
    ({"format": 1, "features": ["area_px"]}, "without name, estimator"),
    ({"format": 1, "name": "x", "features": ["area_px"], "estimator": "not a model"},
     "estimator (str) cannot predict"),
    ({"format": 1, "name": "x", "features": ["no_such_column"], "estimator": None},
     "are not columns of the bunch table"),
])
def test_broken_weight_model_files_are_one_line(scene, capsys, bundle, message):
    import joblib

    root, _ = scene
    joblib.dump(bundle, root / "model.joblib")
    err = main_error(capsys, ["--coco", str(root / "masks.json"), "--images",
                              str(root / "images"), "--weight-model", str(root / "model.joblib"),
                              "--out", str(root / "t.csv")])
    assert message in err, err


def test_a_weight_model_for_other_columns_is_one_line(scene, capsys):
    """A fitted estimator that expects more columns than the model file lists."""
    import joblib
    from sklearn.linear_model import LinearRegression

    root, _ = scene
    fitted = LinearRegression().fit(np.ones((4, 3)) * np.arange(4)[:, None], np.arange(4))
    joblib.dump({"format": 1, "name": "x", "features": ["area_px"], "estimator": fitted},
                root / "model.joblib")
    err = main_error(capsys, ["--coco", str(root / "masks.json"), "--images",
                              str(root / "images"), "--weight-model", str(root / "model.joblib"),
                              "--out", str(root / "t.csv")])
    assert "the weight model cannot predict from its features" in err, err
    assert not (root / "t.csv").exists()


def test_tile_minus_one_is_refused(tmp_path, capsys):
    photo = tmp_path / "a.png"
    cv2.imwrite(str(photo), np.full((64, 64, 3), 90, np.uint8))
    err = main_error(capsys, ["--config-file", DEMO_CONFIG, "--input", str(photo), "--tile",
                              "-1", "--out", str(tmp_path / "t.csv"), "--opts",
                              "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", str(photo)])
    assert "TEST.TILE_SIZE (--tile) -1" in err, err


def test_model_form_runs_the_photo_loader_and_measures_the_predictors_masks(
        sharp_model, tiny_synth, tmp_path, monkeypatch):
    """The model form goes through tools/predict.py's photo loader (which decodes every
    photo; on a CPU in this process, batch.default_workers): its tables are byte for byte
    those of the same masks predicted photo by photo by the Predictor and measured from a
    file, and an undecodable photo among them is a counted warning, not a stop (issue 17)."""
    import os

    from detectron2.evaluation.coco_evaluation import instances_to_coco_json

    from grape_instances.core.images import expand_inputs
    from grape_instances.inference.measure import UNREADABLE, measure_jobs
    from grape_instances.inference.predictor import Predictor, prediction_config
    from grape_instances.measure.sources import MaskSpec, jobs_from_files
    from grape_instances.measure.table import output_paths
    from tests.helpers import photo_by_photo, photos_with_a_broken_one, record_decoding_processes

    photos = photos_with_a_broken_one(tiny_synth, tmp_path / "photos")
    cfg = prediction_config(DEMO_CONFIG, ["MODEL.WEIGHTS", str(sharp_model), "INPUT.MIN_SIZE_TEST",
                                          "96", "INPUT.MAX_SIZE_TEST", "128"],
                            confidence_threshold=0.05)
    predictor = Predictor(cfg)
    record_decoding_processes(monkeypatch, tmp_path / "decoders.txt")
    summary = measure_jobs(jobs_from_files(expand_inputs([str(tmp_path / "photos")])),
                           tmp_path / "model.csv", predictor=predictor, source="same")
    decoders = (tmp_path / "decoders.txt").read_text().split()
    assert len(decoders) == len(photos) and set(decoders) == {str(os.getpid())}
    assert summary["warnings"] == {UNREADABLE: 1} and summary["images"] == len(photos) - 1
    assert summary["bunches"] > 0

    jobs = jobs_from_files(photos)
    names = predictor.metadata.thing_classes
    for image_id, _, _, outputs in photo_by_photo(predictor, photos):
        inst = outputs["instances"]
        jobs[image_id - 1].masks = [
            MaskSpec(r["segmentation"], r["score"], names[label])
            for r, label in zip(instances_to_coco_json(inst, image_id),
                                inst.pred_classes.tolist(), strict=True)]
    jobs[2].masks = []  # p3.jpg: undecodable either way
    measure_jobs(jobs, tmp_path / "file.csv", source="same")
    for kind, path in output_paths(tmp_path / "model.csv").items():
        assert path.read_bytes() == output_paths(tmp_path / "file.csv")[kind].read_bytes(), kind
