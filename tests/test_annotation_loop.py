"""The model-assisted annotation loop with no hand-written file: visualize.py on a folder of
photos -> convert.py from-predictions (no --coco) -> VIA project / labelme files ->
convert.py via / labelme -> a COCO JSON that validates, one instance per prediction."""

import json
import shutil
from pathlib import Path

import pytest
from pycocotools import mask as mask_utils

from grape_instances.convert.predictions import NO_PIXEL, detection_polygons
from grape_instances.core.warning_counter import WarningCounter
from tests.helpers import DEMO_CONFIG, run_tool


def round_trip(vis: Path, photos: Path, work: Path) -> dict[str, dict]:
    """from-predictions -> VIA and labelme -> COCO JSONs, each validated; name -> COCO."""
    run_tool("convert.py", "from-predictions", "--predictions", str(vis / "coco_results.json"),
             "--images", str(photos), "--score-threshold", "0", "--via-out",
             str(work / "via.json"), "--labelme-out", str(work / "lm"), check=True)
    run_tool("convert.py", "via", "--via", str(work / "via.json"), "--images", str(photos),
             "--group-attr", "instance", "--out", str(work / "from_via.json"),
             check=True)
    run_tool("convert.py", "labelme", "--input", str(work / "lm"), "--root", str(work),
             "--out", str(work / "from_labelme.json"), check=True)
    out = {}
    for name, images in (("from_via.json", photos), ("from_labelme.json", work)):
        run_tool("convert.py", "validate", "--json", str(work / name), "--images", str(images),
                 check=True)
        out[name] = json.loads((work / name).read_text())
    return out


@pytest.mark.slow
def test_ground_truth_as_visualize_results(tiny_synth, tmp_path):
    """visualize's format (ids 1..N, file_name as typed where it ran) with real masks: every
    one comes back as one instance, through the CLI, with no --coco."""
    photos = tmp_path / "photos"
    shutil.copytree(tiny_synth / "images/val", photos)
    coco = json.loads((tiny_synth / "annotations/instances_val.json").read_text())
    names = {im["id"]: Path(im["file_name"]).name for im in coco["images"]}
    vis = tmp_path / "vis"
    vis.mkdir()
    (vis / "coco_results.json").write_text(json.dumps([
        {"image_id": a["image_id"], "file_name": f"somewhere/{names[a['image_id']]}",
         "category_id": 1, "score": 0.9, "segmentation": a["segmentation"]}
        for a in coco["annotations"]]))
    for name, back in round_trip(vis, photos, tmp_path).items():
        assert len(back["images"]) == len(coco["images"]), name
        assert len(back["annotations"]) == len(coco["annotations"]), name
        assert [c["name"] for c in back["categories"]] == ["bunch"], name


def test_visualize_to_training_json(sharp_model, tiny_synth, tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree(tiny_synth / "images/val", photos)
    vis = tmp_path / "vis"
    run_tool("visualize.py", "--config-file", DEMO_CONFIG, "--input", str(photos),
             "--output", str(vis), "--confidence-threshold", "0.0", "--opts",
             "MODEL.WEIGHTS", str(sharp_model), "INPUT.MIN_SIZE_TEST", "96", check=True)
    predictions = json.loads((vis / "coco_results.json").read_text())
    assert predictions and all("file_name" in p for p in predictions)
    # The (sharpened) 4-iteration model's masks may be empty or only specks (components under
    # MIN_COMPONENT_AREA pixels each, or one pixel wide: no area through pixel centres): those
    # give no polygon in that tool's pixel convention, so no instance; every other prediction
    # gives exactly one.
    left_out = WarningCounter()  # detections whose every polygon encloses no pixel

    def drawn(convention: str) -> int:  # from-predictions' own rule (slivers dropped too)
        return sum(bool(detection_polygons(m, convention, warnings=left_out))
                   for m in (mask_utils.decode(p["segmentation"]) for p in predictions))

    back = round_trip(vis, photos, tmp_path)
    assert len(back["from_via.json"]["annotations"]) == drawn("edges")
    assert len(back["from_labelme.json"]["annotations"]) == drawn("centres")
    # at 128 px simplification leaves a pixel-edge outline its pixels; through centres a
    # piece one pixel wide encloses none: a few detections at most
    assert left_out[NO_PIXEL["edges"]] == 0 and left_out[NO_PIXEL["centres"]] <= 3
