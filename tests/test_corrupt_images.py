"""A corrupt image never kills a run: converters leave it out (or refuse it with
--strict-images), training skips it in the mapper, evaluation leaves it out of its list.

The corrupt files are truncated copies of a real WGISD photo written into tmp_path, and
WGISD's own truncated SVB_1937.jpg, read in place (../shared is read-only).
"""

import base64
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from grape_instances.core import images as images_module
from grape_instances.core.images import UNDECODABLE, UndecodableImageError, read_image_size
from tests.helpers import (
    DEMO_CONFIG,
    REAL_DATA,
    assert_user_error,
    run_tool,
    tiny_training_opts,
)

REAL = REAL_DATA
INTACT = REAL / "data" / "CDY_2017.jpg"
SHARED_TRUNCATED = REAL / "data" / "SVB_1937.jpg"  # truncated as WGISD published it
CUT_STEM = "CDY_2017cut"

pytestmark = pytest.mark.shared("real-data/wgisd-train/data/CDY_2017.jpg")


def truncated_copy(path: Path, fraction: float = 0.6) -> Path:
    """The first ``fraction`` of the bytes of a real photo: a valid header, missing data."""
    data = INTACT.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


@pytest.fixture
def grape_log():
    """Records of the ``grape_instances`` loggers, which setup_logger may stop propagating."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler, log = Keep(level=logging.WARNING), logging.getLogger("grape_instances")
    log.addHandler(handler)
    yield records
    log.removeHandler(handler)


def warnings_naming(records, name: str) -> list[str]:
    return [r.getMessage() for r in records
            if r.levelno >= logging.WARNING and name in r.getMessage()]


# --------------------------------------------------------------------------- the cheap check


def test_cheap_check_flags_truncated_files_and_passes_the_intact_photo(tmp_path):
    cut = truncated_copy(tmp_path / "cut.jpg")
    assert read_image_size(cut)[:2] == (2048, 1365)  # the header alone does not tell
    for bad in (cut, SHARED_TRUNCATED):
        with pytest.raises(UndecodableImageError, match=rf"{bad.name}: .*truncated") as err:
            read_image_size(bad, decode=True)
        assert err.value.path == bad and "\n" not in str(err.value)
    assert read_image_size(INTACT, decode=True)[:2] == (2048, 1365)


# --------------------------------------------------------------------------- converters


def make_wgisd_tree(root: Path) -> list[str]:
    """Two intact shared photos, a truncated copy and SVB_1937, with their boxes and masks
    (symlinked; the copy borrows CDY_2017's, same size). Returns the ids in list order."""
    data = root / "data"
    data.mkdir(parents=True)
    for stem in ("CDY_2017", "CDY_2019", "SVB_1937"):
        for suffix in (".jpg", ".txt", ".npz"):
            (data / f"{stem}{suffix}").symlink_to(REAL / "data" / f"{stem}{suffix}")
    truncated_copy(data / f"{CUT_STEM}.jpg")
    for suffix in (".txt", ".npz"):
        (data / f"{CUT_STEM}{suffix}").symlink_to(REAL / "data" / f"CDY_2017{suffix}")
    ids = ["CDY_2017", CUT_STEM, "CDY_2019", "SVB_1937"]
    (root / "train_masked.txt").write_text("\n".join(ids) + "\n")
    return ids


def test_wgisd_cli_leaves_out_undecodable_images_with_a_counted_warning(tmp_path):
    root, out = tmp_path / "wgisd", tmp_path / "out"
    make_wgisd_tree(root)
    proc = run_tool("convert.py", "wgisd", "--root", str(root), "--out-dir", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    coco = json.loads((out / "wgisd_train.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == ["data/CDY_2017.jpg", "data/CDY_2019.jpg"]
    boxes = sum(len((REAL / "data" / f"{s}.txt").read_text().split("\n")) - 1
                for s in ("CDY_2017", "CDY_2019"))
    assert len(coco["annotations"]) == boxes  # no masks of the left-out images
    log = proc.stdout + proc.stderr
    assert (f"{UNDECODABLE}: 2 (first: {root.absolute() / 'data' / CUT_STEM}.jpg)") in log, log
    assert "SVB_1937.jpg: image data is corrupt or truncated" in log, log


def test_wgisd_cli_strict_images_refuses_in_one_line(tmp_path):
    root, out = tmp_path / "wgisd", tmp_path / "out"
    make_wgisd_tree(root)
    proc = run_tool("convert.py", "wgisd", "--root", str(root), "--out-dir", str(out),
                    "--strict-images")
    assert_user_error(proc, f"{CUT_STEM}.jpg", "truncated")
    assert not (out / "wgisd_train.json").exists()


def via_record(images: Path, name: str) -> dict:
    size = (images / name).stat().st_size
    region = {"shape_attributes": {"name": "rect", "x": 100, "y": 100, "width": 300,
                                   "height": 200}, "region_attributes": {}}
    return {f"{name}{size}": {"filename": name, "size": size, "regions": [region],
                              "file_attributes": {}}}


def test_via_and_labelme_conversions_leave_out_the_truncated_image(tmp_path, grape_log):
    from grape_instances.convert.labelme import convert_labelme
    from grape_instances.convert.via import convert_via

    images = tmp_path / "images"
    images.mkdir()
    (images / "intact.jpg").symlink_to(INTACT)
    cut = truncated_copy(images / "cut.jpg")
    project = tmp_path / "via.json"
    project.write_text(json.dumps({**via_record(images, "cut.jpg"),
                                   **via_record(images, "intact.jpg")}))
    summary = convert_via(project, images, tmp_path / "via_coco.json")
    coco = json.loads((tmp_path / "via_coco.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == ["intact.jpg"]
    assert {a["image_id"] for a in coco["annotations"]} == {coco["images"][0]["id"]}
    assert summary["warnings"][UNDECODABLE] == 1 and summary["undecodable"] == [str(cut)]
    assert warnings_naming(grape_log, "cut.jpg")
    with pytest.raises(UndecodableImageError, match=r"cut\.jpg: .*truncated"):
        convert_via(project, images, tmp_path / "strict.json", strict_images=True)
    assert not (tmp_path / "strict.json").exists()

    shape = {"label": "bunch", "points": [[100, 100], [400, 100], [400, 300]],
             "group_id": None, "shape_type": "polygon", "flags": {}}
    for stem, image_path, data in [
        ("intact", "intact.jpg", None),
        ("cut", "cut.jpg", None),
        # an embedded truncated image (its file absent) is checked the same way
        ("embedded", "gone.jpg", base64.b64encode(cut.read_bytes()).decode()),
    ]:
        (images / f"{stem}.json").write_text(json.dumps(
            {"shapes": [shape], "imagePath": image_path, "imageData": data,
             "imageHeight": 1365, "imageWidth": 2048}))
    out = tmp_path / "lm" / "labelme.json"
    summary = convert_labelme([images], out)
    coco = json.loads(out.read_text())
    assert [i["file_name"] for i in coco["images"]] == ["intact.jpg"]
    assert summary["warnings"][UNDECODABLE] == 2
    assert sorted(Path(p).name for p in summary["undecodable"]) == ["cut.jpg", "embedded.json"]
    assert not (tmp_path / "lm" / "labelme_images").exists()  # nothing extracted


def test_edges_and_grapesnet_decode_once_and_leave_out_the_truncated_image(tmp_path,
                                                                         monkeypatch):
    from grape_instances.convert.edges import convert_edges
    from grape_instances.convert.grapesnet import convert_grapesnet
    from grape_instances.synthetic.export import write_sample_images

    cheap_calls = []
    real_cheap = images_module.decode_cheaply
    monkeypatch.setattr(images_module, "decode_cheaply",
                        lambda *a, **k: cheap_calls.append(a) or real_cheap(*a, **k))
    images = tmp_path / "images"
    write_sample_images(images, n=2, background="black", size=128, seed=4)
    truncated_copy(images / "cut.jpg")
    summary = convert_edges(images, tmp_path / "edges.json", via_out=tmp_path / "via.json")
    coco = json.loads((tmp_path / "edges.json").read_text())
    assert "cut.jpg" not in {i["file_name"] for i in coco["images"]}
    assert len(coco["images"]) == 2
    assert "cut.jpg" not in json.dumps(json.loads((tmp_path / "via.json").read_text()))
    assert summary["warnings"][UNDECODABLE] == 1
    assert cheap_calls == []  # edge detection's full decode is the check: no second one
    with pytest.raises(UndecodableImageError, match=r"cut\.jpg"):
        convert_edges(images, tmp_path / "strict.json", strict_images=True)

    root = tmp_path / "grapesnet"
    shutil.copytree(images, root / "Dataset-1" / "black")
    summary = convert_grapesnet(root, tmp_path / "gn")
    coco = json.loads((tmp_path / "gn" / "grapesnet_dataset1.json").read_text())
    assert sorted(i["file_name"] for i in coco["images"]) == [
        "Dataset-1/black/black_000.jpg", "Dataset-1/black/black_001.jpg"]
    assert summary["warnings"][UNDECODABLE] == 1 and summary["unannotated"] == []
    assert cheap_calls == []


# --------------------------------------------------------------------------- training data


def test_training_mapper_returns_none_and_warns_once_per_file(tmp_path, grape_log):
    from detectron2.config import get_cfg

    from grape_instances.core.config import add_grape_config
    from grape_instances.data.mappers import build_grape_mapper

    cfg = get_cfg()
    add_grape_config(cfg)
    cfg.merge_from_list(["INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96"])
    mapper = build_grape_mapper(cfg, is_train=True)
    cut = truncated_copy(tmp_path / "cut.jpg")

    def record(path):
        return {"file_name": str(path), "height": 1365, "width": 2048, "image_id": 1,
                "annotations": []}

    assert mapper(record(cut)) is None
    assert mapper(record(cut)) is None  # the next epoch: skipped again, silently
    assert len(warnings_naming(grape_log, str(cut))) == 1, [r.getMessage() for r in grape_log]
    mapped = mapper(record(INTACT))
    assert mapped is not None and tuple(mapped["image"].shape[1:]) == (64, 96)


def test_evaluation_list_leaves_out_undecodable_images_once(tmp_path, grape_log):
    from grape_instances.data.build import drop_undecodable_images

    cut = truncated_copy(tmp_path / "cut.jpg")
    dicts = [{"file_name": str(cut)}, {"file_name": str(INTACT)},
             {"file_name": str(SHARED_TRUNCATED)}]
    for _ in range(2):  # periodic evaluation: the warning comes once
        assert drop_undecodable_images(dicts, ["val"]) == [{"file_name": str(INTACT)}]
    assert len(warnings_naming(grape_log, str(cut))) == 1
    assert len(warnings_naming(grape_log, str(SHARED_TRUNCATED))) == 1


def test_coco_evaluator_scores_only_the_predicted_images(tiny_synth, monkeypatch):
    from detectron2.evaluation import coco_evaluation

    from grape_instances.data.datasets import register_coco_dataset
    from grape_instances.engine.trainer import LoadedImagesCOCOEvaluator

    register_coco_dataset("corrupt_test_val", tiny_synth / "annotations" / "instances_val.json",
                          tiny_synth / "images" / "val")
    seen = {}

    def fake_eval(coco_gt, coco_results, iou_type, img_ids=None, **kwargs):
        seen[iou_type] = img_ids
        return None

    monkeypatch.setattr(coco_evaluation, "_evaluate_predictions_on_coco", fake_eval)
    evaluator = LoadedImagesCOCOEvaluator("corrupt_test_val", tasks=("bbox",),
                                          output_dir=None)
    ids = sorted(evaluator._coco_api.getImgIds())
    assert len(ids) == 4
    result = {"image_id": ids[1], "category_id": 0, "bbox": [1, 1, 9, 9], "score": 0.9}
    evaluator._results = {}  # what evaluate() sets before calling _eval_predictions
    evaluator._eval_predictions([{"image_id": i, "instances": [dict(result, image_id=i)]}
                                 for i in ids[1:]])
    assert seen["bbox"] == ids[1:]  # the image left out does not count its bunches as misses


@pytest.mark.slow
def test_train_net_skips_a_truncated_image_in_training_and_evaluation(tiny_synth, tmp_path):
    """A JSON listing a truncated photo: training and the final evaluation run to the end."""
    root = tmp_path / "synth"
    shutil.copytree(tiny_synth / "images", root / "images")
    registered = []
    names = {}
    for split in ("train", "val"):
        coco = json.loads((tiny_synth / "annotations" / f"instances_{split}.json").read_text())
        keep = coco["images"][:2]
        ids = {i["id"] for i in keep}
        coco["images"] = keep
        coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in ids]
        victim = root / "images" / split / keep[1]["file_name"]
        truncated_copy(victim)
        with Image.open(INTACT) as photo:  # the JSON agrees with the header; the data is cut
            keep[1]["width"], keep[1]["height"] = photo.size
        for ann in coco["annotations"]:  # polygons: an RLE is sized for the 128 px image
            if ann["image_id"] == keep[1]["id"]:
                x, y, w, h = ann["bbox"]
                ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
        names[split] = str(victim)
        json_file = tmp_path / f"{split}.json"
        json_file.write_text(json.dumps(coco))
        registered.append([f"corrupt_{split}", str(json_file), str(root / "images" / split)])
    opts = tiny_training_opts(tiny_synth, tmp_path / "out", max_iter=2)
    proc = run_tool("train_net.py", "--config-file", DEMO_CONFIG, *opts,
                    "DATASETS.REGISTER", repr(registered),
                    "DATASETS.TRAIN", "('corrupt_train',)", "DATASETS.TEST", "('corrupt_val',)")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "Traceback" not in log, log[-4000:]
    train_lines = [ln for ln in log.splitlines()
                   if names["train"] in ln and "cannot decode" in ln]
    assert len(train_lines) == 1, log[-4000:]  # 4 samples of 2 images: met twice, said once
    assert any(names["val"] in ln and "left out of the evaluation" in ln
               for ln in log.splitlines()), log[-4000:]
    assert "Start inference on 1 batches" in log, log[-4000:]
    assert (tmp_path / "out" / "model_final.pth").is_file()
    predictions = torch.load(tmp_path / "out" / "inference" / "instances_predictions.pth",
                             weights_only=False)
    val = json.loads((tmp_path / "val.json").read_text())
    assert [p["image_id"] for p in predictions] == [val["images"][0]["id"]]
