"""labelme -> COCO: agreement with labelme's own exports, shape types, paths, bad input."""

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from labelme.utils import shape_to_mask
from PIL import Image

from grape_instances.convert import labelme as L
from grape_instances.convert.labelme import convert_labelme
from grape_instances.convert.validate import validate_coco_file
from grape_instances.core import polygons as P
from grape_instances.core.errors import GrapeInputError
from grape_instances.core.masks import segmentation_to_mask
from tests.helpers import PEER_DATA

VOC = PEER_DATA / "labelme_voc"


@pytest.fixture(scope="module")
def voc_coco(tmp_path_factory):
    out = tmp_path_factory.mktemp("voc") / "voc.json"
    summary = convert_labelme([VOC / "data_annotated"], out, labels_file=VOC / "labels.txt")
    return summary, json.loads(out.read_text())


def _by_image(coco):
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    images = {i["id"]: i for i in coco["images"]}
    out: dict[str, list] = {}
    for a in coco["annotations"]:
        img = images[a["image_id"]]
        out.setdefault(Path(img["file_name"]).stem, []).append((cats[a["category_id"]], a, img))
    return out


def _instance_png_ious(coco) -> np.ndarray:
    """Best IoU of every non-crowd instance with an instance of labelme2voc's id map."""
    ious = []
    for stem, anns in _by_image(coco).items():
        ids = np.array(Image.open(VOC / "reference_voc_object" / f"{stem}.png"))
        for _, a, img in anns:
            if a["iscrowd"]:
                continue
            m = segmentation_to_mask(a["segmentation"], img["height"], img["width"]).astype(bool)
            ious.append(max((m & (ids == k)).sum() / (m | (ids == k)).sum()
                            for k in np.unique(ids) if k not in (0, 255)))
    return np.array(ious)


@pytest.mark.shared("peer-data")
def test_same_instances_boxes_and_areas_as_labelme2coco(voc_coco):
    summary, ours = voc_coco
    ref = json.loads((VOC / "reference_coco/annotations.json").read_text())
    mine, theirs = _by_image(ours), _by_image(ref)
    assert mine.keys() == theirs.keys()
    for stem in theirs:
        instances = [(n, a) for n, a, _ in mine[stem] if not a["iscrowd"]]
        assert [n for n, _ in instances] == [n for n, _, _ in theirs[stem]], stem
        for (_, a), (_, b, _) in zip(instances, theirs[stem], strict=True):
            assert np.abs(np.array(a["bbox"]) - np.array(b["bbox"])).max() <= 2
            assert a["area"] == pytest.approx(b["area"], rel=0.03)
    # the two __ignore__ shapes are ignore regions, not instances
    assert sum(a["iscrowd"] for a in ours["annotations"]) == 2
    assert summary["annotations"] == len(ref["annotations"]) + 2
    # categories: labels.txt order, without __ignore__ / _background_
    assert [c["name"] for c in ours["categories"]] == L.read_labels_file(VOC / "labels.txt")


@pytest.mark.shared("peer-data")
def test_masks_match_labelme2voc_at_least_as_well_as_labelme2coco(voc_coco):
    ours = _instance_png_ious(voc_coco[1])
    ref = _instance_png_ious(json.loads((VOC / "reference_coco/annotations.json").read_text()))
    assert len(ours) == len(ref) == 12
    assert ours.min() >= 0.93 and ours.mean() >= 0.97
    assert ours.min() >= ref.min() and ours.mean() >= ref.mean()


def test_group_id_merges_shapes_of_one_instance(voc_coco):
    persons = [a for n, a, _ in _by_image(voc_coco[1])["2011_000003"] if n == "person"]
    assert len(persons) == 2  # three person shapes, two of them sharing group_id 0


@pytest.mark.shared("peer-data")
def test_voc_output_validates(voc_coco, tmp_path):
    out = tmp_path / "v.json"
    out.write_text(json.dumps(voc_coco[1]))
    assert validate_coco_file(out, VOC / "data_annotated").ok


# --------------------------------------------------------------------------- shape types


def _png_b64(mask: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _write_labelme(folder: Path, stem: str, shapes, image_path="img.jpg", image_data=None,
                   size=(48, 64)):
    record = {"version": "5.0.1", "flags": {}, "shapes": shapes, "imagePath": image_path,
              "imageData": image_data, "imageHeight": size[0], "imageWidth": size[1]}
    path = folder / f"{stem}.json"
    path.write_text(json.dumps(record))
    return path


def _shape(label, points, shape_type="polygon", group_id=None, **extra):
    return {"label": label, "points": points, "group_id": group_id, "shape_type": shape_type,
            "flags": {}, **extra}


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(d / "img.jpg")
    return d


def _convert(folder, out, **kwargs):
    summary = convert_labelme([folder], out, overwrite=True, **kwargs)
    return summary, json.loads(out.read_text())


def test_rectangle_circle_mask_areas_are_labelmes(folder, tmp_path):
    patch = np.zeros((6, 8), bool)
    patch[1:5, 2:7] = True
    shapes = [
        _shape("a", [[5, 5], [15, 12]], "rectangle"),
        _shape("b", [[40, 20], [40, 28]], "circle"),
        _shape("c", [[30, 2], [37, 7]], "mask", mask=_png_b64(patch)),
        _shape("d", [[1, 40], [20, 40]], "line"),
        _shape("e", [[1, 1], [5, 5]], "point"),
    ]
    _write_labelme(folder, "img", shapes)
    summary, coco = _convert(folder, tmp_path / "o.json")
    assert summary["warnings"][L.SKIPPED_TYPE] == 2
    areas = [a["area"] for a in coco["annotations"]]
    expected = [shape_to_mask((48, 64), s["points"], s["shape_type"]).sum() for s in shapes[:2]]
    assert areas == [*expected, patch.sum()]
    assert coco["annotations"][2]["bbox"] == [32.0, 3.0, 5.0, 4.0]


def test_bad_shapes_are_skipped_with_counts(folder, tmp_path):
    shapes = [
        _shape("a", [[1, 1], [5, 1]]),                       # 2 points
        _shape("a", [[1, 1], [5, 1], [9, 1]]),               # zero area
        _shape("a", [[1, 1], [5, "x"], [9, 9]]),             # non-numeric
        _shape("a", [[1, 1], [5, None], [9, 9]]),            # null (a NaN file is refused)
        _shape("a", [[-10, 1], [30, 1], [30, 20]]),          # clipped by the rasteriser
        _shape("a", [[1, 1], [5, 1], [5, 5]], "rectangle"),  # 3 points: malformed rectangle
    ]
    _write_labelme(folder, "img", shapes)
    summary, coco = _convert(folder, tmp_path / "o.json")
    w = summary["warnings"]
    assert (w[P.TOO_FEW_POINTS], w[P.ZERO_AREA], w[P.NON_NUMERIC], w[P.CLIPPED],
            w[L.MALFORMED]) == (1, 1, 2, 1, 1)
    assert len(coco["annotations"]) == 1 and coco["annotations"][0]["bbox"][0] == 0.0


def test_image_path_relative_to_json_inside_root_only(tmp_path):
    root = tmp_path / "dataset"
    (root / "images").mkdir(parents=True)
    (root / "labelme").mkdir()
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(root / "images/x.jpg")
    _write_labelme(root / "labelme", "x", [_shape("bunch", [[1, 1], [20, 1], [20, 20]])],
                   image_path="..\\images\\x.jpg")
    out = tmp_path / "o.json"
    with pytest.raises(GrapeInputError, match="resolves outside"):
        convert_labelme([root / "labelme"], out)
    assert not out.exists()
    _, coco = _convert(root / "labelme", out, root=root)
    assert coco["images"][0]["file_name"] == "images/x.jpg"
    assert validate_coco_file(out, root).ok


def test_embedded_image_data_used_when_file_absent(folder, tmp_path):
    raw = (folder / "img.jpg").read_bytes()
    _write_labelme(folder, "img", [_shape("bunch", [[1, 1], [20, 1], [20, 20]])],
                   image_path="gone/img.jpg", image_data=base64.b64encode(raw).decode())
    out = tmp_path / "out" / "train.json"
    summary, coco = _convert(folder, out)
    assert summary["warnings"][L.EMBEDDED] == 1
    img = coco["images"][0]
    extracted = (folder / img["file_name"]).resolve()
    assert extracted == (tmp_path / "out/train_images/gone/img.jpg").resolve()
    assert extracted.read_bytes() == raw and (img["width"], img["height"]) == (64, 48)
    assert validate_coco_file(out, folder).ok


def test_ignore_label_becomes_crowd_region(folder, tmp_path):
    _write_labelme(folder, "img", [_shape("bunch", [[1, 1], [20, 1], [20, 20]]),
                                   _shape("__ignore__", [[30, 1], [50, 1], [50, 20]])])
    _, coco = _convert(folder, tmp_path / "o.json")
    assert [a["iscrowd"] for a in coco["annotations"]] == [0, 1]
    assert [c["name"] for c in coco["categories"]] == ["bunch"]


def test_labels_file_fixes_order_and_rejects_unknown_labels(folder, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("__ignore__\n_background_\nleaf\nbunch\n")
    _write_labelme(folder, "img", [_shape("bunch", [[1, 1], [20, 1], [20, 20]])])
    _, coco = _convert(folder, tmp_path / "o.json", labels_file=labels)
    assert [c["name"] for c in coco["categories"]] == ["leaf", "bunch"]
    _write_labelme(folder, "img", [_shape("stem", [[1, 1], [20, 1], [20, 20]])])
    with pytest.raises(GrapeInputError, match="img.json: label 'stem' is not in"):
        _convert(folder, tmp_path / "o2.json", labels_file=labels)


def test_bad_files_are_one_line_errors(folder, tmp_path):
    out = tmp_path / "o.json"
    cases = [
        ('{"shapes": [', "not valid JSON"),
        (json.dumps({"_via_img_metadata": {}}), "not a labelme file.*VIA"),
        (json.dumps({"shapes": [], "imagePath": "/etc/passwd", "imageData": None}),
         "absolute path"),
        (json.dumps({"shapes": [], "imagePath": "../../../etc/passwd", "imageData": None}),
         "resolves outside"),
        (json.dumps({"shapes": [], "imagePath": "nope.jpg", "imageData": None}),
         "image not found"),
        (json.dumps({"shapes": [{"label": "a", "points": [], "group_id": "x"}],
                     "imagePath": "img.jpg"}), "non-integer group_id"),
    ]
    for text, message in cases:
        (folder / "img.json").write_text(text)
        with pytest.raises(GrapeInputError, match=message) as err:
            convert_labelme([folder], out)
        assert "\n" not in str(err.value) and not out.exists()
    (folder / "img.json").unlink()
    _write_labelme(folder, "one", [_shape("a", [[1, 1], [9, 1], [9, 9]])])
    _write_labelme(folder, "two", [_shape("a", [[1, 1], [9, 1], [9, 9]])])
    with pytest.raises(GrapeInputError, match="also annotated by"):
        convert_labelme([folder], out)


# --------------------------------------------------------------------------- synthetic data


def test_synthetic_labelme_files_match_exact_masks(tmp_path, tiny_synth):
    out = tmp_path / "lm.json"
    convert_labelme([tiny_synth / "labelme/train"], out, root=tiny_synth)
    exact = json.loads((tiny_synth / "annotations/instances_train.json").read_text())
    ours = json.loads(out.read_text())

    def masks(coco):
        imgs = {i["id"]: i for i in coco["images"]}
        by: dict[str, list] = {}
        for a in coco["annotations"]:
            im = imgs[a["image_id"]]
            by.setdefault(Path(im["file_name"]).name, []).append(
                segmentation_to_mask(a["segmentation"], im["height"], im["width"]).astype(bool))
        return by

    truth, got = masks(exact), masks(ours)
    assert truth.keys() == got.keys()
    ious = [(a & b).sum() / (a | b).sum() for k in truth
            for a, b in zip(truth[k], got[k], strict=True)]
    assert min(ious) >= 0.9, np.round(ious, 3)


def test_inputs_are_not_modified(folder, tmp_path):
    path = _write_labelme(folder, "img", [_shape("a", [[-4, 1], [90, 1], [9, 70]])])
    before = path.read_bytes()
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    _convert(copy, tmp_path / "o.json")
    assert (copy / "img.json").read_bytes() == before


if __name__ == "__main__":  # python -m tests.test_labelme: the README's agreement figures
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "voc.json"
        convert_labelme([VOC / "data_annotated"], out, labels_file=VOC / "labels.txt")
        ours = json.loads(out.read_text())
    ref = json.loads((VOC / "reference_coco/annotations.json").read_text())
    for name, coco in (("ours", ours), ("labelme's COCO export", ref)):
        ious = _instance_png_ious(coco)
        print(f"{name}: {len(ious)} instances, IoU with labelme's VOC instance PNGs "
              f"min {ious.min():.3f}, mean {ious.mean():.3f}")
