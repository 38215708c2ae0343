"""from-predictions: Detectron2 RLE predictions -> VIA / labelme, and back without loss."""

import json

import numpy as np
import pytest
from labelme import __version__ as labelme_version
from labelme.utils import shape_to_mask
from PIL import Image

from grape_instances.convert.labelme import convert_labelme
from grape_instances.convert.predictions import NO_PIXEL, convert_predictions, read_back
from grape_instances.convert.via import convert_via
from grape_instances.core.errors import GrapeInputError
from grape_instances.core.masks import (
    mask_to_rle,
    polygons_to_rle,
    rasterize_polygons,
    rle_to_mask,
    segmentation_to_mask,
)
from grape_instances.core.polygons import MIN_COMPONENT_AREA, ZERO_AREA, mask_to_polygons


def blob_mask():
    mask = np.zeros((40, 50), np.uint8)
    mask[5:20, 5:25] = 1
    mask[8:12, 10:14] = 0  # a hole (not representable, dropped)
    mask[30:35, 30:48] = 1  # second component
    mask[38, 2] = 1  # a speck below the minimum area
    return mask


def test_polygons_rasterise_back_in_each_tools_convention():
    mask = blob_mask()
    solid = mask.copy()
    solid[8:12, 10:14] = 1
    solid[38, 2] = 0
    edges = mask_to_polygons(mask, "edges", min_area=MIN_COMPONENT_AREA)
    assert len(edges) == 2
    back = rle_to_mask(polygons_to_rle([p.reshape(-1).tolist() for p in edges], 40, 50))
    assert np.array_equal(back, solid)  # pycocotools: exact
    centres = mask_to_polygons(mask, "centres", min_area=MIN_COMPONENT_AREA)
    lm = np.zeros((40, 50), bool)
    for p in centres:
        lm |= shape_to_mask((40, 50), p.tolist(), "polygon")
    assert np.array_equal(lm, solid.astype(bool))  # labelme's own rasteriser: exact
    simple = mask_to_polygons(mask, "edges", tolerance=2.0, min_area=MIN_COMPONENT_AREA)
    assert len(mask_to_polygons(mask, "edges")) == 3  # min_area 0 keeps the speck
    assert sum(len(p) for p in simple) <= sum(len(p) for p in edges)


@pytest.fixture
def predictions(tmp_path, tiny_synth):
    """Ground truth of tiny_synth val written as Detectron2 predictions, plus a low score."""
    coco = json.loads((tiny_synth / "annotations/instances_val.json").read_text())
    results = [{"image_id": a["image_id"], "category_id": a["category_id"],
                "bbox": a["bbox"], "score": 0.9, "segmentation": a["segmentation"]}
               for a in coco["annotations"]]
    results.append(dict(results[0], score=0.2))
    path = tmp_path / "coco_instances_results.json"
    path.write_text(json.dumps(results))
    return path, coco


def masks_by_file(coco):
    images = {i["id"]: i for i in coco["images"]}
    out = {}
    for a in coco["annotations"]:
        im = images[a["image_id"]]
        out.setdefault(im["file_name"].rsplit("/", 1)[-1], []).append(
            segmentation_to_mask(a["segmentation"], im["height"], im["width"]).astype(bool))
    return out


def test_round_trip_through_via_and_labelme(tmp_path, tiny_synth, predictions):
    results, truth = predictions
    images = tiny_synth / "images/val"
    summary = convert_predictions(results, images, coco_json=tiny_synth /
                                  "annotations/instances_val.json", via_out=tmp_path / "p.json",
                                  labelme_out=tmp_path / "lm", score_threshold=0.5, simplify=0)
    assert summary["images"] == len(truth["images"])
    assert summary["instances"] == len(truth["annotations"])  # the 0.2 one is dropped
    project = json.loads((tmp_path / "p.json").read_text())
    assert project["_via_attributes"]["region"]["name"]["options"] == {"bunch": "bunch"}
    convert_via(tmp_path / "p.json", images, tmp_path / "via_back.json", group_attr="instance")
    convert_labelme([tmp_path / "lm"], tmp_path / "lm_back.json", root=tmp_path.parents[1])
    expected = masks_by_file(truth)
    for back in ("via_back.json", "lm_back.json"):
        got = masks_by_file(json.loads((tmp_path / back).read_text()))
        ious = []
        for name, masks in expected.items():
            assert len(got[name]) == len(masks)
            ious += [max((m & g).sum() / (m | g).sum() for g in got[name]) for m in masks]
        # only holes and specks of a few pixels are lost
        assert min(ious) >= 0.95 and np.mean(ious) >= 0.99, (back, np.round(ious, 3))


def test_predictions_and_synthetic_export_share_polygons_and_writers(tmp_path, tiny_synth,
                                                                     predictions):
    """One mask -> polygon step and one VIA / labelme writer: the ground truth fed back as
    predictions gives the synthetic export's own polygons, attributes and file layout."""
    results, truth = predictions
    convert_predictions(results, tiny_synth / "images/val", via_out=tmp_path / "p.json",
                        coco_json=tiny_synth / "annotations/instances_val.json",
                        labelme_out=tmp_path / "lm", simplify=0)
    pred = json.loads((tmp_path / "p.json").read_text())
    synth = json.loads((tiny_synth / "via/via_project_val.json").read_text())
    assert list(pred) == list(synth)
    assert pred["_via_settings"]["ui"] == dict(synth["_via_settings"]["ui"], image=pred[
        "_via_settings"]["ui"]["image"])  # only the region label / colour attributes differ

    def areas(poly):  # pixels of a pixel-edge polygon (shoelace)
        x, y = np.asarray(poly["all_points_x"]), np.asarray(poly["all_points_y"])
        return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))

    n_regions = 0
    for key, record in synth["_via_img_metadata"].items():
        got = pred["_via_img_metadata"][key]  # same filename + size key
        assert list(got) == list(record)
        want = [r["shape_attributes"] for r in record["regions"]
                if areas(r["shape_attributes"]) >= MIN_COMPONENT_AREA]
        assert [r["shape_attributes"] for r in got["regions"]] == want
        n_regions += len(want)
        assert [r["region_attributes"]["instance"] for r in got["regions"]] == [
            r["region_attributes"]["instance"] for r in record["regions"]
            if areas(r["shape_attributes"]) >= MIN_COMPONENT_AREA]
        stem = record["filename"].rsplit(".", 1)[0]
        lm_synth = json.loads((tiny_synth / f"labelme/val/{stem}.json").read_text())
        lm_pred = json.loads((tmp_path / f"lm/{stem}.json").read_text())
        assert list(lm_pred) == list(lm_synth)
        assert lm_pred["version"] == lm_synth["version"] == labelme_version
        big = [s for s in lm_synth["shapes"] if len(s["points"]) >= 3 and shape_to_mask(
            (lm_synth["imageHeight"], lm_synth["imageWidth"]), s["points"]).sum()
            >= MIN_COMPONENT_AREA]
        assert [(s["points"], s["group_id"], list(s)) for s in lm_pred["shapes"]] == [
            (s["points"], s["group_id"], list(s)) for s in big]
    assert n_regions >= len(truth["annotations"])


def test_without_coco_image_ids_are_file_stems(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(images / "IMG_7.jpg")
    rle = mask_to_rle(blob_mask())
    results = tmp_path / "r.json"
    results.write_text(json.dumps([{"image_id": "IMG_7", "category_id": 1, "score": 0.8,
                                    "segmentation": rle}]))
    convert_predictions(results, images, via_out=tmp_path / "p.json")
    meta = json.loads((tmp_path / "p.json").read_text())["_via_img_metadata"]
    (record,) = meta.values()
    assert record["filename"] == "IMG_7.jpg" and len(record["regions"]) == 2
    assert {r["region_attributes"]["instance"] for r in record["regions"]} == {"1"}
    results.write_text(json.dumps([{"image_id": 3, "category_id": 1, "score": 0.8,
                                    "segmentation": rle}]))
    with pytest.raises(GrapeInputError, match="unknown image id 3.*no file_name.*pass --coco"):
        convert_predictions(results, images, via_out=tmp_path / "q.json")
    assert not (tmp_path / "q.json").exists()


def test_visualize_results_need_no_coco(tmp_path):
    """visualize.py numbers new photos 1..N and names each in file_name (as given on its
    command line, relative to where it ran): that, with --images, finds the image."""
    images = tmp_path / "photos"
    images.mkdir()
    for name in ("b.jpg", "a.png"):
        Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(images / name)
    vis = tmp_path / "vis"
    vis.mkdir()
    rle = mask_to_rle(blob_mask())
    det = {"image_id": 1, "category_id": 1, "score": 0.8, "segmentation": rle}
    (vis / "coco_results.json").write_text(json.dumps(
        [dict(det, file_name="elsewhere/photos/b.jpg"), dict(det, file_name=str(images / "b.jpg"),
                                                              category_id=2, score=0.7)]))
    # visualize lists every image it predicted, a.png (no detection) too
    (vis / "coco_results_images.json").write_text(json.dumps({"images": [
        {"id": 1, "file_name": "elsewhere/photos/b.jpg"}, {"id": 2, "file_name": "photos/a.png"}]}))
    summary = convert_predictions(vis, images, via_out=tmp_path / "p.json",  # the folder will do
                                  labelme_out=tmp_path / "lm", category_names=["bunch", "leaf"])
    assert summary["images"] == 2 and summary["instances"] == 2
    meta = json.loads((tmp_path / "p.json").read_text())["_via_img_metadata"]
    records = {r["filename"]: r for r in meta.values()}
    assert set(records) == {"a.png", "b.jpg"}  # a.png, with no detection, can be drawn too
    assert records["a.png"]["regions"] == []
    assert [(r["region_attributes"]["name"], r["region_attributes"]["instance"])
            for r in records["b.jpg"]["regions"]] == [("bunch", "1")] * 2 + [("leaf", "2")] * 2
    lm = json.loads((tmp_path / "lm/b.json").read_text())
    assert lm["imagePath"] == "../photos/b.jpg"
    assert (lm["imageHeight"], lm["imageWidth"]) == (40, 50)
    (vis / "coco_results.json").write_text(json.dumps([dict(det, file_name="gone/c.jpg")]))
    with pytest.raises(GrapeInputError, match=r"prediction #0 is of 'gone/c.jpg', which is "
                                              "not in --images"):
        convert_predictions(vis / "coco_results.json", images, via_out=tmp_path / "q.json")
    with pytest.raises(GrapeInputError, match="holds no coco_results.json"):
        convert_predictions(tmp_path, images, via_out=tmp_path / "q.json")
    assert not (tmp_path / "q.json").exists()


def test_polygons_are_simplified_by_default(tmp_path):
    """A bunch-sized outline (300 px, jagged edge, as masks on 2048 px photos are) gets
    tens of vertices, not hundreds, and still rasterises to nearly the same mask."""
    h, w = 500, 400
    yy, xx = np.mgrid[:h, :w]
    angle = np.arctan2(yy - 250, xx - 200)
    radius = 150 + 6 * np.sin(9 * angle) + 3 * np.sin(37 * angle)
    mask = (np.hypot(yy - 250, xx - 200) < radius).astype(np.uint8)
    images = tmp_path / "photos"
    images.mkdir()
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(images / "big.jpg")
    results = tmp_path / "coco_results.json"
    results.write_text(json.dumps([{"image_id": 1, "file_name": "big.jpg", "category_id": 1,
                                    "score": 0.9, "segmentation": mask_to_rle(mask)}]))

    def outline(**kwargs):
        out = tmp_path / f"p{len(kwargs)}.json"
        convert_predictions(results, images, via_out=out, **kwargs)
        (record,) = json.loads(out.read_text())["_via_img_metadata"].values()
        (region,) = record["regions"]
        shape = region["shape_attributes"]
        xy = zip(shape["all_points_x"], shape["all_points_y"], strict=True)
        poly = [v for point in xy for v in point]
        return len(shape["all_points_x"]), rle_to_mask(polygons_to_rle([poly], h, w))

    n_exact, exact = outline(simplify=0)
    n_default, default = outline()
    assert np.array_equal(exact, mask) and n_exact > 300
    assert 12 <= n_default <= 80, n_default
    assert (exact & default).sum() / (exact | default).sum() >= 0.98
    with pytest.raises(GrapeInputError, match="--simplify -1"):
        convert_predictions(results, images, via_out=tmp_path / "q.json", simplify=-1)


def test_polygons_that_enclose_no_pixel_are_not_written(tmp_path):
    """A bent line one pixel wide (6 px, over MIN_COMPONENT_AREA): its outline through
    pixel centres runs there and back, enclosing no area, and the labelme converter would
    skip it as zero-area. It is not written to labelme (a counted warning names the
    detection); VIA's pixel-edge outline of it encloses its pixels and is written."""
    h, w = 40, 50
    line = np.zeros((h, w), np.uint8)
    line[30, 5:9] = line[31, 9] = line[32, 10] = 1
    images = tmp_path / "photos"
    images.mkdir()
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(images / "a.png")
    results = tmp_path / "coco_results.json"
    results.write_text(json.dumps([
        {"image_id": 1, "file_name": "a.png", "category_id": 1, "score": score,
         "segmentation": mask_to_rle(mask)}
        for score, mask in ((0.9, line), (0.8, blob_mask()))]))
    summary = convert_predictions(results, images, via_out=tmp_path / "p.json",
                                  labelme_out=tmp_path / "lm")
    assert summary["warnings"] == {NO_PIXEL["centres"]: 1}
    shapes = json.loads((tmp_path / "lm/a.json").read_text())["shapes"]
    assert {s["group_id"] for s in shapes} == {2}  # the blob's two pieces, not the line
    (record,) = json.loads((tmp_path / "p.json").read_text())["_via_img_metadata"].values()
    assert [r["region_attributes"]["instance"] for r in record["regions"]] == ["1", "2", "2"]
    back = convert_labelme([tmp_path / "lm"], tmp_path / "lm_back.json", root=tmp_path)
    assert back["annotations"] == 1 and ZERO_AREA not in back["warnings"]
    back = convert_via(tmp_path / "p.json", images, tmp_path / "via_back.json",
                       group_attr="instance")
    assert back["annotations"] == 2 and not back["warnings"]


def test_read_back_follows_each_readers_rasteriser():
    """``read_back`` keeps a polygon as the converters read it: both skip one with no
    shoelace area, though pycocotools and labelme would draw pixels for it (a simplified
    pixel-edge outline of a speck crossing itself into two lobes that cancel; a one pixel
    wide outline through centres, there and back), and keep one that has area."""
    h, w = 30, 30
    speck = np.zeros((h, w), np.uint8)
    for y, x in ((18, 18), (19, 16), (19, 17), (20, 16), (21, 13), (21, 15), (22, 13),
                 (22, 14)):
        speck[y, x] = 1
    (crossed,) = mask_to_polygons(speck, "edges", tolerance=1.5)
    assert rasterize_polygons([crossed], h, w).any()  # pycocotools draws it
    assert not read_back(crossed, "edges")  # but the VIA converter skips it: no area
    (exact,) = mask_to_polygons(speck, "edges")
    assert read_back(exact, "edges")
    line = np.zeros((h, w), np.uint8)
    line[3, 2:6] = line[4, 6] = line[5, 7] = 1
    (there_and_back,) = mask_to_polygons(line, "centres")
    assert shape_to_mask((h, w), there_and_back.tolist(), "polygon").any()  # labelme draws it
    assert not read_back(there_and_back, "centres")  # but the converter skips it: no area
    (square,) = mask_to_polygons(np.pad(np.ones((2, 2), np.uint8), 3), "centres")
    assert read_back(square, "centres")


def test_bad_prediction_files(tmp_path, tiny_synth, predictions):
    results, truth = predictions
    images = tiny_synth / "images/val"
    coco = tiny_synth / "annotations/instances_val.json"
    out = tmp_path / "out.json"
    with pytest.raises(GrapeInputError, match="give --via-out"):
        convert_predictions(results, images, coco_json=coco)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(GrapeInputError, match="not a Detectron2 coco_instances_results"):
        convert_predictions(bad, images, coco_json=coco, via_out=out)
    boxes = json.loads(results.read_text())
    for r in boxes:
        r.pop("segmentation")
    bad.write_text(json.dumps(boxes))
    with pytest.raises(GrapeInputError, match="no RLE"):
        convert_predictions(bad, images, coco_json=coco, via_out=out)
    wrong = json.loads(results.read_text())
    wrong[0]["segmentation"] = mask_to_rle(np.ones((5, 5), np.uint8))
    bad.write_text(json.dumps(wrong))
    with pytest.raises(GrapeInputError, match="mask size"):
        convert_predictions(bad, images, coco_json=coco, via_out=out)
    assert not out.exists()
    out.write_text("mine")
    with pytest.raises(GrapeInputError, match="already exists"):
        convert_predictions(results, images, coco_json=coco, via_out=out)
    assert out.read_text() == "mine"


def test_visualize_results_keep_the_jsons_category_ids(tmp_path):
    """A dataset whose category ids are 3 and 7: the results name 3 and 7 (Detectron2's
    contiguous 0 and 1 mapped back), not 1 and 2 (issue 18)."""
    import torch
    from detectron2.data import MetadataCatalog
    from detectron2.structures import Boxes, Instances

    from grape_instances.data.datasets import register_coco_dataset
    from grape_instances.inference.writers import _draw_all

    photo = tmp_path / "a.png"
    Image.fromarray(np.full((32, 40, 3), 90, np.uint8)).save(photo)
    coco = tmp_path / "ids37.json"
    coco.write_text(json.dumps({"images": [], "annotations": [], "categories": [
        {"id": 7, "name": "leaf"}, {"id": 3, "name": "bunch"}]}))
    register_coco_dataset("ids37_test", str(coco), str(tmp_path))
    metadata = MetadataCatalog.get("ids37_test")
    assert metadata.thing_classes == ["bunch", "leaf"]  # id order, as Detectron2 loads them

    class FixedPredictor:  # what a trained two-class model returns: classes 0 and 1
        def __init__(self):  # the Runtime contract, which visualize's photo loader runs
            self.metadata = metadata

        @staticmethod
        def prepare(image):
            return {"image": torch.as_tensor(image.copy()), "height": image.shape[0],
                    "width": image.shape[1]}

        def run(self, inputs):
            return [self.predict(x["image"].numpy()) for x in inputs]

        def predict(self, image):
            inst = Instances(image.shape[:2])
            inst.pred_boxes = Boxes(torch.tensor([[2.0, 2.0, 12.0, 12.0], [20, 4, 30, 14]]))
            inst.scores = torch.tensor([0.9, 0.8])
            inst.pred_classes = torch.tensor([0, 1])
            masks = torch.zeros(2, *image.shape[:2], dtype=torch.bool)
            masks[0, 2:12, 2:12] = masks[1, 4:14, 20:30] = True
            inst.pred_masks = masks
            return {"instances": inst}

    out = tmp_path / "vis"
    out.mkdir()
    summary = _draw_all(FixedPredictor(), [photo], out, out)
    results = json.loads(open(summary["results"]).read())
    assert [r["category_id"] for r in results] == [3, 7]
