"""GrapesNet importer on a small tree in the documented layout, built from synthetic images."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from grape_instances.convert.grapesnet import (
    NO_DEPTH,
    UNPAIRED_DEPTH,
    GrapesNetLayout,
    convert_grapesnet,
    pairing_key,
    read_weights,
)
from grape_instances.core.errors import GrapeInputError
from grape_instances.core.masks import mask_iou, rle_to_mask
from grape_instances.core.polygons import mask_to_polygons
from grape_instances.synthetic.render import SynthConfig, image_rng, render_scene

from .helpers import assert_user_error, run_tool

SIZE = 160


def _scene(tag: str, i: int, natural: bool, bunches: int = 1):
    cfg = SynthConfig(height=SIZE, width=SIZE, min_bunches=bunches, max_bunches=bunches,
                      p_natural=float(natural), p_leaf_occlusion=0.0)
    return render_scene(image_rng(11, tag, i), cfg)


def _write_rgb(path: Path, scene) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), scene.image, [cv2.IMWRITE_JPEG_QUALITY, 95])


def _write_depth(path: Path, value: int, size: int = SIZE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    depth = np.full((size, size), value, np.uint16)
    assert cv2.imwrite(str(path), depth, [cv2.IMWRITE_PNG_COMPRESSION, 3])


def _via_record(path: Path, masks) -> dict:
    regions = []
    for k, mask in enumerate(masks, start=1):
        for poly in mask_to_polygons(mask, "edges"):
            regions.append({"shape_attributes": {"name": "polygon",
                                                 "all_points_x": poly[:, 0].tolist(),
                                                 "all_points_y": poly[:, 1].tolist()},
                            "region_attributes": {"name": "bunch", "instance": str(k)}})
    size = path.stat().st_size
    return {f"{path.name}{size}": {"filename": path.name, "size": size, "regions": regions,
                                   "file_attributes": {}}}


def _labelme(json_path: Path, image_path: Path, masks) -> None:
    shapes = []
    for k, mask in enumerate(masks, start=1):
        for c in cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                  cv2.CHAIN_APPROX_NONE)[0]:
            shapes.append({"label": "bunch", "points": c[:, 0, :].astype(float).tolist(),
                           "group_id": k, "shape_type": "polygon", "flags": {}})
    json_path.parent.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(image_path, json_path.parent)
    json_path.write_text(json.dumps({"version": "5.0.0", "flags": {}, "shapes": shapes,
                                     "imagePath": rel, "imageData": None,
                                     "imageHeight": SIZE, "imageWidth": SIZE}))


def make_grapesnet(base: Path) -> dict:
    """ROOT with the four sub-datasets, plus an annotations folder beside it.

    Returns the ground-truth masks by path relative to ROOT.
    """
    root, ann = base / "GrapesNet", base / "annotations"
    truth = {}
    for i in range(2):
        rel = f"Dataset-1/Black Background/b_{i:03d}.jpg"
        scene = _scene("black", i, natural=False)
        _write_rgb(root / rel, scene)
        truth[rel] = scene.masks
    rel = "Dataset-1/Natural Background/n_000.jpg"
    scene = _scene("natural", 0, natural=True)
    _write_rgb(root / rel, scene)
    truth[rel] = scene.masks
    _labelme(ann / "labelme" / "n_000.json", root / rel, scene.masks)
    via = {}
    for i in range(2):
        rel = f"Dataset-2/multi_{i:03d}.jpg"
        scene = _scene("multi", i, natural=True, bunches=2)
        _write_rgb(root / rel, scene)
        truth[rel] = scene.masks
        if i == 0:  # multi_001 stays unannotated
            via.update(_via_record(root / rel, scene.masks))
    (ann / "via").mkdir(parents=True)
    (ann / "via" / "dataset2.json").write_text(json.dumps({"_via_img_metadata": via,
                                                           "_via_settings": {}}))
    for i in range(2):
        rel = f"Dataset-3/RGB/v_{i:03d}.jpg"
        scene = _scene("vine", i, natural=True)
        _write_rgb(root / rel, scene)
        truth[rel] = scene.masks
    _write_depth(root / "Dataset-3/Depth/v_000.png", 1200)  # v_001 has no depth
    _write_depth(root / "Dataset-3/Depth/v_orphan.png", 900)  # no RGB partner
    for i in (1, 2):
        rel = f"Dataset-4/RGB/bunch_{i:02d}.jpg"
        scene = _scene("coral", i, natural=False)
        _write_rgb(root / rel, scene)
        truth[rel] = scene.masks
        _write_depth(root / f"Dataset-4/Depth/bunch_{i:02d}_depth.png", 700 + i)
    (root / "Dataset-4" / "weights.csv").write_text("Image,Weight (g)\nbunch_01.jpg,512.5\n"
                                                    "bunch_02,480\nbunch_99,10\n")
    (root / "README.txt").write_text("not an image\n")
    return truth


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("gn")
    truth = make_grapesnet(base)
    return base, truth


def _images_by_name(coco: COCO) -> dict[str, dict]:
    return {img["file_name"]: img for img in coco.dataset["images"]}


def test_subsets_pairing_annotations_and_auto_masks(tree, tmp_path, caplog):
    base, truth = tree
    root = base / "GrapesNet"
    before = sorted(p.relative_to(base).as_posix() for p in base.rglob("*"))
    with caplog.at_level(logging.WARNING, logger="grape_instances"):
        summary = convert_grapesnet(root, tmp_path / "out", annotations=base / "annotations",
                                    weights=root / "Dataset-4" / "weights.csv")
    assert sorted(p.relative_to(base).as_posix() for p in base.rglob("*")) == before
    assert [p.name for p in summary["outputs"]] == [
        "grapesnet_dataset1.json", "grapesnet_dataset2.json"]
    assert summary["subsets"]["dataset1"] == {"images": 3, "annotated": 3, "instances": 3}
    assert summary["subsets"]["dataset3"]["annotated"] == 0
    assert set(summary["unannotated"]) == {
        "Dataset-2/multi_001.jpg", "Dataset-3/RGB/v_000.jpg", "Dataset-3/RGB/v_001.jpg",
        "Dataset-4/RGB/bunch_01.jpg", "Dataset-4/RGB/bunch_02.jpg"}
    assert "5 image(s) without any annotation" in caplog.text
    assert "Dataset-2/multi_001.jpg" in caplog.text
    assert summary["warnings"][UNPAIRED_DEPTH] == 1
    assert summary["warnings"][NO_DEPTH] == 1

    d1 = COCO(str(tmp_path / "out" / "grapesnet_dataset1.json"))
    images = _images_by_name(d1)
    assert set(images) == {"Dataset-1/Black Background/b_000.jpg",
                           "Dataset-1/Black Background/b_001.jpg",
                           "Dataset-1/Natural Background/n_000.jpg"}
    for name, img in images.items():
        ann = d1.loadAnns(d1.getAnnIds(imgIds=[img["id"]]))
        assert len(ann) == 1 and img["subset"] == "dataset1"
        iou = mask_iou(rle_to_mask(ann[0]["segmentation"]) > 0, truth[name][0])
        if "Black" in name:
            assert img["background"] == "black" and img["annotation"] == "edges"
            assert iou >= 0.85, (name, iou)
        else:  # the labelme polygons of the true mask (pixel-centre outline)
            assert img["background"] == "natural" and img["annotation"] == "labelme"
            assert iou >= 0.9, (name, iou)
        assert img["depth_file"] is None and img["weight_g"] is None

    d2 = COCO(str(tmp_path / "out" / "grapesnet_dataset2.json"))
    [img] = d2.dataset["images"]
    assert img["file_name"] == "Dataset-2/multi_000.jpg" and img["annotation"] == "via"
    assert img["background"] == "natural"
    anns = d2.loadAnns(d2.getAnnIds(imgIds=[img["id"]]))
    assert len(anns) == len(truth[img["file_name"]]) == 2
    for ann, mask in zip(anns, truth[img["file_name"]], strict=True):
        # VIA polygons stay polygons (read in memory, no RLE round trip), same pixels
        assert isinstance(ann["segmentation"], list)
        assert mask_iou(d2.annToMask(ann) > 0, mask) == 1.0


def test_rgbd_pairing_weights_and_single_bunch_auto_mode(tree, tmp_path):
    base, _ = tree
    root = base / "GrapesNet"
    summary = convert_grapesnet(root, tmp_path / "out", auto="single",
                                weights=root / "Dataset-4" / "weights.csv")
    assert summary["warnings"]["weight table rows matching no Dataset-4 image"] == 1
    d4 = COCO(str(tmp_path / "out" / "grapesnet_dataset4.json"))
    images = _images_by_name(d4)
    assert images["Dataset-4/RGB/bunch_01.jpg"]["weight_g"] == 512.5
    assert images["Dataset-4/RGB/bunch_02.jpg"]["weight_g"] == 480.0
    assert images["Dataset-4/RGB/bunch_01.jpg"]["depth_file"] == \
        "Dataset-4/Depth/bunch_01_depth.png"
    assert all(i["background"] == "coral" for i in images.values())
    depth = cv2.imread(str(root / "Dataset-4/Depth/bunch_02_depth.png"), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and int(depth[0, 0]) == 702
    # Dataset-3 pairing is recorded even though its images stay unannotated here.
    assert pairing_key("dataset-3/rgb/v_000.jpg", ["rgb"]) == \
        pairing_key("dataset-3/depth/v_000.png", ["depth"]) == "v_000"
    assert pairing_key("dataset-4/bunch7/color.jpg", ["color"]) == \
        pairing_key("dataset-4/bunch7/depth.png", ["depth"]) == "bunch7"
    assert pairing_key("dataset-3/img_001_rgb.jpg", ["rgb"]) == \
        pairing_key("dataset-3/img_001_d.png", ["depth", "d"]) == "img_001"


def test_weights_table_variants_and_errors(tmp_path):
    table = tmp_path / "w.csv"
    table.write_text("sample;mass kg;note\nB1;0,45;x\nB2;;missing\n")
    assert read_weights(table) == {"b1": 450.0}
    table.write_text("image,weight\nb1.jpg,12\nB1,13\n")
    with pytest.raises(GrapeInputError, match=r"w\.csv: row 3: 'B1' is listed twice"):
        read_weights(table)
    table.write_text("image,weight\nb1.jpg,heavy\n")
    with pytest.raises(GrapeInputError, match=r"w\.csv: row 2: weight 'heavy' is not a number"):
        read_weights(table)
    table.write_text("image,colour\nb1.jpg,red\n")
    with pytest.raises(GrapeInputError, match=r"w\.csv: no weight column"):
        read_weights(table)
    with pytest.raises(GrapeInputError, match="weights table not found"):
        read_weights(tmp_path / "none.csv")
    xlsx = tmp_path / "w.xlsx"
    xlsx.write_bytes(b"PK\x03\x04 not really a workbook")
    try:
        import openpyxl  # noqa: F401
        message = r"w\.xlsx: not a readable \.xlsx file"
    except ImportError:
        message = r"w\.xlsx: reading \.xlsx needs the openpyxl package.*export the sheet as CSV"
    with pytest.raises(GrapeInputError, match=message):
        read_weights(xlsx)


def test_layout_overrides_from_json_and_patterns(tmp_path):
    root = tmp_path / "gn"
    scene = _scene("black", 0, natural=False)
    _write_rgb(root / "singles" / "dark" / "a.jpg", scene)
    _write_rgb(root / "Dataset-1" / "Black" / "b.jpg", scene)
    layout_file = tmp_path / "layout.json"
    layout_file.write_text(json.dumps({"dataset1": ["singles/*"], "black": ["*dark*"]}))
    layout = GrapesNetLayout.from_json(layout_file)
    summary = convert_grapesnet(root, tmp_path / "out", layout=layout)
    coco = json.loads((tmp_path / "out" / "grapesnet_dataset1.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == ["singles/dark/a.jpg"]
    assert summary["warnings"]["files outside the four sub-datasets (ignored)"] == 1
    layout = GrapesNetLayout().with_patterns(["dataset1=singles/*", "dataset1=dataset-1/*",
                                              "black=*dark*", "black=*black*"])
    convert_grapesnet(root, tmp_path / "out2", layout=layout)
    coco = json.loads((tmp_path / "out2" / "grapesnet_dataset1.json").read_text())
    assert sorted(i["file_name"] for i in coco["images"]) == [
        "Dataset-1/Black/b.jpg", "singles/dark/a.jpg"]
    layout_file.write_text(json.dumps({"dataset9": ["x/*"]}))
    with pytest.raises(GrapeInputError, match=r"layout\.json: unknown layout key 'dataset9'"):
        GrapesNetLayout.from_json(layout_file)
    with pytest.raises(GrapeInputError, match="expected KEY=GLOB"):
        GrapesNetLayout().with_patterns(["dataset1"])


def test_errors_leave_no_output(tree, tmp_path):
    base, _ = tree
    root = base / "GrapesNet"
    with pytest.raises(GrapeInputError, match="GrapesNet root folder not found"):
        convert_grapesnet(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GrapeInputError, match="no GrapesNet images found"):
        convert_grapesnet(tmp_path / "empty", tmp_path / "out")
    bad = tmp_path / "bad.csv"
    bad.write_text("image,weight\nbunch_01.jpg,-3\n")
    with pytest.raises(GrapeInputError, match=r"bad\.csv: row 2: weight '-3' is not positive"):
        convert_grapesnet(root, tmp_path / "out", weights=bad)
    with pytest.raises(GrapeInputError, match="annotations folder not found"):
        convert_grapesnet(root, tmp_path / "out", annotations=tmp_path / "nope")
    with pytest.raises(GrapeInputError, match="none of the 9 images has an annotation"):
        convert_grapesnet(root, tmp_path / "out", auto="none")
    assert not (tmp_path / "out").exists()
    out = tmp_path / "out2"
    out.mkdir()
    (out / "grapesnet_dataset1.json").write_text("{}")
    with pytest.raises(GrapeInputError, match="already exists"):
        convert_grapesnet(root, out)
    assert [p.name for p in out.iterdir()] == ["grapesnet_dataset1.json"]


@pytest.mark.slow
def test_cli_grapesnet_with_layout_flags_and_one_line_errors(tree, tmp_path):
    base, _ = tree
    root = base / "GrapesNet"
    out = tmp_path / "out"
    run_tool("convert.py", "grapesnet", "--root", str(root), "--out-dir", str(out),
             "--annotations", str(base / "annotations"), "--auto", "single",
             "--weights", str(root / "Dataset-4" / "weights.csv"),
             "--pattern", "dataset3=nothing/*", check=True)
    assert sorted(p.name for p in out.iterdir()) == [
        "grapesnet_dataset1.json", "grapesnet_dataset2.json", "grapesnet_dataset4.json"]
    weights = [i["weight_g"] for i in
               json.loads((out / "grapesnet_dataset4.json").read_text())["images"]]
    assert weights == [512.5, 480.0]
    bad = tmp_path / "w.csv"
    bad.write_text("image;grams\nbunch_01;1\n")
    proc = run_tool("convert.py", "grapesnet", "--root", str(root), "--out-dir",
                    str(tmp_path / "out2"), "--weights", str(bad))
    assert_user_error(proc, "w.csv", "no weight column")
    proc = run_tool("convert.py", "grapesnet", "--root", str(tmp_path / "nope"),
                    "--out-dir", str(tmp_path / "out2"))
    assert_user_error(proc, "GrapesNet root folder not found")
    assert not (tmp_path / "out2").exists()


def test_corrected_via_project_wins_over_the_edge_mask(tmp_path):
    """The correction loop: edges --via-out, a person edits the polygon in VIA, the project
    goes into --annotations, and the importer takes the corrected mask."""
    from grape_instances.convert.edges import convert_edges

    root = tmp_path / "gn"
    folder = root / "Dataset-1" / "black"
    _write_rgb(folder / "b.jpg", _scene("black", 0, natural=False))
    _write_rgb(folder / "c.jpg", _scene("black", 1, natural=False))
    project = tmp_path / "ann" / "fixed.json"
    convert_edges(folder, tmp_path / "edges.json", via_out=project)
    data = json.loads(project.read_text())
    record = next(r for r in data["_via_img_metadata"].values() if r["filename"] == "b.jpg")
    record["regions"] = [{"shape_attributes": {"name": "rect", "x": 10, "y": 20, "width": 30,
                                               "height": 40},
                          "region_attributes": {"name": "bunch"}}]
    project.write_text(json.dumps(data))
    convert_grapesnet(root, tmp_path / "out", annotations=tmp_path / "ann")
    coco = COCO(str(tmp_path / "out" / "grapesnet_dataset1.json"))
    images = _images_by_name(coco)
    assert images["Dataset-1/black/b.jpg"]["annotation"] == "via"
    assert images["Dataset-1/black/c.jpg"]["annotation"] == "via"  # uncorrected, kept
    [ann] = coco.loadAnns(coco.getAnnIds(imgIds=[images["Dataset-1/black/b.jpg"]["id"]]))
    assert ann["bbox"] == [10.0, 20.0, 30.0, 40.0] and ann["area"] == 1200


def test_annotations_are_read_in_memory_not_through_coco_files(tree, tmp_path, monkeypatch):
    """GrapesNet composes the VIA / labelme readers: the file converters (which write COCO
    JSON) are never called, and nothing is written outside the output folder."""
    import grape_instances.convert.labelme as labelme_module
    import grape_instances.convert.via as via_module

    def refuse(*args, **kwargs):
        raise AssertionError("a COCO file converter was called")

    monkeypatch.setattr(via_module, "convert_via", refuse)
    monkeypatch.setattr(labelme_module, "convert_labelme", refuse)
    base, _ = tree
    root = base / "GrapesNet"
    summary = convert_grapesnet(root, tmp_path / "out", annotations=base / "annotations")
    assert summary["subsets"]["dataset2"]["instances"] == 2
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        "grapesnet_dataset1.json", "grapesnet_dataset2.json", "out"]
