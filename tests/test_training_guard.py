"""validate guards training: every COCO problem that crashes Detectron2's loader or trainer
(or makes it train on wrong pixels) is an error of ``convert.py validate`` and refuses
``train_net.py`` in one line before anything is built."""

import copy
import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetMapper, get_detection_dataset_dicts
from detectron2.data.detection_utils import read_image
from detectron2.utils.events import EventStorage
from PIL import Image
from pycocotools import mask as mask_utils

import grape_instances.modeling  # noqa: F401  (registers the semantic meta-architectures)
from grape_instances.convert import validate as V
from grape_instances.core.errors import GrapeInputError
from grape_instances.core.images import (
    PHOTO_MODES,
    UnsupportedImageModeError,
    decode_image,
    read_image_size,
)
from grape_instances.data.build import build_config
from grape_instances.data.datasets import register_coco_dataset
from grape_instances.engine.checks import check_config
from grape_instances.engine.trainer import Trainer
from tests.helpers import DEMO_CONFIG, REPO, assert_user_error, run_tool, tiny_training_opts

_names = itertools.count()


def unique_name(prefix: str) -> str:
    """Detectron2's catalogs are global: every in-process registration gets a fresh name."""
    return f"{prefix}_{os.getpid()}_{next(_names)}"


@pytest.fixture(scope="module")
def polygon_coco(tiny_synth) -> dict:
    """``tiny_synth``'s train split with polygon masks (and their boxes and areas), as foreign
    tools export it: the valid base every case below breaks in one way."""
    data = json.loads((tiny_synth / "annotations" / "instances_train.json").read_text())
    for ann in data["annotations"]:
        mask = mask_utils.decode(ann["segmentation"])
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        ann["segmentation"] = [c.reshape(-1).astype(float).tolist() for c in contours
                               if len(c) >= 3]
        rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], 128, 128))
        ann["bbox"] = [float(v) for v in mask_utils.toBbox(rle)]
        ann["area"] = float(mask_utils.area(rle))
    return data


def _first(d):
    return d["annotations"][0]


def _rle_of(size):
    rle = mask_utils.encode(np.asfortranarray(np.ones(size, np.uint8)))
    return rle["counts"].decode("ascii")


#: name -> (mutation of the valid COCO dict, fragment of validate's error). Each of these
#: crashes Detectron2 (test_detectron2_itself_fails_on_each_crasher).
CRASHERS = {
    "bbox []": (lambda d: _first(d).update(bbox=[]), "malformed bbox"),
    "bbox of 3": (lambda d: _first(d).update(bbox=[1, 2, 3]), "malformed bbox"),
    "bbox of strings": (lambda d: _first(d).update(bbox=["1", 2, 3, 4]), "malformed bbox"),
    "flat polygon list": (lambda d: _first(d).update(segmentation=_first(d)["segmentation"][0]),
                          "flat segmentation lists"),
    "polygon of strings": (lambda d: _first(d).update(segmentation=[["1", 1, 5, 5, 9, 1]]),
                           "polygons that are not an even list"),
    "no height / width": (lambda d: [i.pop("height") for i in d["images"]],
                          "positive integer height / width"),
    "string height": (lambda d: d["images"][0].update(height="128"),
                      "positive integer height / width"),
    "wrong height": (lambda d: d["images"][0].update(height=256), "differ from the file"),
    "box-only data": (lambda d: [a.pop("segmentation") for a in d["annotations"]],
                      V.BOX_ONLY),
    "segmentation []": (lambda d: _first(d).update(segmentation=[]), V.BOX_ONLY),
    "unknown category": (lambda d: _first(d).update(category_id=7),
                         "category_id is not a category"),
    "RLE of another size": (lambda d: _first(d).update(
        segmentation={"size": [64, 64], "counts": _rle_of((64, 64))}), "RLE sizes"),
    "RLE counts too long": (lambda d: _first(d).update(
        segmentation={"size": [128, 128], "counts": _rle_of((256, 128))}),
        "malformed RLE counts"),
}


def write_case(polygon_coco, tmp_path, mutate) -> str:
    data = copy.deepcopy(polygon_coco)
    mutate(data)
    path = tmp_path / f"case_{next(_names)}.json"
    path.write_text(json.dumps(data))
    return str(path)


def case_config(json_file, images, tmp_path, *, mask_on=True):
    name = unique_name("guard")
    cfg = build_config(DEMO_CONFIG, [
        *tiny_training_opts(tmp_path / "absent", tmp_path / "out", max_iter=2),
        "DATASETS.REGISTER", repr([[name, str(json_file), str(images)]]),
        "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()",
        "MODEL.MASK_ON", str(mask_on),
    ])
    return cfg, name


def detectron2_failure(cfg, name) -> str | None:
    """What Detectron2 itself, without the guard, raises loading and mapping dataset ``name``
    for training ("no gt_masks" when a mask model gets instances without masks), or None."""
    register_coco_dataset(name, *[cfg.DATASETS.REGISTER[0][i] for i in (1, 2)])
    try:
        dicts = get_detection_dataset_dicts([name], filter_empty=True)
        mapper = DatasetMapper(cfg, is_train=True)  # Detectron2's own
        for record in dicts:
            instances = mapper(copy.deepcopy(record))["instances"]
            if cfg.MODEL.MASK_ON and len(instances) and not instances.has("gt_masks"):
                return "no gt_masks"
    except Exception as e:  # noqa: BLE001 - the crash being demonstrated
        return type(e).__name__
    return None


def test_the_valid_base_trains_and_passes(polygon_coco, tiny_synth, tmp_path):
    json_file = write_case(polygon_coco, tmp_path, lambda d: None)
    images = tiny_synth / "images" / "train"
    assert V.validate_coco_file(json_file, images).ok
    cfg, name = case_config(json_file, images, tmp_path)
    assert detectron2_failure(cfg, name) is None
    check_config(cfg, eval_only=False)  # no error


@pytest.mark.parametrize("case", CRASHERS)
def test_detectron2_itself_fails_on_each_crasher(polygon_coco, tiny_synth, tmp_path, case):
    """Without the guard: a traceback in the loader or mapper (or a mask model without masks,
    which fails at iteration 0; see test_box_only_data_crashes_a_mask_model)."""
    json_file = write_case(polygon_coco, tmp_path, CRASHERS[case][0])
    cfg, name = case_config(json_file, tiny_synth / "images" / "train", tmp_path)
    assert detectron2_failure(cfg, name) is not None


def test_box_only_data_crashes_a_mask_model(polygon_coco, tiny_synth, tmp_path):
    json_file = write_case(polygon_coco, tmp_path, CRASHERS["box-only data"][0])
    cfg, name = case_config(json_file, tiny_synth / "images" / "train", tmp_path)
    register_coco_dataset(name, json_file, str(tiny_synth / "images" / "train"))
    batch = [DatasetMapper(cfg, is_train=True)(r)
             for r in get_detection_dataset_dicts([name], filter_empty=True)[:2]]
    model = Trainer.build_model(cfg)
    model.train()
    with EventStorage(), pytest.raises(AttributeError, match="Cannot find field 'gt_masks'"):
        model(batch)


@pytest.mark.parametrize("case", CRASHERS)
def test_validate_and_the_check_before_training_refuse_each_crasher(
    polygon_coco, tiny_synth, tmp_path, case
):
    mutate, fragment = CRASHERS[case]
    json_file = write_case(polygon_coco, tmp_path, mutate)
    images = tiny_synth / "images" / "train"
    report = V.validate_coco_file(json_file, images)
    assert any(fragment in kind for kind in report.errors.counts), report.format()
    cfg, _ = case_config(json_file, images, tmp_path)
    with pytest.raises(GrapeInputError, match=f"dataset .*{json_file}.*: ") as e:
        check_config(cfg, eval_only=False)
    assert fragment in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: [a.update(iscrowd=1) for a in d["annotations"]], "only crowd regions"),
    (lambda d: d.update(annotations=[]), "no annotations at all"),
    (lambda d: d.update(images=[], annotations=[]), "no images"),
])
def test_nothing_to_train_on_is_refused(polygon_coco, tiny_synth, tmp_path, mutate, message):
    """Detectron2 asserts ("No valid data found", "Dataset is empty") on these; validate
    refuses them too, with the same line (issue 18: it used to pass them)."""
    json_file = write_case(polygon_coco, tmp_path, mutate)
    cfg, name = case_config(json_file, tiny_synth / "images" / "train", tmp_path)
    assert detectron2_failure(cfg, name) == "AssertionError"
    with pytest.raises(GrapeInputError, match=message):
        check_config(cfg, eval_only=False)
    report = V.validate_coco_file(json_file, tiny_synth / "images" / "train")
    assert any(message in kind for kind in report.errors.counts), report.format()


def test_box_only_data_trains_a_box_model_and_is_checked_as_such(polygon_coco, tiny_synth,
                                                                  tmp_path):
    """The choice: box-only data with a mask model is refused with the hint to turn masks
    off, not trained box head only; with MODEL.MASK_ON False it passes."""
    json_file = write_case(polygon_coco, tmp_path, CRASHERS["box-only data"][0])
    images = tiny_synth / "images" / "train"
    assert V.validate_coco_file(json_file, images, masks=False).ok
    cfg, name = case_config(json_file, images, tmp_path, mask_on=False)
    assert detectron2_failure(cfg, name) is None
    check_config(cfg, eval_only=False)  # no error
    cfg, _ = case_config(json_file, images, tmp_path)
    with pytest.raises(GrapeInputError, match="to train boxes only, add MODEL.MASK_ON False"):
        check_config(cfg, eval_only=False)


def _copy_train_images(coco: dict, tiny_synth: Path, images: Path) -> Path:
    """A folder of its own holding the synthetic training images ``coco`` names."""
    images.mkdir()
    for img in coco["images"]:
        (images / img["file_name"]).write_bytes(
            (tiny_synth / "images" / "train" / img["file_name"]).read_bytes())
    return images


def test_undecodable_images_are_left_to_the_mapper_not_refused(polygon_coco, tiny_synth,
                                                               tmp_path):
    """Training skips an image that does not decode (with a warning), as before the guard."""
    images = _copy_train_images(polygon_coco, tiny_synth, tmp_path / "images")
    (images / polygon_coco["images"][0]["file_name"]).write_bytes(b"")
    json_file = write_case(polygon_coco, tmp_path, lambda d: None)
    cfg, _ = case_config(json_file, images, tmp_path)
    check_config(cfg, eval_only=False)  # no error


@pytest.mark.slow
def test_train_net_refuses_in_one_line_before_training(polygon_coco, tiny_synth, tmp_path):
    images = tiny_synth / "images" / "train"
    json_file = write_case(polygon_coco, tmp_path, CRASHERS["box-only data"][0])
    out = tmp_path / "out"
    proc = run_tool("train_net.py", "--config-file", DEMO_CONFIG,
                    *tiny_training_opts(tiny_synth, out, max_iter=2),
                    "DATASETS.REGISTER", repr([["box_only", json_file, str(images)]]),
                    "DATASETS.TRAIN", "('box_only',)", "DATASETS.TEST", "()")
    assert_user_error(proc, json_file, "without a segmentation", "MODEL.MASK_ON False")
    assert not (out / "model_final.pth").exists() and not (out / "metrics.json").exists()


def test_validate_cli_names_the_file_and_every_problem(polygon_coco, tiny_synth, tmp_path):
    def several(d):
        anns = d["annotations"]
        anns[0]["bbox"] = []
        anns[1]["segmentation"] = anns[1]["segmentation"][0]
        anns[2]["segmentation"] = []
        anns[3]["category_id"] = 7
        assert d["images"][-1]["id"] not in {a["image_id"] for a in anns[:4]}
        d["images"][-1].pop("width")
    json_file = write_case(polygon_coco, tmp_path, several)
    proc = run_tool("convert.py", "validate", "--json", json_file,
                    "--images", str(tiny_synth / "images" / "train"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"validate {json_file}" in proc.stdout
    errors = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("ERROR")]
    for fragment in ("malformed bbox", "flat segmentation", "without a segmentation",
                     "not a category", "height / width"):
        assert sum(fragment in ln for ln in errors) == 1, proc.stdout


def test_validate_cli_boxes_only_accepts_box_only_data(polygon_coco, tiny_synth, tmp_path,
                                                      capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("convert_tool_guard",
                                                  REPO / "tools" / "convert.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    json_file = write_case(polygon_coco, tmp_path, CRASHERS["box-only data"][0])
    argv = ["validate", "--json", json_file, "--images", str(tiny_synth / "images" / "train")]
    with pytest.raises(SystemExit) as e:
        tool.main(argv)
    assert e.value.code == 1 and "without a segmentation" in capsys.readouterr().out
    tool.main([*argv, "--boxes-only"])  # no exit: valid
    assert "result: OK" in capsys.readouterr().out


# --------------------------------------------------------------------------- pixel formats

def save_mode(path, mode):
    """A 32 x 24 image in PIL ``mode`` (saved as TIFF, or PNG for 16-bit) and the 8-bit RGB
    Detectron2 should read from it."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    if mode.startswith("I;16"):
        values = (np.arange(24 * 32).reshape(24, 32) * 80).astype(np.uint16)
        Image.fromarray(values).save(path)
        return None
    if mode in ("I", "F"):
        Image.fromarray(rgb[..., 0].astype(np.int32 if mode == "I" else np.float32) * 200
                        ).save(path)
        return None
    if mode == "P":  # a palette image holds at most 256 colours: make it exactly so
        img = Image.fromarray(rgb).quantize(64)
        expected = np.asarray(img.convert("RGB"))
    elif mode == "1":
        bits = rgb[..., 0] > 127
        img = Image.fromarray(bits)
        expected = np.repeat((bits * 255).astype(np.uint8)[..., None], 3, axis=2)
    elif mode in ("L", "LA"):
        gray = rgb[..., 0]
        img = Image.fromarray(gray).convert(mode)
        expected = np.repeat(gray[..., None], 3, axis=2)
    else:
        img = Image.fromarray(rgb).convert(mode)
        expected = rgb
    img.save(path)
    return expected


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr",
                                  "I;16", "I;16B", "I", "F", "LAB"])
def test_each_pixel_format_is_read_right_or_refused(tmp_path, mode):
    suffix = ".png" if mode == "I;16" else ".tif"
    path = tmp_path / f"img{suffix}"
    if mode == "LAB":
        Image.new("LAB", (32, 24), (50, 20, 30)).save(path)
        expected = None
    else:
        expected = save_mode(path, mode)
    with Image.open(path) as img:
        saved_mode = img.mode
    if saved_mode in PHOTO_MODES:
        assert expected is not None, saved_mode
        got = read_image(str(path), format="RGB")  # what Detectron2 trains on
        tol = 3 if mode == "YCbCr" else 0  # PIL rounds RGB -> YCbCr when we write it
        assert np.abs(got.astype(int) - expected).max() <= tol, mode
        read_image_size(path)  # accepted
    else:
        with pytest.raises(UnsupportedImageModeError, match=f"{path}: .*PIL mode {saved_mode}"):
            read_image_size(path)
        with pytest.raises(UnsupportedImageModeError):
            decode_image(path)
        read_image_size(path, photo=False)  # a depth map may be 16-bit


def test_16_bit_png_is_refused_by_validate_and_before_training(polygon_coco, tiny_synth,
                                                                tmp_path):
    images = _copy_train_images(polygon_coco, tiny_synth, tmp_path / "images")
    gray16 = (np.arange(128 * 128).reshape(128, 128) * 3).astype(np.uint16)
    Image.fromarray(gray16).save(images / "gray16.png")
    # what Detectron2 does with it: nearly every pixel white
    assert (read_image(str(images / "gray16.png"), format="BGR") == 255).mean() > 0.95
    json_file = write_case(polygon_coco, tmp_path,
                           lambda d: d["images"][0].update(file_name="gray16.png"))
    for deep in (False, True):
        report = V.validate_coco_file(json_file, images, deep=deep)
        assert report.errors[V.UNSUPPORTED_MODE] == 1, report.format()
        assert "gray16.png" in report.errors.examples[V.UNSUPPORTED_MODE]
    cfg, _ = case_config(json_file, images, tmp_path)
    with pytest.raises(GrapeInputError, match="gray16.png.*16-bit"):
        check_config(cfg, eval_only=False)


def test_converters_refuse_a_16_bit_photo(tmp_path):
    from grape_instances.convert.via import convert_via

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.full((24, 32), 40000, np.uint16)).save(images / "a.png")
    via = {"a.png": {"filename": "a.png", "size": -1, "regions": [{
        "shape_attributes": {"name": "polygon", "all_points_x": [2, 20, 20],
                             "all_points_y": [2, 2, 20]}, "region_attributes": {}}]}}
    (tmp_path / "via.json").write_text(json.dumps(via))
    with pytest.raises(GrapeInputError, match=r"a\.png: 16-bit image \(PIL mode I;16\)"):
        convert_via(tmp_path / "via.json", images, tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()


# --------------------------------------------------------------------------- bounded memory

BOUNDED = textwrap.dedent("""
    import resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    from grape_instances.convert.validate import validate_coco_file
    start = time.perf_counter()
    report = validate_coco_file(sys.argv[1], sys.argv[2])
    print(report.format())
    print("seconds", time.perf_counter() - start)
""")


@pytest.mark.parametrize("value", [1e9, -1e9, 1e300])
def test_a_huge_coordinate_is_refused_quickly_in_little_memory(polygon_coco, tiny_synth,
                                                               tmp_path, value):
    """One vertex at 1e9 made validate grow to 21.8 GB (pycocotools rasterises the polygon's
    whole length). Under a 2 GB address-space limit it is now an error in well under 10 s."""
    def huge(d):
        _first(d)["segmentation"][0][0] = value
    json_file = write_case(polygon_coco, tmp_path, huge)
    proc = subprocess.run(
        [sys.executable, "-c", BOUNDED, json_file, str(tiny_synth / "images" / "train")],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "image size outside the image" in proc.stdout and "FAILED" in proc.stdout
    assert float(proc.stdout.split("seconds")[-1]) < 10


def test_converters_skip_a_region_with_a_huge_coordinate(tmp_path):
    """The converters' shared polygon code bounds coordinates before clipping: a vertex at
    1e9 (or a VIA circle of radius 1e9) skips its region with a counted warning instead of
    becoming a sliver or a whole-image mask; a vertex just past the border is still clipped."""
    from grape_instances.convert.via import convert_via
    from grape_instances.core.polygons import (
        CLIPPED,
        FAR_OUTSIDE,
        OUTSIDE,
        ellipse_outline,
        sanitize_polygon,
    )
    from grape_instances.core.warning_counter import WarningCounter

    warnings = WarningCounter()
    assert sanitize_polygon([10, 1e9, 30], [10, 10, 30], 64, 48, warnings, "r0") is None
    assert sanitize_polygon(*ellipse_outline(5, 5, 1e9, 1e9), 64, 48, warnings, "r1") is None
    assert sanitize_polygon([100, 120, 120], [100, 100, 120], 64, 48, warnings) is None
    clipped = sanitize_polygon([-20, 20, 20, -20], [10, 10, 30, 30], 64, 48, warnings)
    assert clipped == [0.0, 10.0, 20.0, 10.0, 20.0, 30.0, 0.0, 30.0]
    assert (warnings[FAR_OUTSIDE], warnings[OUTSIDE], warnings[CLIPPED]) == (2, 1, 2)

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(images / "a.png")
    regions = [{"shape_attributes": {"name": "polygon", "all_points_x": xs,
                                     "all_points_y": [2, 2, 20]}, "region_attributes": {}}
               for xs in ([2, 1e9, 20], [2, 20, 20])]
    (tmp_path / "via.json").write_text(json.dumps(
        {"a.png": {"filename": "a.png", "size": -1, "regions": regions}}))
    summary = convert_via(tmp_path / "via.json", images, tmp_path / "out.json")
    assert summary["warnings"][FAR_OUTSIDE] == 1
    assert len(json.loads((tmp_path / "out.json").read_text())["annotations"]) == 1


# ----------------------------------------------------------------------------- issue 18
def test_windows_backslash_paths_pass_validate_and_training_alike(polygon_coco, tiny_synth,
                                                                  tmp_path):
    """"sub\\\\a.jpg" (a file exported on Windows): validate reads it as sub/a.jpg, and so
    do the check before training and the loader (they used to refuse it: not found)."""
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    data = copy.deepcopy(polygon_coco)
    for img in data["images"]:
        (images / "sub" / img["file_name"]).write_bytes(
            (tiny_synth / "images" / "train" / img["file_name"]).read_bytes())
        img["file_name"] = "sub\\" + img["file_name"]
    json_file = tmp_path / "windows.json"
    json_file.write_text(json.dumps(data))
    assert V.validate_coco_file(json_file, images).ok
    cfg, name = case_config(json_file, images, tmp_path)
    check_config(cfg, eval_only=False)  # no error
    records = get_detection_dataset_dicts([name], filter_empty=True)
    assert records and all(os.path.isfile(r["file_name"]) for r in records)


def test_annotations_without_iscrowd_are_scored_as_validate_reads_them(polygon_coco,
                                                                       tiny_synth, tmp_path):
    """validate warns "0 assumed"; COCO evaluation assumes the same instead of raising
    KeyError: 'iscrowd' at the end of a training."""
    from grape_instances.engine.trainer import LoadedImagesCOCOEvaluator

    json_file = write_case(polygon_coco, tmp_path,
                           lambda d: [a.pop("iscrowd") for a in d["annotations"]])
    report = V.validate_coco_file(json_file, tiny_synth / "images" / "train")
    assert report.ok and "without 'iscrowd'" in report.format()
    name = unique_name("no_iscrowd")
    register_coco_dataset(name, json_file, str(tiny_synth / "images" / "train"))
    evaluator = LoadedImagesCOCOEvaluator(name, tasks=("segm",), output_dir=None,
                                          use_fast_impl=False)
    gt = json.loads(Path(json_file).read_text())["annotations"]
    by_image: dict = {}
    for ann in gt:  # the ground truth as predictions: AP 100
        rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], 128, 128))
        rle["counts"] = rle["counts"].decode("ascii")
        by_image.setdefault(ann["image_id"], []).append(
            {"image_id": ann["image_id"], "category_id": 0, "bbox": ann["bbox"],
             "score": 0.9, "segmentation": rle})
    evaluator._predictions = [{"image_id": i, "instances": v} for i, v in by_image.items()]
    results = evaluator.evaluate()
    assert results["segm"]["AP"] == pytest.approx(100.0, abs=0.5)


def test_a_decompression_bomb_among_the_images_is_refused_before_training(polygon_coco,
                                                                         tiny_synth, tmp_path):
    """A training image replaced by a PNG whose header claims 60000 x 60000: one line
    before anything is built (it used to pass as "unreadable" and crash the loader)."""
    from tests.test_measure import _png_header

    images = _copy_train_images(polygon_coco, tiny_synth, tmp_path / "images")
    (images / polygon_coco["images"][0]["file_name"]).write_bytes(
        _png_header(60000, 60000, bit_depth=8, color_type=2))
    json_file = write_case(polygon_coco, tmp_path, lambda d: None)
    cfg, _ = case_config(json_file, images, tmp_path)
    with pytest.raises(GrapeInputError, match="images above the pixel limit") as e:
        check_config(cfg, eval_only=False)
    assert "\n" not in str(e.value)
    report = V.validate_coco_file(json_file, images)
    assert "images above the pixel limit" in report.errors.counts
