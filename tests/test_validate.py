"""validate: every check fires on a broken file, and passes on what our converters write."""

import copy
import json

import numpy as np
import pytest
from PIL import Image

from grape_instances.convert.coco import CocoBuilder
from grape_instances.convert.labelme import convert_labelme
from grape_instances.convert.validate import validate_coco, validate_coco_file
from grape_instances.convert.via import convert_via
from grape_instances.core.errors import GrapeInputError
from tests.helpers import PEER_DATA

PEER = PEER_DATA


@pytest.fixture
def dataset(tmp_path):
    """Two images on disk and a valid COCO dict (polygon + RLE annotations) for them."""
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.jpg"):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(images / name)
    builder = CocoBuilder(["bunch"])
    a = builder.add_image("a.jpg", 48, 64)
    b = builder.add_image("b.jpg", 48, 64)
    builder.add_annotation(a, polygons=[[10, 10, 30, 10, 30, 30, 10, 30]], keep_polygons=True)
    mask = np.zeros((48, 64), np.uint8)
    mask[5:20, 40:60] = 1
    builder.add_annotation(b, mask=mask)
    return images, builder.to_dict()


def errors_of(data, images, **kwargs):
    report = validate_coco(data, images, **kwargs)
    return report, set(report.errors.counts)


def test_valid_file_passes(dataset):
    images, data = dataset
    report, errors = errors_of(data, images)
    assert report.ok and not errors and not report.warnings
    assert "result: OK" in report.format()


MUTATIONS = {
    "duplicate image ids": (lambda d: d["images"][1].update(id=1), "duplicate image ids"),
    "duplicate annotation ids": (lambda d: d["annotations"][1].update(id=1),
                                 "duplicate annotation ids"),
    "string image ids": (lambda d: (d["images"][0].update(id="a"),
                                    d["annotations"][0].update(image_id="a")),
                         "string image ids"),
    "unknown category": (lambda d: d["annotations"][0].update(category_id=9),
                         "category_id is not a category"),
    "no categories": (lambda d: d.update(categories=[]), "no categories"),
    "missing file": (lambda d: d["images"][0].update(file_name="nope.jpg"), "not found"),
    "outside": (lambda d: d["images"][0].update(file_name="../../etc/passwd"), "outside"),
    "size mismatch": (lambda d: d["images"][0].update(height=47), "differ from the file"),
    "missing area": (lambda d: d["annotations"][0].pop("area"), "without 'area'"),
    "empty bbox": (lambda d: d["annotations"][0].update(bbox=[]), "malformed bbox"),
    "wrong bbox": (lambda d: d["annotations"][0].update(bbox=[0, 0, 5, 5]),
                   "disagree with the mask"),
    "flat polygon": (lambda d: d["annotations"][0].update(
        segmentation=[10, 10, 30, 10, 30, 30]), "flat segmentation"),
    "short polygon": (lambda d: d["annotations"][0].update(segmentation=[[10, 10, 30, 10]]),
                      ">= 6 numbers"),
    "mask outside": (lambda d: d["annotations"][0].update(
        segmentation=[[70, 50, 80, 50, 80, 60]]), "empty masks"),
    "far coordinate": (lambda d: d["annotations"][0].update(
        segmentation=[[10, 10, 1e9, 10, 30, 30]]), "more than 1 image size outside"),
    "far negative": (lambda d: d["annotations"][0].update(
        segmentation=[[10, 10, 30, 10, 30, -65]]), "more than 1 image size outside"),
    "bbox of 3": (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), "malformed bbox"),
    "bbox of strings": (lambda d: d["annotations"][0].update(bbox=["1", 2, 3, 4]),
                        "malformed bbox"),
    "no height": (lambda d: d["images"][0].pop("height"), "positive integer height / width"),
    "box only": (lambda d: d["annotations"][0].pop("segmentation"), "without a segmentation"),
    "null segmentation": (lambda d: d["annotations"][0].update(segmentation=None),
                          "without a segmentation"),
    "empty segmentation": (lambda d: d["annotations"][0].update(segmentation=[]),
                           "without a segmentation"),
    "not a segmentation": (lambda d: d["annotations"][0].update(segmentation="x"),
                           "neither polygons nor RLE"),
    "rle float size": (lambda d: d["annotations"][1]["segmentation"].update(size=[48.0, 64.0]),
                       "RLE 'size'"),
    "rle int size": (lambda d: d["annotations"][1]["segmentation"].update(size=48),
                     "RLE 'size'"),
    "rle huge size": (lambda d: d["annotations"][1]["segmentation"].update(size=[2 ** 70, 1]),
                      "RLE sizes"),
    "rle float counts": (lambda d: d["annotations"][1]["segmentation"].update(counts=[1.5, 3]),
                         "malformed RLE counts"),
    "rle huge counts": (lambda d: d["annotations"][1]["segmentation"].update(
        counts=[2 ** 70, 48 * 64]), "malformed RLE counts"),
    "rle negative counts": (lambda d: d["annotations"][1]["segmentation"].update(
        counts=[-1, 48 * 64 + 1]), "malformed RLE counts"),
    "rle counts of another size": (lambda d: d["annotations"][1]["segmentation"].update(
        counts=[10, 20]), "malformed RLE counts"),
    "rle counts dict": (lambda d: d["annotations"][1]["segmentation"].update(counts={}),
                        "malformed RLE counts"),
    "rle counts float": (lambda d: d["annotations"][1]["segmentation"].update(counts=3.5),
                         "malformed RLE counts"),
    "rle garbage string": (lambda d: d["annotations"][1]["segmentation"].update(counts="!!~"),
                           "malformed RLE counts"),
    "rle short string": (lambda d: d["annotations"][1]["segmentation"].update(
        counts=d["annotations"][1]["segmentation"]["counts"][:-2]), "malformed RLE counts"),
    "rle size": (lambda d: d["annotations"][1]["segmentation"].update(size=[10, 10]),
                 "RLE sizes"),
    "not coco": (lambda d: d.pop("annotations"), "not a COCO instances JSON"),
    "iscrowd": (lambda d: d["annotations"][0].update(iscrowd=2), "iscrowd"),
}


@pytest.mark.parametrize("name", MUTATIONS)
def test_each_problem_is_reported(dataset, name):
    images, data = dataset
    mutate, fragment = MUTATIONS[name]
    broken = copy.deepcopy(data)
    mutate(broken)
    report, errors = errors_of(broken, images)
    assert not report.ok
    assert any(fragment in e for e in errors), errors
    assert "FAILED" in report.format()


def test_exif_rotated_sizes_are_explained(dataset):
    images, data = dataset
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(images / "a.jpg").save(images / "a.jpg", exif=exif)  # now 48 wide, 64 tall
    report, errors = errors_of(data, images)
    assert any("EXIF orientation" in e for e in errors), errors
    fixed = copy.deepcopy(data)
    fixed["images"][0].update(width=48, height=64)
    fixed["annotations"] = [a for a in fixed["annotations"] if a["image_id"] != 1]
    assert validate_coco(fixed, images).ok


def test_deep_decodes_pixels(dataset):
    images, data = dataset
    big = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(big).save(images / "a.jpg", quality=95)
    raw = (images / "a.jpg").read_bytes()
    (images / "a.jpg").write_bytes(raw[: len(raw) * 2 // 3])  # header intact, pixels cut
    assert validate_coco(data, images).ok
    report, errors = errors_of(data, images, deep=True)
    assert any("cannot be decoded" in e for e in errors), errors


def test_area_mismatch_and_empty_images_only_warn(dataset):
    images, data = dataset
    data["annotations"][0]["area"] = 1.0
    data["annotations"].pop(1)
    report = validate_coco(data, images)
    assert report.ok
    assert any("area" in w for w in report.warnings.counts)
    assert any("without annotations" in w for w in report.warnings.counts)


@pytest.mark.shared("peer-data")
def test_via_own_coco_export_is_flagged():
    report = validate_coco_file(PEER / "via/nsy0328/sample_coco.json", PEER / "via/nsy0328")
    assert not report.ok
    assert report.errors["annotations without 'area' (COCOeval needs it)"] == 4


def test_via2_style_point_export_is_flagged(dataset):
    """VIA 2's COCO export: box area as `area`, `bbox: []` for point regions."""
    images, data = dataset
    data["annotations"].append({"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 0,
                                "segmentation": [[20, 20]], "area": 0, "bbox": []})
    report, errors = errors_of(data, images)
    assert any("bbox" in e for e in errors) and any(">= 6 numbers" in e for e in errors)


@pytest.mark.shared("peer-data")
def test_our_converter_outputs_pass(tmp_path, tiny_synth):
    via_out = tmp_path / "via.json"
    convert_via(PEER / "via/nsy0328/sample.json", PEER / "via/nsy0328", via_out,
                label_attr="name")
    assert validate_coco_file(via_out, PEER / "via/nsy0328", deep=True).ok
    synth_out = tmp_path / "synth.json"
    convert_via(tiny_synth / "via/via_project_val.json", tiny_synth / "images/val", synth_out,
                group_attr="instance")
    assert validate_coco_file(synth_out, tiny_synth / "images/val").ok
    lm_out = tmp_path / "lm.json"
    convert_labelme([PEER / "labelme_voc/data_annotated"], lm_out)
    report = validate_coco_file(lm_out, PEER / "labelme_voc/data_annotated")
    assert report.ok, report.format()
    assert validate_coco_file(tiny_synth / "annotations/instances_val.json",
                              tiny_synth / "images/val").ok


def test_missing_or_malformed_json_is_a_user_error(tmp_path):
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(GrapeInputError, match="not valid JSON"):
        validate_coco_file(tmp_path / "bad.json", tmp_path)
    with pytest.raises(GrapeInputError, match="file not found"):
        validate_coco_file(tmp_path / "none.json", tmp_path)
    (tmp_path / "ok.json").write_text(json.dumps({"images": [], "annotations": [],
                                                   "categories": []}))
    with pytest.raises(GrapeInputError, match="images folder not found"):
        validate_coco_file(tmp_path / "ok.json", tmp_path / "nothere")


def test_rle_string_counts_are_the_runs_of_the_mask():
    """The compressed-RLE reader behind "malformed RLE counts" agrees with pycocotools."""
    from pycocotools import mask as mask_utils

    from grape_instances.convert.validate import rle_string_counts

    rng = np.random.default_rng(0)
    for i in range(60):
        h, w = (int(v) for v in rng.integers(1, 200, 2))
        mask = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        if i % 3 == 0:
            mask[:] = i % 2
        counts = mask_utils.encode(np.asfortranarray(mask))["counts"]
        flat = mask.flatten(order="F")
        edges = np.concatenate(([0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]))
        runs = ([0] if flat[0] else []) + np.diff(edges).tolist()
        assert rle_string_counts(counts.decode("ascii"), h * w).tolist() == runs
        assert rle_string_counts(counts, h * w + 1) is None  # one pixel short
        assert rle_string_counts(counts, h * w - 1) is None  # one pixel too many


def test_box_only_data_is_fine_for_a_box_model(dataset):
    images, data = dataset
    for ann in data["annotations"]:
        del ann["segmentation"]
    assert not validate_coco(data, images).ok
    assert validate_coco(data, images, masks=False).ok
    data["annotations"][0]["segmentation"] = [10, 10, 30, 10, 30, 30]  # Detectron2 crashes
    report, errors = errors_of(data, images, masks=False)
    assert any("flat segmentation" in e for e in errors)


def test_json_sizes_above_the_pixel_limit_are_not_rasterised(dataset):
    """A JSON claiming a 10^6 x 10^6 image: reported, and no mask of that size is made."""
    images, data = dataset
    data["images"][0].update(height=10 ** 6, width=10 ** 6)
    data["annotations"][0]["segmentation"] = [[0, 0, 10 ** 6, 0, 10 ** 6, 10 ** 6]]
    report, errors = errors_of(data, images)
    assert "images above the pixel limit" in errors
    assert not any("mask" in e for e in errors), errors


def test_a_16_bit_image_is_an_error_with_and_without_deep(dataset):
    images, data = dataset
    Image.fromarray(np.full((48, 64), 50000, np.uint16)).save(images / "gray16.png")
    data["images"][0]["file_name"] = "gray16.png"
    for deep in (False, True):
        report, errors = errors_of(data, images, deep=deep)
        assert any("16-bit" in e for e in errors), errors
