"""WGISD importer on a tiny tree in WGISD's own layout, built here."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from grape_instances.convert.wgisd import convert_wgisd, read_yolo_boxes
from grape_instances.core.errors import GrapeInputError
from grape_instances.core.masks import rle_to_mask

from .helpers import assert_user_error, run_tool

H, W = 60, 80


def _masks(seed: int, n: int) -> np.ndarray:
    """n non-empty, partly overlapping ellipse masks, H x W x n uint8 (as WGISD stores them)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((H, W, n), np.uint8)
    for k in range(n):
        layer = np.zeros((H, W), np.uint8)
        center = (int(rng.integers(15, W - 15)), int(rng.integers(15, H - 15)))
        axes = (int(rng.integers(5, 14)), int(rng.integers(5, 14)))
        cv2.ellipse(layer, center, axes, float(rng.integers(0, 180)), 0, 360, 1, -1)
        out[:, :, k] = layer
    return out


def _yolo_lines(masks: np.ndarray) -> str:
    lines = []
    for k in range(masks.shape[2]):
        ys, xs = np.nonzero(masks[:, :, k])
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        lines.append(
            f"0 {(x0 + x1) / 2 / W:.6f} {(y0 + y1) / 2 / H:.6f} {(x1 - x0) / W:.6f} "
            f"{(y1 - y0) / H:.6f}"
        )
    return "\n".join(lines) + "\n"


def make_wgisd(root: Path) -> dict[str, np.ndarray]:
    """train: 2 masked + 1 box-only image; test: 1 masked. Returns the masks by stem."""
    data = root / "data"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    masks = {}
    spec = {"CDY_2015": 3, "SYH_2017-04-27_1269": 2, "CSV_1877": 1, "SVB_1954": 2}
    for i, (stem, n) in enumerate(spec.items()):
        m = _masks(i, n)
        cv2.imwrite(str(data / f"{stem}.jpg"), rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
        (data / f"{stem}.txt").write_text(_yolo_lines(m))
        if stem != "CSV_1877":  # the box-only image
            np.savez_compressed(data / f"{stem}.npz", m)
            masks[stem] = m
    (root / "train_masked.txt").write_text("CDY_2015\nSYH_2017-04-27_1269\n")
    (root / "train.txt").write_text("CDY_2015\nSYH_2017-04-27_1269\nCSV_1877\n")
    (root / "test_masked.txt").write_text("SVB_1954\n")
    (root / "test.txt").write_text("SVB_1954\n")
    (root / "NOTES.txt").write_text("not a split list\n")
    return masks


def test_masked_images_become_exact_rle_instances(tmp_path):
    masks = make_wgisd(tmp_path / "wgisd")
    summary = convert_wgisd(tmp_path / "wgisd", tmp_path / "out")
    assert sorted(p.name for p in summary.outputs) == ["wgisd_test.json", "wgisd_train.json"]
    assert summary.box_only == {"train": 1, "test": 0}
    assert summary.instances == {"train": 5, "test": 2}
    seen = 0
    for split in ("train", "test"):
        coco = COCO(str(tmp_path / "out" / f"wgisd_{split}.json"))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["bunch"]
        for img in coco.dataset["images"]:
            stem = Path(img["file_name"]).stem
            assert img["file_name"] == f"data/{stem}.jpg"
            assert (img["height"], img["width"]) == (H, W)
            assert img["variety"] == stem[:3]
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
            assert len(anns) == masks[stem].shape[2]
            for k, ann in enumerate(anns):
                np.testing.assert_array_equal(rle_to_mask(ann["segmentation"]),
                                              masks[stem][:, :, k])
                assert ann["area"] == masks[stem][:, :, k].sum()
                seen += 1
    assert seen == 7
    assert not (tmp_path / "out" / "wgisd_train_boxes.json").exists()


def test_box_only_images_go_to_a_separate_json_on_request(tmp_path):
    make_wgisd(tmp_path / "wgisd")
    convert_wgisd(tmp_path / "wgisd", tmp_path / "out", boxes_json=True)
    boxes = json.loads((tmp_path / "out" / "wgisd_train_boxes.json").read_text())
    assert [i["file_name"] for i in boxes["images"]] == ["data/CSV_1877.jpg"]
    assert len(boxes["annotations"]) == 1 and "segmentation" not in boxes["annotations"][0]
    expected = read_yolo_boxes(tmp_path / "wgisd" / "data" / "CSV_1877.txt", W, H)[0]
    np.testing.assert_allclose(boxes["annotations"][0]["bbox"], expected, atol=0.01)
    instances = json.loads((tmp_path / "out" / "wgisd_train.json").read_text())
    assert "data/CSV_1877.jpg" not in [i["file_name"] for i in instances["images"]]
    assert not (tmp_path / "out" / "wgisd_test_boxes.json").exists()  # test has no box-only


def test_mask_count_differing_from_box_count_names_the_file_and_writes_nothing(tmp_path):
    root = tmp_path / "wgisd"
    make_wgisd(root)
    np.savez_compressed(root / "data" / "SVB_1954.npz", _masks(9, 3))  # 3 masks, 2 boxes
    with pytest.raises(GrapeInputError, match=r"SVB_1954\.npz: 3 masks but 2 boxes"):
        convert_wgisd(root, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda r: (r / "data" / "CDY_2015.txt").write_text("0 0.5 0.5 x 0.1\n"),
         r"CDY_2015\.txt: line 1: expected 'class cx cy w h'"),
        (lambda r: (r / "data" / "CDY_2015.npz").write_bytes(b"not a zip"),
         r"CDY_2015\.npz: not a readable \.npz"),
        (lambda r: np.savez(r / "data" / "CDY_2015.npz", masks=np.zeros((H, W, 3))),
         r"CDY_2015\.npz: no 'arr_0' array"),
        (lambda r: np.savez(r / "data" / "CDY_2015.npz", np.zeros((H + 1, W, 3), np.uint8)),
         r"CDY_2015\.npz: masks are 80 x 61 but the image is 80 x 60"),
        (lambda r: (r / "data" / "CDY_2015.npz").unlink(),
         r"CDY_2015\.npz: mask file not found"),
        (lambda r: (r / "data" / "CDY_2015.jpg").write_bytes(b""),
         r"CDY_2015\.jpg: image file is empty"),
        (lambda r: (r / "train_masked.txt").write_text("CDY_2015\n../../../etc/passwd\n"),
         r"resolves outside"),
        (lambda r: (r / "test_masked.txt").write_text("SVB_1954\nSVB_1954\n"),
         r"test_masked\.txt: line 2: image id 'SVB_1954' listed twice"),
    ],
)
def test_bad_files_are_named_and_nothing_is_written(tmp_path, damage, message):
    root = tmp_path / "wgisd"
    make_wgisd(root)
    damage(root)
    with pytest.raises(GrapeInputError, match=message):
        convert_wgisd(root, tmp_path / "out", strict_images=True)  # empty image: refused
    assert not (tmp_path / "out").exists()


def test_missing_root_and_existing_outputs_are_refused(tmp_path):
    with pytest.raises(GrapeInputError, match="WGISD root folder not found"):
        convert_wgisd(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GrapeInputError, match="no 'data/' folder"):
        convert_wgisd(tmp_path / "empty", tmp_path / "out")
    make_wgisd(tmp_path / "wgisd")
    out = tmp_path / "out"
    out.mkdir()
    (out / "wgisd_test.json").write_text("{}")
    with pytest.raises(GrapeInputError, match="already exists"):
        convert_wgisd(tmp_path / "wgisd", out)
    assert not (out / "wgisd_train.json").exists()
    assert (out / "wgisd_test.json").read_text() == "{}"
    convert_wgisd(tmp_path / "wgisd", out, overwrite=True)
    assert len(json.loads((out / "wgisd_test.json").read_text())["images"]) == 1


def test_without_split_lists_every_image_forms_split_all(tmp_path):
    root = tmp_path / "wgisd"
    make_wgisd(root)
    for name in ("train_masked.txt", "train.txt", "test_masked.txt", "test.txt"):
        (root / name).unlink()
    summary = convert_wgisd(root, tmp_path / "out")
    assert summary.images == {"all": 3} and summary.box_only == {"all": 1}
    assert [p.name for p in summary.outputs] == ["wgisd_all.json"]


@pytest.mark.slow
def test_cli_wgisd_converts_and_reports_bad_files_in_one_line(tmp_path):
    root = tmp_path / "wgisd"
    make_wgisd(root)
    run_tool("convert.py", "wgisd", "--root", str(root), "--out-dir", str(tmp_path / "out"),
             "--boxes-json", check=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "wgisd_test.json", "wgisd_train.json", "wgisd_train_boxes.json"]
    np.savez_compressed(root / "data" / "CDY_2015.npz", _masks(1, 1))
    proc = run_tool("convert.py", "wgisd", "--root", str(root), "--out-dir",
                    str(tmp_path / "out2"))
    assert_user_error(proc, "CDY_2015.npz", "1 masks but 3 boxes")
    assert not (tmp_path / "out2").exists()


def _builder_dict(records, info: dict) -> dict:
    """What the one CocoBuilder makes of reader records (date and extras from ``info``)."""
    from grape_instances.convert.coco import CocoBuilder, add_record

    builder = CocoBuilder(records.categories, source=records.source)
    for rec in records.images:
        add_record(builder, rec, records.warnings, "empty")
    builder.info = info
    return builder.to_dict()


def test_read_wgisd_returns_the_records_the_written_coco_holds(tmp_path):
    from grape_instances.convert.wgisd import read_wgisd

    masks = make_wgisd(tmp_path / "wgisd")
    convert_wgisd(tmp_path / "wgisd", tmp_path / "out")
    records = read_wgisd(tmp_path / "wgisd")
    assert sorted(records) == ["test", "train"]
    first = next(records["train"].images)
    assert first.file_name == "data/CDY_2015.jpg" and first.extras == {"variety": "CDY"}
    assert all(np.array_equal(i.mask, masks["CDY_2015"][:, :, k] > 0)
               for k, i in enumerate(first.instances))
    for split, split_records in read_wgisd(tmp_path / "wgisd").items():
        written = json.loads((tmp_path / "out" / f"wgisd_{split}.json").read_text())
        assert _builder_dict(split_records, written["info"]) == written


def test_read_wgisd_lists_undecodable_images_and_accepts_a_symlinked_root(tmp_path):
    from grape_instances.convert.wgisd import read_wgisd

    make_wgisd(tmp_path / "wgisd")
    (tmp_path / "wgisd" / "data" / "SVB_1954.jpg").write_bytes(b"not a jpeg")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "wgisd")  # ../shared is a symlink on the project's machines
    records = read_wgisd(link)
    assert [r.file_name for r in records["test"].images] == []
    assert records["test"].undecodable == [str(link / "data" / "SVB_1954.jpg")]
    assert [r.file_name for r in records["train"].images] == [
        "data/CDY_2015.jpg", "data/SYH_2017-04-27_1269.jpg"]
