"""VIA 1.x / 2.x / 3.x -> COCO: peer files, every shape, grouping, and every bad input."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from grape_instances.convert import via as V
from grape_instances.convert.validate import validate_coco_file
from grape_instances.convert.via import convert_via
from grape_instances.core import polygons as P
from grape_instances.core.errors import GrapeInputError
from grape_instances.core.masks import segmentation_to_mask
from tests.helpers import PEER_DATA

PEER = PEER_DATA / "via"


def jpeg(path: Path, width: int = 64, height: int = 48, orientation: int | None = None) -> Path:
    img = Image.fromarray(np.full((height, width, 3), 120, np.uint8))
    kwargs = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif
    img.save(path, quality=80, **kwargs)
    return path


def polygon(xs, ys, **attrs):
    return {"shape_attributes": {"name": "polygon", "all_points_x": xs, "all_points_y": ys},
            "region_attributes": attrs}


SQUARE = ([10, 30, 30, 10], [10, 10, 30, 30])


def via2(images: Path, regions_by_name: dict, size: int | None = None) -> dict:
    """A VIA 2 export for images already in ``images`` (size keys from the files)."""
    out = {}
    for name, regions in regions_by_name.items():
        s = (images / name).stat().st_size if size is None else size
        out[f"{name}{s}"] = {"filename": name, "size": s, "regions": regions,
                             "file_attributes": {}}
    return out


def convert(tmp_path, data, images, **kwargs):
    via = tmp_path / "project.json"
    via.write_text(json.dumps(data))
    out = tmp_path / "out.json"
    summary = convert_via(via, images, out, overwrite=True, **kwargs)
    return summary, json.loads(out.read_text())


def names_and_boxes(coco):
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    return [(cats[a["category_id"]], a["bbox"]) for a in coco["annotations"]]


# --------------------------------------------------------------------------- peer files


@pytest.mark.shared("peer-data")
def test_nsy0328_sample_agrees_with_its_own_coco_export(tmp_path):
    summary, ours = convert(tmp_path, json.loads((PEER / "nsy0328/sample.json").read_text()),
                            PEER / "nsy0328", label_attr="name")
    theirs = json.loads((PEER / "nsy0328/sample_coco.json").read_text())
    assert summary["annotations"] == len(theirs["annotations"]) == 4
    their_cats = {c["id"]: c["name"] for c in theirs["categories"]}
    their = [(their_cats[a["category_id"]], a["bbox"]) for a in theirs["annotations"]]
    for (name, box), (their_name, their_box) in zip(names_and_boxes(ours), their, strict=True):
        assert name == their_name
        assert np.abs(np.array(box) - np.array(their_box)).max() <= 1.0
    assert ours["images"][0]["file_name"] == "sample0001.jpg"
    assert (ours["images"][0]["width"], ours["images"][0]["height"]) == (512, 384)


@pytest.mark.shared("peer-data")
def test_nsy0328_project_without_images_keeps_declared_classes(tmp_path):
    summary, coco = convert(tmp_path,
                            json.loads((PEER / "nsy0328/tutorial_project.json").read_text()),
                            PEER / "nsy0328", label_attr="name")
    assert summary["images"] == 0 and coco["annotations"] == []
    assert V.NO_IMAGES in summary["warnings"]
    assert [c["name"] for c in coco["categories"]] == sorted(
        ["PET bottles", "Cans", "Papers", "Plastic", "Cardboards", "Plastic Bag", "Bottles"])


@pytest.mark.shared("peer-data")
def test_via1_unit_test_regions_dict_all_shapes(tmp_path):
    data = json.loads((PEER / "via1_unit_test/unit_test_annotation2.json").read_text())
    assert V.detect_via_version(data, "x") == "1"
    summary, coco = convert(tmp_path, data, PEER / "via1_unit_test")
    assert summary["images"] == 3 and summary["annotations"] == 7
    assert summary["warnings"][V.SKIPPED_LINE] == 5  # the five points
    by_file = {i["id"]: i["file_name"] for i in coco["images"]}
    anns = [(by_file[a["image_id"]], a) for a in coco["annotations"]]
    qbist = [a for f, a in anns if f == "test_pattern_qbist.jpg"]
    ellipse, rect, circle, ellipse2 = qbist
    assert rect["bbox"] == [290.0, 208.0, 127.0, 113.0] and rect["area"] == 127 * 113
    assert circle["area"] == pytest.approx(math.pi * 43**2, rel=0.02)
    assert ellipse["area"] == pytest.approx(math.pi * 27 * 26, rel=0.02)
    assert ellipse2["area"] == pytest.approx(math.pi * 33 * 57, rel=0.02)
    assert validate_coco_file(tmp_path / "out.json", PEER / "via1_unit_test").ok


@pytest.mark.shared("peer-data")
def test_via1_unicode_and_quoted_labels_and_missing_labels(tmp_path):
    data = json.loads((PEER / "via1_unit_test/unit_test_annotation2.json").read_text())
    summary, coco = convert(tmp_path, data, PEER / "via1_unit_test", label_attr="name")
    names = {c["name"] for c in coco["categories"]}
    assert 'ellipse "red"' in names and "a \"white\" swan, good fortune" in names
    assert summary["warnings"][V.NO_LABEL] == 2  # circle and ellipse with no attributes
    assert summary["annotations"] == 5


@pytest.mark.shared("peer-data")
def test_via3_constructed_project_shapes(tmp_path):
    data = json.loads((PEER / "via3_constructed/sample_via3_project.json").read_text())
    assert V.detect_via_version(data, "x") == "3"
    summary, coco = convert(tmp_path, data, PEER / "nsy0328", label_attr="name")
    assert summary["annotations"] == 7 and summary["warnings"][V.SKIPPED_LINE] == 1
    anns = coco["annotations"]
    # the four polygons are exactly those of the VIA 2 sample
    (tmp_path / "v2").mkdir()
    _, v2 = convert(tmp_path / "v2", json.loads((PEER / "nsy0328/sample.json").read_text()),
                    PEER / "nsy0328", label_attr="name")
    for a, b in zip(anns[:4], v2["annotations"], strict=True):
        assert a["segmentation"] == b["segmentation"]
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    rect, circle, ellipse = anns[4:]
    assert cats[rect["category_id"]] == "Cans" and cats[ellipse["category_id"]] == "Plastic"
    assert np.abs(np.array(rect["bbox"]) - [10.5, 300, 40, 30]).max() <= 1
    assert rect["area"] == pytest.approx(40 * 30, rel=0.03)
    assert np.abs(np.array(circle["bbox"]) - [458, 328, 24, 24]).max() <= 1
    assert circle["area"] == pytest.approx(math.pi * 144, rel=0.03)
    assert ellipse["area"] == pytest.approx(math.pi * 30 * 10, rel=0.03)


# --------------------------------------------------------------------------- VIA 3 details


def via3_project(metadata: dict, attribute: dict | None = None, views=None) -> dict:
    return {
        "project": {"pid": "p", "data_format_version": "3.1.1", "vid_list": ["1"]},
        "config": {}, "attribute": attribute or {},
        "file": {"1": {"fid": "1", "fname": "a.jpg", "type": 2, "loc": 1, "src": ""}},
        "view": views or {"1": {"fid_list": ["1"]}}, "metadata": metadata,
    }


def test_via3_option_ids_map_to_labels_and_extreme_shapes(tmp_path):
    images = tmp_path / "img"
    images.mkdir()
    jpeg(images / "a.jpg", 100, 80)
    attribute = {
        "1": {"aname": "class", "anchor_id": "FILE1_Z0_XY1", "type": 3,
              "options": {"0": "bunch", "1": "leaf"}, "default_option_id": ""},
        "2": {"aname": "tags", "anchor_id": "FILE1_Z0_XY1", "type": 2,
              "options": {"0": "ripe", "1": "green"}, "default_option_id": ""},
    }
    metadata = {
        "a": {"vid": "1", "flg": 0, "z": [], "xy": [8, 20, 40, 40, 10, 60, 40, 40, 70],
              "av": {"1": "0", "2": "1"}},
        "b": {"vid": "1", "flg": 0, "z": [], "xy": [9, 70, 30, 90, 50, 70, 70],
              "av": {"1": "1"}},
        "c": {"vid": "1", "flg": 0, "z": [2.5], "xy": [2, 1, 1, 5, 5], "av": {"1": "0"}},
        "file-level": {"vid": "1", "flg": 0, "z": [], "xy": [], "av": {"9": "x"}},
    }
    summary, coco = convert(tmp_path, via3_project(metadata, attribute), images,
                            label_attr="class")
    assert [c["name"] for c in coco["categories"]] == ["bunch", "leaf"]
    assert summary["warnings"][V.TEMPORAL] == 1
    rect, circle = names_and_boxes(coco)
    assert rect[0] == "bunch" and np.abs(np.array(rect[1]) - [20, 10, 40, 60]).max() <= 1
    # circle through (70,30), (90,50), (70,70): centre (70, 50), radius 20
    assert circle[0] == "leaf" and np.abs(np.array(circle[1]) - [50, 30, 40, 40]).max() <= 1
    _, by_tag = convert(tmp_path, via3_project(metadata, attribute), images, label_attr="tags")
    assert [c["name"] for c in by_tag["categories"]] == ["green", "ripe"]
    assert len(by_tag["annotations"]) == 1


def test_via3_region_on_unknown_view_is_an_error(tmp_path):
    images = tmp_path / "img"
    images.mkdir()
    jpeg(images / "a.jpg")
    bad = via3_project({"m": {"vid": "7", "z": [], "xy": [2, 1, 1, 5, 5], "av": {}}})
    with pytest.raises(GrapeInputError, match="unknown view 7"):
        convert(tmp_path, bad, images)


# --------------------------------------------------------------------------- VIA 2 details


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    jpeg(folder / "a.jpg", 64, 48)
    return folder


def test_rotated_ellipse_uses_theta(tmp_path, images):
    region = {"shape_attributes": {"name": "ellipse", "cx": 32, "cy": 24, "rx": 20, "ry": 5,
                                   "theta": math.pi / 2}, "region_attributes": {}}
    _, coco = convert(tmp_path, via2(images, {"a.jpg": [region]}), images)
    x, y, w, h = coco["annotations"][0]["bbox"]
    assert abs(w - 10) <= 1 and abs(h - 40) <= 1  # rotated a quarter turn: tall, not wide


def test_checkbox_labels_and_group_attr_merge_parts(tmp_path, images):
    regions = [
        polygon([5, 15, 15, 5], [5, 5, 15, 15], kind={"grape": True, "leaf": False}, inst="1"),
        polygon([20, 30, 30, 20], [5, 5, 15, 15], kind={"grape": True}, inst="1"),
        polygon([40, 50, 50, 40], [5, 5, 15, 15], kind={"grape": True, "leaf": True}, inst="2"),
        polygon([40, 50, 50, 40], [20, 20, 30, 30], kind={"leaf": True}, inst=""),
    ]
    data = via2(images, {"a.jpg": regions})
    summary, coco = convert(tmp_path, data, images, label_attr="kind")
    assert summary["warnings"][V.MANY_LABELS] == 1
    assert [n for n, _ in names_and_boxes(coco)] == ["grape", "grape", "leaf"]
    summary, grouped = convert(tmp_path, data, images, label_attr="kind", group_attr="inst")
    assert len(grouped["annotations"]) == 2
    merged = grouped["annotations"][0]
    assert merged["area"] == coco["annotations"][0]["area"] + coco["annotations"][1]["area"]
    assert merged["bbox"] == [5.0, 5.0, 25.0, 10.0]


def test_label_attr_typo_is_an_error(tmp_path, images):
    data = via2(images, {"a.jpg": [polygon(*SQUARE, name="bunch")]})
    with pytest.raises(GrapeInputError, match=r"no region has the attribute 'nmae'.*name"):
        convert(tmp_path, data, images, label_attr="nmae")


def test_exif_rotated_image_gets_the_size_detectron2_sees(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    jpeg(images / "r.jpg", 64, 48, orientation=6)
    _, coco = convert(tmp_path, via2(images, {"r.jpg": [polygon(*SQUARE)]}), images)
    assert (coco["images"][0]["width"], coco["images"][0]["height"]) == (48, 64)


def test_outputs_load_in_pycocotools_and_validate(tmp_path, images):
    _, coco = convert(tmp_path, via2(images, {"a.jpg": [polygon(*SQUARE)]}), images)
    api = COCO(str(tmp_path / "out.json"))
    assert len(api.getAnnIds()) == 1 and api.loadCats(1)[0]["name"] == "bunch"
    assert coco["info"]["converter"].startswith("grape_instances")
    assert validate_coco_file(tmp_path / "out.json", images).ok


def test_keep_polygons_writes_polygon_segmentation(tmp_path, images):
    _, coco = convert(tmp_path, via2(images, {"a.jpg": [polygon(*SQUARE)]}), images,
                      keep_polygons=True)
    assert coco["annotations"][0]["segmentation"] == [[10.0, 10.0, 30.0, 10.0, 30.0, 30.0,
                                                        10.0, 30.0]]
    assert validate_coco_file(tmp_path / "out.json", images).ok


# --------------------------------------------------------------------------- bad regions (warn)


@pytest.mark.parametrize(
    "xs, ys, kind",
    [
        ([10, 20, "30"], [10, 10, 20], P.NON_NUMERIC),
        ([10, 20, None], [10, 10, 20], P.NON_NUMERIC),
        ([10, 20], [10, 10], P.TOO_FEW_POINTS),
        ([10, 20, 30], [10, 10], P.MISMATCHED_XY),
        ([10, 20, 30], [10, 20, 30], P.ZERO_AREA),
        ([100, 120, 120], [100, 100, 120], P.OUTSIDE),
    ],
)
def test_broken_polygons_are_skipped_with_a_count(tmp_path, images, xs, ys, kind):
    regions = [polygon(xs, ys), polygon(*SQUARE)]
    summary, coco = convert(tmp_path, via2(images, {"a.jpg": regions}), images)
    assert summary["warnings"][kind] == 1
    assert len(coco["annotations"]) == 1  # the good square survives


def test_nan_in_the_file_is_a_one_line_error(tmp_path, images):
    """NaN is not JSON (VIA itself writes null, skipped above): the file is refused."""
    regions = [polygon([10, 20, float("nan")], [10, 10, 20]), polygon(*SQUARE)]
    with pytest.raises(GrapeInputError, match=r"project\.json: NaN is not standard JSON"):
        convert(tmp_path, via2(images, {"a.jpg": regions}), images)
    assert not (tmp_path / "out.json").exists()


def test_coordinates_outside_are_clipped_exactly(tmp_path, images):
    # a square half outside the left border: the mask is its in-image half
    summary, coco = convert(tmp_path, via2(images, {"a.jpg": [polygon([-20, 20, 20, -20],
                                                                      [10, 10, 30, 30])]}),
                            images)
    assert summary["warnings"][P.CLIPPED] == 2
    assert coco["annotations"][0]["bbox"] == [0.0, 10.0, 20.0, 20.0]
    assert coco["annotations"][0]["area"] == 400


def test_size_key_problems_only_warn(tmp_path, images):
    for size, kind in ((-1, V.SIZE_UNKNOWN), (123, V.SIZE_MISMATCH)):
        data = via2(images, {"a.jpg": [polygon(*SQUARE)]}, size=size)
        summary, coco = convert(tmp_path, data, images)
        assert summary["warnings"][kind] == 1 and len(coco["annotations"]) == 1


def test_warnings_are_aggregated_not_one_line_per_region(tmp_path, images, caplog):
    regions = [polygon([-5, 20, 20], [10, 10, 20]) for _ in range(50)]
    with caplog.at_level("WARNING", logger="grape_instances"):
        summary, _ = convert(tmp_path, via2(images, {"a.jpg": regions}), images)
    assert summary["warnings"][P.CLIPPED] == 50
    clip_lines = [r for r in caplog.records if "clipped" in r.getMessage()]
    assert len(clip_lines) == 1 and ": 50 (first: a.jpg region 0)" in clip_lines[0].getMessage()


# --------------------------------------------------------------------------- bad files (error)


def test_bad_files_raise_one_line_errors_and_write_nothing(tmp_path, images):
    out = tmp_path / "out.json"
    cases = []
    labelme_like = {"version": "5", "shapes": [], "imagePath": "a.jpg", "imageData": None}
    cases.append((labelme_like, "labelme file, not VIA"))
    cases.append(({"images": [], "annotations": [], "categories": []}, "COCO JSON, not a VIA"))
    cases.append(([1, 2], "not a VIA"))
    cases.append((via2(images, {"missing.jpg": [polygon(*SQUARE)]}, size=10), "image not found"))
    cases.append(({"x": {"filename": "../../etc/passwd", "size": 1, "regions": []}},
                  "resolves outside"))
    cases.append(({"x": {"filename": "/etc/passwd", "size": 1, "regions": []}},
                  "absolute path"))
    dup = via2(images, {"a.jpg": [polygon(*SQUARE)]})
    dup["other"] = dict(next(iter(dup.values())))
    cases.append((dup, "appears twice"))
    for data, message in cases:
        via = tmp_path / "bad.json"
        via.write_text(json.dumps(data))
        with pytest.raises(GrapeInputError, match=message) as err:
            convert_via(via, images, out)
        assert "\n" not in str(err.value)
        assert not out.exists()
    (tmp_path / "trunc.json").write_text('{"a.jpg1": {"filename": ')
    with pytest.raises(GrapeInputError, match="trunc.json: not valid JSON"):
        convert_via(tmp_path / "trunc.json", images, out)


def test_empty_unreadable_and_huge_images_are_errors(tmp_path, images):
    (images / "empty.jpg").write_bytes(b"")
    (images / "text.jpg").write_text("hello")
    for name, message in (("empty.jpg", "0 bytes"), ("text.jpg", "not a readable image")):
        with pytest.raises(GrapeInputError, match=message):
            convert(tmp_path, via2(images, {name: [polygon(*SQUARE)]}), images,
                    strict_images=True)
    with pytest.raises(GrapeInputError, match="above the limit of 1000"):
        convert(tmp_path, via2(images, {"a.jpg": [polygon(*SQUARE)]}), images, max_pixels=1000)


def test_existing_output_refused_without_overwrite(tmp_path, images):
    via = tmp_path / "p.json"
    via.write_text(json.dumps(via2(images, {"a.jpg": [polygon(*SQUARE)]})))
    out = tmp_path / "out.json"
    out.write_text("keep me")
    with pytest.raises(GrapeInputError, match="already exists"):
        convert_via(via, images, out)
    assert out.read_text() == "keep me"
    convert_via(via, images, out, overwrite=True)
    assert json.loads(out.read_text())["annotations"]


# --------------------------------------------------------------------------- synthetic data


def masks_by_file(coco):
    images = {i["id"]: i for i in coco["images"]}
    out = {}
    for a in coco["annotations"]:
        img = images[a["image_id"]]
        m = segmentation_to_mask(a["segmentation"], img["height"], img["width"]).astype(bool)
        out.setdefault(Path(img["file_name"]).name, []).append(m)
    return out


def test_synthetic_via_project_matches_exact_masks(tmp_path, tiny_synth):
    exact = json.loads((tiny_synth / "annotations/instances_train.json").read_text())
    out = tmp_path / "via_train.json"
    summary = convert_via(tiny_synth / "via/via_project_train.json",
                          tiny_synth / "images/train", out, group_attr="instance")
    ours = json.loads(out.read_text())
    assert summary["annotations"] == len(exact["annotations"])
    truth, got = masks_by_file(exact), masks_by_file(ours)
    assert truth.keys() == got.keys()
    ious = []
    for name, masks in truth.items():
        assert len(got[name]) == len(masks)
        for a, b in zip(masks, got[name], strict=True):
            ious.append((a & b).sum() / (a | b).sum())
    assert min(ious) >= 0.9, ious
    # without grouping the occluded bunches fall apart into more instances
    ungrouped = convert_via(tiny_synth / "via/via_project_train.json",
                            tiny_synth / "images/train", tmp_path / "parts.json")
    assert ungrouped["annotations"] > summary["annotations"]


def test_input_file_is_never_modified(tmp_path, images):
    via = tmp_path / "p.json"
    via.write_text(json.dumps(via2(images, {"a.jpg": [polygon([-5, 90, 20], [1, 1, 30])]})))
    before = via.read_bytes()
    convert_via(via, images, tmp_path / "o.json")
    assert via.read_bytes() == before


def test_converter_benchmark_rows():
    from grape_instances.experiments.convert_benchmark import (
        CONVERTER_COLUMNS,
        run_converter_benchmark,
    )

    (row,) = run_converter_benchmark(counts=(30,))
    assert {k for k, _, _ in CONVERTER_COLUMNS} <= row.keys()
    assert row["images"] == 30 and row["images_per_s"] > 0 and row["seconds"] > 0
    assert row["peak_mb"] > 0 and row["input_mb"] > 0
    assert row["extra_mb"] == pytest.approx(row["peak_mb"] - row["input_mb"])
