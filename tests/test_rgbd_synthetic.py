"""Synthetic RGB-D: the twin of GrapesNet Dataset 4 (weighed bunches) and multi-bunch scenes."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import KFold, cross_val_score

from grape_instances.convert.validate import validate_coco_file
from grape_instances.core.errors import GrapeInputError
from grape_instances.synthetic.dataset4 import render_dataset4_bunch
from grape_instances.synthetic.export import generate_dataset4, generate_rgbd_scenes
from grape_instances.synthetic.render import SynthConfig, _bunch_geometry, image_rng
from grape_instances.synthetic.rgbd import (
    BERRY_DENSITY,
    RACHIS_FRACTION,
    RACHIS_GRAMS,
    VARIETIES,
    RgbdConfig,
    berry_weight_g,
    render_rgbd_scene,
    scene_config,
)
from tests.helpers import REPO, assert_user_error, run_tool, tree_bytes

SMALL = RgbdConfig(width=192, height=144)
SMALL_SCENES = scene_config(width=192, height=144)


def _median_depth(depth: np.ndarray, mask: np.ndarray) -> float:
    values = depth[mask]
    return float(np.median(values[values > 0]))


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("twin") / "d4"
    generate_dataset4(root, 6, seed=3, cfg=SMALL)
    return root


# ----------------------------------------------------------------- determinism


def test_same_seed_same_bytes_other_seed_differs(tmp_path, twin):
    generate_dataset4(tmp_path / "again", 6, seed=3, cfg=SMALL)
    generate_dataset4(tmp_path / "other", 6, seed=4, cfg=SMALL)
    a, b, c = (tree_bytes(p) for p in (twin, tmp_path / "again", tmp_path / "other"))
    assert a == b
    assert a.keys() == c.keys()
    for name in ("images/bunch_00000.jpg", "depth/bunch_00000.png", "weights.csv"):
        assert a[name] != c[name], name
    s1 = render_rgbd_scene(image_rng(1, "t", 0), SMALL_SCENES)
    s2 = render_rgbd_scene(image_rng(1, "t", 0), SMALL_SCENES)
    assert np.array_equal(s1.image, s2.image) and np.array_equal(s1.depth, s2.depth)
    assert s1.bunches == s2.bunches


# ----------------------------------------------------------------- files


def test_twin_files_coco_weights_camera_and_validate(twin):
    camera = json.loads((twin / "camera.json").read_text())
    assert camera["fx"] == camera["fy"] > 0
    assert (camera["cx"], camera["cy"]) == ((192 - 1) / 2, (144 - 1) / 2)
    with open(twin / "weights.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["image"] for r in rows] == [f"bunch_{i:05d}.jpg" for i in range(6)]
    data = json.loads((twin / "annotations" / "instances.json").read_text())
    assert len(data["images"]) == len(data["annotations"]) == 6  # one bunch per image
    for img, row in zip(data["images"], rows, strict=True):
        assert img["file_name"] == f"images/{row['image']}"
        assert img["depth_file"] == f"depth/{Path(row['image']).stem}.png"
        assert (twin / img["depth_file"]).is_file()
        assert img["weight_g"] == pytest.approx(float(row["weight_g"]), abs=0.01)
        assert img["variety"] in VARIETIES and img["background"] == "coral"
    assert validate_coco_file(twin / "annotations" / "instances.json", twin, deep=True).ok


def test_depth_is_uint16_mm_with_holes_at_the_bunch_distance(twin):
    coco = COCO(str(twin / "annotations" / "instances.json"))
    for img in coco.dataset["images"]:
        depth = cv2.imread(str(twin / img["depth_file"]), cv2.IMREAD_UNCHANGED)
        assert depth.dtype == np.uint16 and depth.shape == (img["height"], img["width"])
        holes = float((depth == 0).mean())
        assert 0.002 < holes < 0.2, holes
        mask = coco.annToMask(coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))[0]).astype(bool)
        z = img["distance_mm"]  # camera to the bunch axis: the seen front is a little nearer
        assert 0.9 * z < _median_depth(depth, mask) < z
        assert _median_depth(depth, ~mask) > z  # the coral sheet is behind the bunch


def test_depth_is_aligned_with_the_mask():
    scene = render_dataset4_bunch(image_rng(0, "align", 0), SMALL)
    mask, true = scene.masks[0], scene.true_depth
    # every bunch pixel is in front of (nearly) all the background: no offset between them
    assert true[mask].max() < np.percentile(true[~mask], 1)
    edge = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~mask
    assert (scene.depth[edge] == 0).mean() > 0.15  # depth edges lose readings, as on sensors


# ----------------------------------------------------------------- weight


def test_weighed_bunch_is_solid_back_and_interior_included():
    """A bunch for weighing is whole (a render-only bunch is a front shell); fill thins
    only its interior."""
    def geometry(fill):
        return _bunch_geometry(np.random.default_rng(0), SynthConfig(), 150.0, berry_r=8.0,
                               fill=fill)

    shell, full, loose = geometry(None), geometry(1.0), geometry(0.3)
    behind = 1.5 * 8.0  # berry centres this far behind the axis
    assert (full.centres[:, 2] < -behind).mean() > 0.2
    assert (shell.centres[:, 2] < -behind).mean() < 0.02
    inner = [int((g.depth_in >= 1).sum()) for g in (shell, full, loose)]
    assert inner[0] == 0 and inner[1] > 20 and 0.1 * inner[1] < inner[2] < 0.5 * inner[1]
    assert (loose.depth_in < 1).sum() == (full.depth_in < 1).sum()  # the shell is kept


def test_weight_counts_hidden_berries_and_the_rachis():
    visible = []
    for i in range(4):
        scene = render_dataset4_bunch(image_rng(0, "weight", i), SMALL)
        truth, radii, seen = scene.bunches[0], scene.berry_radii_mm[0], scene.berry_visible[0]
        assert truth["berries"] == radii.size and truth["berries_visible"] == seen.sum()
        visible.append(seen.mean())
        elong = (1.0, 1.22)  # range of berry elongation in the renderer
        lo = berry_weight_g(radii, elong[0], BERRY_DENSITY[0])
        lo = lo * (1 + RACHIS_FRACTION[0]) + RACHIS_GRAMS[0]
        hi = berry_weight_g(radii, elong[1], BERRY_DENSITY[1])
        hi = hi * (1 + RACHIS_FRACTION[1]) + RACHIS_GRAMS[1]
        assert lo <= truth["weight_g"] <= hi
        visible_only = berry_weight_g(radii[seen], elong[1], BERRY_DENSITY[1])
        visible_only = visible_only * (1 + RACHIS_FRACTION[1]) + RACHIS_GRAMS[1]
        assert truth["weight_g"] > visible_only  # more than any weight of the seen berries
    assert np.mean(visible) < 0.62  # about half the berries (back, interior) are never seen


def test_varieties_differ_in_berry_size_and_count():
    stats: dict[str, list] = {}
    for i in range(24):
        b = render_dataset4_bunch(image_rng(0, "variety", i), SMALL).bunches[0]
        stats.setdefault(b["variety"], []).append((b["berry_radius_mm"], b["berries"]))
    assert len(stats) >= 3
    for name, values in stats.items():
        v = VARIETIES[name]
        for radius, count in values:
            assert v.berry_radius_mm[0] * 0.75 < radius < v.berry_radius_mm[1] * 1.25
            assert v.berries[0] * 0.6 < count < v.berries[1] * 1.4, (name, count)


def test_weight_needs_depth_not_pixel_area():
    """The twin's point: 5-fold CV R² of weight on area^1.5, in pixels vs in cm² (depth)."""
    cfg = RgbdConfig(width=256, height=192)
    area_px, area_cm2, weight = [], [], []
    for i in range(40):
        scene = render_dataset4_bunch(image_rng(0, "fit", i), cfg)
        mask = scene.masks[0]
        z = _median_depth(scene.depth, mask)
        area_px.append(mask.sum())
        area_cm2.append(mask.sum() * (z / cfg.camera.f) ** 2 / 100)
        weight.append(scene.bunches[0]["weight_g"])
    folds = KFold(5, shuffle=True, random_state=0)

    def r2(x):
        x = np.asarray(x, float)[:, None] ** 1.5
        return cross_val_score(LinearRegression(), x, weight, cv=folds, scoring="r2").mean()

    with_depth, pixels = r2(area_cm2), r2(area_px)
    assert with_depth > 0.7, with_depth
    assert with_depth > pixels + 0.3, (with_depth, pixels)


# ----------------------------------------------------------------- scenes


def test_scenes_hold_touching_bunches_at_different_depths(tmp_path):
    root = tmp_path / "scenes"
    generate_rgbd_scenes(root, {"train": 4, "val": 2}, seed=2, cfg=SMALL_SCENES)
    assert json.loads((root / "camera.json").read_text())["fx"] > 0
    touching = 0
    for split in ("train", "val"):
        json_path = root / "annotations" / f"instances_{split}.json"
        assert validate_coco_file(json_path, root).ok
        coco = COCO(str(json_path))
        for img in coco.dataset["images"]:
            assert img["file_name"].startswith(f"images/{split}/")
            depth = cv2.imread(str(root / img["depth_file"]), cv2.IMREAD_UNCHANGED)
            assert depth.dtype == np.uint16
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
            masks = [coco.annToMask(a).astype(bool) for a in anns]
            distances = [a["distance_mm"] for a in anns]
            assert len(anns) >= 2 and len(set(distances)) == len(distances)
            for a, m in zip(anns, masks, strict=True):
                assert a["weight_g"] > 0 and a["variety"] in VARIETIES
                if m.sum() >= 60:  # each visible part sits at its own bunch's depth
                    assert 0.88 * a["distance_mm"] < _median_depth(depth, m) < a["distance_mm"]
            grown = [cv2.dilate(m.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
                     for m in masks]
            touching += any((grown[i] & masks[j]).any() for i in range(len(masks))
                            for j in range(len(masks)) if i != j)
    assert touching >= 3  # bunches touch in most scenes, with a depth step between them


def test_scene_bunches_share_colours():
    same = 0
    for i in range(6):
        scene = render_rgbd_scene(image_rng(0, "colour", i), SMALL_SCENES)
        same += len({b["color"] for b in scene.bunches}) == 1
    assert same >= 3


# ----------------------------------------------------------------- tool and errors


@pytest.mark.slow
def test_tool_writes_the_twin_and_refuses_bad_input(tmp_path, capsys):
    out = tmp_path / "d4"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    assert_user_error(run_tool("make_synthetic.py", "--dataset4", "--count", "2",
                               "--out", str(out)), str(out), "not empty")
    proc = run_tool("make_synthetic.py", "--dataset4", "--count", "2", "--frame", "160x120",
                    "--out", str(out), "--overwrite", check=True)
    assert "2 bunches" in proc.stdout
    assert (out / "keep.txt").read_text() == "user file"
    assert sorted(p.name for p in (out / "depth").iterdir()) == ["bunch_00000.png",
                                                                 "bunch_00001.png"]
    assert validate_coco_file(out / "annotations" / "instances.json", out, deep=True).ok
    spec = importlib.util.spec_from_file_location("make_synthetic",
                                                  REPO / "tools" / "make_synthetic.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with pytest.raises(SystemExit) as exc:
        tool.main(["--rgbd-scenes", "--frame", "160by120", "--out", str(tmp_path / "s")])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --frame '160by120'"), err
    assert not (tmp_path / "s").exists()


def test_config_errors_are_one_line_user_errors(tmp_path):
    with pytest.raises(GrapeInputError, match="varieties"):
        RgbdConfig(varieties=("merlot",))
    with pytest.raises(GrapeInputError, match="distance_mm"):
        RgbdConfig(distance_mm=(900.0, 400.0))
    with pytest.raises(GrapeInputError, match="one bunch per image"):
        generate_dataset4(tmp_path / "x", 1, cfg=SMALL_SCENES)
