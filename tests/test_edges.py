"""Edge-detection auto-annotation: accuracy on synthetic one-bunch images, COCO + VIA output."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from grape_instances.convert.edges import auto_annotate, convert_edges, detect_background
from grape_instances.convert.via import convert_via
from grape_instances.core.errors import GrapeInputError
from grape_instances.core.masks import mask_iou, rle_to_mask, segmentation_to_mask
from grape_instances.experiments.edge_benchmark import edge_iou_benchmark
from grape_instances.synthetic.export import write_sample_images
from grape_instances.synthetic.render import SynthConfig, image_rng, render_scene

from .edge_bunches import dense_bunch, loose_bunch
from .helpers import assert_user_error, run_tool


def test_black_background_reaches_iou_0_9():
    """Measured 0.957 (20 images, seed 0); the bar leaves a small margin below it."""
    result = edge_iou_benchmark(20, "black", seed=0)
    assert result["images"] == 20
    assert result["mean_iou"] >= 0.93, result
    assert result["auto_background_accuracy"] >= 0.95, result


def test_natural_background_is_measured_and_not_broken():
    """Natural backgrounds are hard for a classical pipeline (README). Measured on this seed:
    mean IoU 0.811, backgrounds all recognised; the bars leave a small margin below."""
    result = edge_iou_benchmark(8, "natural", seed=0, size=256)
    assert 0.0 <= result["min_iou"] <= result["mean_iou"] <= 1.0
    assert result["mean_iou"] >= 0.78, result
    assert result["auto_background_accuracy"] >= 7 / 8, result


@pytest.mark.parametrize(("bunch", "size", "n", "bar"), [
    ("loose", 256, 8, 0.94),   # measured 0.966 (min 0.946); before the fix 0.679
    ("loose", 2048, 3, 0.95),  # measured 0.987 (min 0.982); before the fix 0.574
    ("dense", 256, 8, 0.92),   # measured 0.938 (min 0.883); before the fix 0.928
    ("dense", 2048, 2, 0.94),  # measured 0.966 (min 0.962); before the fix 0.961
])
def test_black_outline_follows_the_berries_loose_or_dense_at_any_size(bunch, size, n, bar):
    """Issue 8, defect 10: against the closed bunch silhouette (tests/edge_bunches.py), on
    an independent generator's loose bunches (berries apart, gaps between them) and on the
    project's dense ones, from 256 to 2048 px. A fixed closing left the gaps of loose
    bunches open (or dropped their berries) and a threshold just above the cloth put a rim
    of halo around every berry."""
    make = loose_bunch if bunch == "loose" else dense_bunch
    ious = []
    for seed in range(n):
        image, silhouette, _ = make(seed, size)
        ious.append(mask_iou(auto_annotate(image, "black").mask, silhouette))
    assert np.mean(ious) >= bar, ious
    assert min(ious) >= 0.85, ious


def test_polygons_are_simplified_and_rasterise_to_the_mask():
    cfg = SynthConfig(height=256, width=256, min_bunches=1, max_bunches=1, p_natural=0,
                      p_leaf_occlusion=0)
    scene = render_scene(image_rng(5, "t", 0), cfg)
    result = auto_annotate(scene.image, "auto")
    assert result.background == "black"
    assert result.polygons and all(len(p) >= 3 for p in result.polygons)
    outline = sum(len(p) for p in result.polygons)
    perimeter = cv2.arcLength(result.polygons[0].reshape(-1, 1, 2).astype(np.float32), True)
    assert outline < perimeter / 2  # approxPolyDP dropped most boundary points
    assert mask_iou(result.mask, scene.masks[0]) > 0.85


def test_nothing_found_on_an_empty_image():
    black = np.full((120, 160, 3), 3, np.uint8)
    result = auto_annotate(black, "black")
    assert not result.mask.any() and result.polygons == []
    assert detect_background(black) == "black"
    with pytest.raises(ValueError, match="background"):
        auto_annotate(black, "green")


def test_folder_to_coco_and_via_round_trip(tmp_path):
    images = tmp_path / "images"
    write_sample_images(images, n=3, background="black", size=256, seed=1)
    cv2.imwrite(str(images / "empty.png"), np.zeros((64, 64, 3), np.uint8))
    out, via = tmp_path / "edges.json", tmp_path / "edges_via.json"
    summary = convert_edges(images, out, background="auto", via_out=via)
    assert summary["images"] == 4 and summary["annotated"] == 3
    assert summary["backgrounds"] == {"black": 4, "natural": 0}

    coco = COCO(str(out))
    assert coco.dataset["info"]["source"] == "edges"
    assert sorted(i["file_name"] for i in coco.dataset["images"]) == [
        "black_000.jpg", "black_001.jpg", "black_002.jpg"]
    assert all(i["background"] == "black" for i in coco.dataset["images"])
    assert len(coco.dataset["annotations"]) == 3

    project = json.loads(via.read_text())
    records = project["_via_img_metadata"]
    assert len(records) == 4
    empty = next(r for r in records.values() if r["filename"] == "empty.png")
    assert empty["regions"] == [] and empty["size"] == (images / "empty.png").stat().st_size

    # A person corrects the project in VIA and converts it back: same masks.
    back = tmp_path / "back.json"
    convert_via(via, images, back)
    returned = COCO(str(back))
    by_name = {i["file_name"]: i["id"] for i in returned.dataset["images"]}
    for img in coco.dataset["images"]:
        ours = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))[0]
        theirs = returned.loadAnns(returned.getAnnIds(imgIds=[by_name[img["file_name"]]]))
        assert len(theirs) == 1
        h, w = img["height"], img["width"]
        iou = mask_iou(rle_to_mask(ours["segmentation"]) > 0,
                       segmentation_to_mask(theirs[0]["segmentation"], h, w) > 0)
        assert iou >= 0.95, (img["file_name"], iou)


def test_bad_images_and_existing_outputs_are_refused_without_output(tmp_path):
    images = tmp_path / "images"
    write_sample_images(images, n=2, background="black", size=128, seed=2)
    (images / "zero.jpg").write_bytes(b"")
    out, via = tmp_path / "out.json", tmp_path / "via.json"
    with pytest.raises(GrapeInputError, match=r"zero\.jpg: image file is empty"):
        convert_edges(images, out, via_out=via, strict_images=True)
    assert not out.exists() and not via.exists()
    (images / "zero.jpg").unlink()
    via.write_text("{}")
    with pytest.raises(GrapeInputError, match="already exists"):
        convert_edges(images, out, via_out=via)
    assert not out.exists() and via.read_text() == "{}"
    convert_edges(images, out, via_out=via, overwrite=True)
    assert len(json.loads(via.read_text())["_via_img_metadata"]) == 2
    with pytest.raises(GrapeInputError, match="images folder not found"):
        convert_edges(tmp_path / "missing", tmp_path / "x.json")
    with pytest.raises(GrapeInputError, match="--background"):
        convert_edges(images, tmp_path / "x.json", background="white")


@pytest.mark.slow
def test_cli_edges_writes_coco_and_via_and_refuses_bad_input(tmp_path):
    images = tmp_path / "images"
    write_sample_images(images, n=2, background="black", size=128, seed=3)
    out, via = tmp_path / "out.json", tmp_path / "via.json"
    run_tool("convert.py", "edges", "--images", str(images), "--out", str(out),
             "--via-out", str(via), "--background", "black", check=True)
    assert len(json.loads(out.read_text())["annotations"]) == 2
    assert len(json.loads(via.read_text())["_via_img_metadata"]) == 2
    proc = run_tool("convert.py", "edges", "--images", str(images), "--out", str(out))
    assert_user_error(proc, "out.json", "already exists")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out2, via2 = tmp_path / "out2.json", tmp_path / "via2.json"
    proc = run_tool("convert.py", "edges", "--images", str(images), "--out", str(out2),
                    "--via-out", str(via2), "--strict-images")
    assert_user_error(proc, "broken.jpg")
    assert not out2.exists() and not via2.exists()


def test_read_edges_returns_the_records_the_written_coco_holds(tmp_path):
    from grape_instances.convert.coco import CocoBuilder, add_record
    from grape_instances.convert.edges import read_edges

    images = tmp_path / "images"
    write_sample_images(images, n=2, background="black", size=128, seed=2)
    cv2.imwrite(str(images / "empty.png"), np.zeros((48, 48, 3), np.uint8))
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "edges.json"
    convert_edges(images, out)
    written = json.loads(out.read_text())

    records = read_edges(images)
    builder = CocoBuilder(records.categories, source=records.source)
    for rec in records.images:
        assert rec.extras == {"background": "black"} and len(rec.instances) == 1
        add_record(builder, rec, records.warnings, "empty")
    builder.info = written["info"]
    assert builder.to_dict() == written
    assert records.undecodable == [str((images / "broken.jpg").absolute())]
    assert sum(records.warnings.as_dict().values()) == 2  # the empty and the broken image

    kept = [r.file_name for r in read_edges(images, keep_empty=True).images]
    assert kept == ["black_000.jpg", "black_001.jpg", "empty.png"]
