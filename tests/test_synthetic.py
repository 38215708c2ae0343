"""The embedded synthetic dataset: determinism, exact masks, file formats and difficulty."""

from __future__ import annotations

import ast
import importlib.util
import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from labelme._label_file import read_label_file
from labelme.utils import shape_to_mask
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from grape_instances.core.errors import GrapeInputError
from grape_instances.core.polygons import mask_to_polygons
from grape_instances.synthetic import render
from grape_instances.synthetic.export import generate_dataset, split_statistics
from grape_instances.synthetic.render import (
    DEBUG_LEAF,
    DEBUG_STEM,
    SynthConfig,
    config_from_size,
    image_rng,
    render_scene,
)
from tests.helpers import tree_bytes

SMALL = config_from_size(96)


def _polygon_mask(polygons: list[list[float]], h: int, w: int) -> np.ndarray:
    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))
    return mask_utils.decode(rle).astype(bool)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _coco_masks_by_file(root: Path, split: str) -> dict[str, list[np.ndarray]]:
    coco = COCO(str(root / "annotations" / f"instances_{split}.json"))
    out = {}
    for img in coco.dataset["images"]:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
        out[img["file_name"]] = [coco.annToMask(a).astype(bool) for a in anns]
    return out


# ----------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    splits = {"train": 3, "val": 2}
    generate_dataset(tmp_path / "a", splits, seed=7, cfg=SMALL)
    generate_dataset(tmp_path / "b", splits, seed=7, cfg=SMALL)
    generate_dataset(tmp_path / "c", splits, seed=8, cfg=SMALL)
    a, b, c = (tree_bytes(tmp_path / n) for n in "abc")
    assert len(a) == 2 * 5 + 2 * 2  # images + labelme files, COCO + VIA per split
    assert a == b
    assert a.keys() == c.keys()
    for name in ("images/train/train_00000.jpg", "annotations/instances_val.json"):
        assert a[name] != c[name], name


def test_split_images_do_not_depend_on_other_split_sizes(tmp_path):
    generate_dataset(tmp_path / "a", {"val": 2}, seed=3, cfg=SMALL)
    generate_dataset(tmp_path / "b", {"train": 4, "val": 2}, seed=3, cfg=SMALL)
    a, b = tree_bytes(tmp_path / "a"), tree_bytes(tmp_path / "b")
    val_files = [k for k in a if "val" in k]
    assert len(val_files) == 6
    for k in val_files:
        assert a[k] == b[k], k


# ----------------------------------------------------------------- exact masks


@pytest.mark.parametrize("index", range(8))
def test_masks_are_exactly_the_visible_berries(index, monkeypatch):
    """A bunch's mask is exactly where the picture changes when that bunch's berries are left
    unpainted (same random draws, so the same scene otherwise): what a camera sees of it.
    The masks come from the label map; this reference comes from the colour image alone."""
    cfg = SynthConfig(height=128, width=128, max_bunches=4)
    scene = render_scene(image_rng(11, "exact", index), cfg)
    flat = render_scene(image_rng(11, "exact", index),
                        SynthConfig(height=128, width=128, max_bunches=4, debug_id_colors=True))
    assert scene.image.shape == (128, 128, 3) and scene.image.dtype == np.uint8
    np.testing.assert_array_equal(scene.label_map, flat.label_map)  # id colours: same scene
    union = np.zeros((128, 128), int)
    for i, mask in enumerate(scene.masks, start=1):
        assert mask.dtype == bool and mask.sum() >= cfg.min_area
        np.testing.assert_array_equal(mask, scene.label_map == i)
        union += mask
    assert union.max() <= 1  # disjoint

    # The colours before the camera (blur would spread a change to the neighbours).
    monkeypatch.setattr(render, "_finish", lambda rng, canvas, natural: canvas.img.copy())
    picture = render_scene(image_rng(11, "exact", index), cfg).image
    paint = render._Canvas.paint
    by_order = {meta["draw_order"]: mask
                for mask, meta in zip(scene.masks, scene.bunches, strict=True)}
    assert by_order
    for k in range(1, cfg.max_bunches + 1):
        def without_bunch_k(canvas, idx, colors, kind, bunch=0, debug_color=None, k=k):
            if not (kind == "bunch" and bunch == k):
                paint(canvas, idx, colors, kind, bunch, debug_color)

        monkeypatch.setattr(render._Canvas, "paint", without_bunch_k)
        seen = np.any(render_scene(image_rng(11, "exact", index), cfg).image != picture, -1)
        monkeypatch.setattr(render._Canvas, "paint", paint)
        if k in by_order:
            np.testing.assert_array_equal(by_order[k], seen)
        else:  # not drawn, or dropped as a remnant under min_area
            assert seen.sum() < cfg.min_area, (k, int(seen.sum()))


def test_stems_leaves_and_occlusion_really_happen():
    """Over a few scenes: stems and occluding leaves are drawn, flags agree with pixels."""
    cfg = SynthConfig(height=128, width=128, debug_id_colors=True)
    stem_px = leaf_px = n_leaf_occluded = 0
    for index in range(12):
        scene = render_scene(image_rng(5, "flags", index), cfg)
        stem_px += int(np.all(scene.image == DEBUG_STEM, axis=-1).sum())
        leaf = np.all(scene.image == DEBUG_LEAF, axis=-1)
        leaf_px += int(leaf.sum())
        for mask, meta in zip(scene.masks, scene.bunches, strict=True):
            if meta["leaf_occluded"]:
                n_leaf_occluded += 1
                assert meta["occluded"]
                touching = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
                assert (touching & leaf).any(), "a leaf-occluded bunch must border a leaf"
    assert stem_px > 0 and leaf_px > 0 and n_leaf_occluded > 0


@pytest.mark.parametrize("module", ["render", "rgbd", "dataset4"])
def test_renderers_write_no_files(module):
    """Rendering and export kept apart: the renderers import no writer; export.py writes."""
    path = Path(render.__file__).with_name(f"{module}.py")
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            imported |= {f"{node.module}.{a.name}" for a in node.names} | {str(node.module)}
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
    writers = ("fileio", "convert", "tqdm", "export")
    found = {m for m in imported for w in writers
             if m.lstrip(".") == w or m.lstrip(".").startswith(w + ".")}
    assert not found, f"{module}.py imports writers: {sorted(found)}"


def test_bad_config_is_a_user_error():
    with pytest.raises(GrapeInputError, match="min_bunches"):
        SynthConfig(min_bunches=3, max_bunches=2)
    with pytest.raises(GrapeInputError, match="varieties"):
        SynthConfig(varieties=("white",))


# ----------------------------------------------------------------- files


def test_coco_json_loads_and_agrees_with_masks(tiny_synth):
    for split, count in (("train", 8), ("val", 4)):
        path = tiny_synth / "annotations" / f"instances_{split}.json"
        coco = COCO(str(path))
        assert len(coco.dataset["images"]) == count
        assert [c["name"] for c in coco.dataset["categories"]] == ["bunch"]
        assert coco.dataset["annotations"], split
        for img in coco.dataset["images"]:
            assert img["background"] in ("black", "natural")
            pixels = cv2.imread(str(tiny_synth / "images" / split / img["file_name"]))
            assert pixels.shape == (img["height"], img["width"], 3)
        for ann in coco.dataset["annotations"]:
            m = coco.annToMask(ann).astype(bool)
            ys, xs = np.nonzero(m)
            assert ann["area"] == m.sum()
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                   ys.max() - ys.min() + 1]
            assert ann["variety"] in ("green", "red", "purple")
            assert isinstance(ann["occluded"], bool) and isinstance(ann["leaf_occluded"], bool)


def test_coco_masks_equal_the_rendered_scene(tiny_synth, tiny_synth_params):
    """What is written is exactly what was rendered (RLE round trip, same per-image stream)."""
    cfg = config_from_size(tiny_synth_params["size"])
    by_file = _coco_masks_by_file(tiny_synth, "val")
    for i in range(tiny_synth_params["splits"]["val"]):
        scene = render_scene(image_rng(tiny_synth_params["seed"], "val", i), cfg)
        written = by_file[f"val_{i:05d}.jpg"]
        assert len(written) == len(scene.masks)
        for a, b in zip(written, scene.masks, strict=True):
            np.testing.assert_array_equal(a, b)


def test_via_project_regions_match_masks(tiny_synth):
    for split in ("train", "val"):
        via = json.loads((tiny_synth / "via" / f"via_project_{split}.json").read_text())
        assert via["_via_data_format_version"] == "2.0.10"
        assert set(via["_via_attributes"]["region"]) == {"name", "instance", "variety"}
        assert "_via_settings" in via
        assert via["_via_image_id_list"] == list(via["_via_img_metadata"])
        masks = _coco_masks_by_file(tiny_synth, split)
        checked = 0
        for key, meta in via["_via_img_metadata"].items():
            jpg = tiny_synth / "images" / split / meta["filename"]
            assert key == meta["filename"] + str(jpg.stat().st_size) and meta["size"] == \
                jpg.stat().st_size
            polys = defaultdict(list)
            for region in meta["regions"]:
                shape = region["shape_attributes"]
                assert shape["name"] == "polygon"
                assert all(isinstance(v, int) for v in shape["all_points_x"] +
                           shape["all_points_y"])
                flat = [c for xy in zip(shape["all_points_x"], shape["all_points_y"],
                                        strict=True) for c in xy]
                attrs = region["region_attributes"]
                assert attrs["name"] == "bunch"
                polys[int(attrs["instance"])].append(flat)
            exact = masks[meta["filename"]]
            assert sorted(polys) == list(range(1, len(exact) + 1))
            for inst, mask in enumerate(exact, start=1):
                if mask.sum() > 200:
                    drawn = _polygon_mask(polys[inst], *mask.shape)
                    assert _iou(drawn, mask) >= 0.9, (key, inst)
                    checked += 1
        assert checked > 0


def test_labelme_files_load_and_match_masks(tiny_synth):
    masks = _coco_masks_by_file(tiny_synth, "val")
    checked = 0
    for i in range(4):
        path = tiny_synth / "labelme" / "val" / f"val_{i:05d}.json"
        raw = json.loads(path.read_text())
        assert list(raw) == ["version", "flags", "shapes", "imagePath", "imageData",
                             "imageHeight", "imageWidth"]
        assert raw["imagePath"] == f"../../images/val/val_{i:05d}.jpg"
        label = read_label_file(str(path))  # labelme's own reader finds and checks the image
        groups = defaultdict(list)
        for shape in label.shapes:
            assert shape["label"] == "bunch" and shape["shape_type"] == "polygon"
            groups[shape["group_id"]].append(shape["points"])
        exact = masks[f"val_{i:05d}.jpg"]
        assert sorted(groups) == list(range(1, len(exact) + 1))
        for inst, mask in enumerate(exact, start=1):
            if mask.sum() > 200:
                # rasterised as labelme itself does (fill + outline through pixel centres)
                drawn = np.zeros(mask.shape, bool)
                for points in groups[inst]:
                    drawn |= shape_to_mask(mask.shape, points, shape_type="polygon")
                assert _iou(drawn, mask) >= 0.9
                checked += 1
    assert checked > 0


def test_polygons_trace_pixel_edges_exactly():
    """A hole-free mask with several parts comes back pixel-exact from its polygons."""
    m = np.zeros((20, 30), bool)
    m[2:9, 3:12] = True
    m[12:18, 20:29] = True
    m[8, 12] = True  # a diagonal step
    m[15, 2] = True  # a single pixel
    polys = mask_to_polygons(m, "edges")
    assert len(polys) == 3
    drawn = _polygon_mask([p.astype(float).ravel().tolist() for p in polys], 20, 30)
    np.testing.assert_array_equal(drawn, m)


# ----------------------------------------------------------------- difficulty and safety


def test_val_split_meets_the_fixed_difficulty(tmp_path):
    paths = generate_dataset(tmp_path / "ds", {"val": 60}, seed=0)
    stats = split_statistics(paths["val"]["coco"])
    assert stats["images"] == 60
    assert stats["mean_bunches_per_image"] >= 2.0, stats
    assert stats["fraction_natural"] >= 0.6, stats
    assert stats["fraction_leaf_occluded"] >= 0.3, stats
    assert set(stats["varieties"]) == {"green", "red", "purple"}, stats


def test_refuses_existing_root_unless_overwrite(tmp_path):
    root = tmp_path / "ds"
    generate_dataset(root, {"val": 3}, seed=0, cfg=SMALL)
    with pytest.raises(GrapeInputError, match="not empty"):
        generate_dataset(root, {"val": 2}, seed=0, cfg=SMALL)
    generate_dataset(root, {"val": 2}, seed=1, cfg=SMALL, overwrite=True)
    assert sorted(p.name for p in (root / "images" / "val").iterdir()) == [
        "val_00000.jpg", "val_00001.jpg"]
    assert len(list((root / "labelme" / "val").iterdir())) == 2
    assert split_statistics(root / "annotations" / "instances_val.json")["images"] == 2


def test_tool_reports_existing_root_as_one_line_error(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "make_synthetic", Path(__file__).resolve().parents[1] / "tools" / "make_synthetic.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    main = tool.main
    root = tmp_path / "ds"
    root.mkdir()
    (root / "keep.txt").write_text("user file")
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(root), "--train", "1", "--val", "1", "--size", "64"])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "not empty" in err[-1]
    main(["--out", str(root), "--train", "1", "--val", "1", "--size", "64", "--overwrite"])
    assert "synthetic grapes" in capsys.readouterr().out
    assert (root / "keep.txt").read_text() == "user file"
