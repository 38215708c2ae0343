"""A researcher's own data, end to end (issue 19): only predicted images count, the data's
own class names everywhere, no invented supercategory, one rule for images without
annotations, symlinked photo folders, one polygon per bunch, and the README's own-data path
run as written."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from grape_instances.convert.predictions import convert_predictions, predicted_images_file
from grape_instances.core.masks import mask_to_rle
from tests.helpers import PEER_DATA as PEER
from tests.measure_helpers import ellipse_mask, read_csv

SIZE = (96, 128)  # h, w


def _photo(path: Path, masks: list[np.ndarray]) -> None:
    rgb = np.full((*SIZE, 3), (40, 120, 60), np.uint8)
    for m in masks:
        rgb[m] = (90, 30, 120)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rgb)


@pytest.fixture
def photos(tmp_path):
    """``photos/`` with three photos; the model was run on ``a`` and ``b`` only: ``a`` holds
    two bunches (one a beet, category 1, one a weed, category 2), ``b`` none. ``c`` was
    never predicted. Returns (root, results list, visualize's predicted-images list)."""
    bunch1 = ellipse_mask(SIZE, (40, 40), 18, 12)
    bunch2 = ellipse_mask(SIZE, (95, 60), 14, 20)
    folder = tmp_path / "photos"
    _photo(folder / "a.png", [bunch1, bunch2])
    _photo(folder / "b.png", [])
    _photo(folder / "c.png", [ellipse_mask(SIZE, (60, 50), 20, 20)])
    results = [{"image_id": 1, "category_id": cat, "score": score, "file_name": "photos/a.png",
                "segmentation": mask_to_rle(m), "bbox": [0, 0, 1, 1]}
               for m, cat, score in ((bunch1, 1, 0.9), (bunch2, 2, 0.8))]
    listed = {"images": [{"id": 1, "file_name": "photos/a.png", "height": SIZE[0],
                          "width": SIZE[1]},
                         {"id": 2, "file_name": "photos/b.png", "height": SIZE[0],
                          "width": SIZE[1]}],
              "categories": [{"id": 1, "name": "beet"}, {"id": 2, "name": "weed"}]}
    return tmp_path, results, listed


def _write_results(root: Path, results: list, listed: dict | None) -> Path:
    path = root / "vis" / "coco_results.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(results))
    if listed is not None:
        predicted_images_file(path).write_text(json.dumps(listed))
    return path


# ----------------------------------------------------------------- 1. predicted images only


@pytest.mark.parametrize("with_list", [True, False])
def test_from_predictions_writes_only_the_predicted_images(photos, monkeypatch, caplog,
                                                           with_list):
    root, results, listed = photos
    monkeypatch.chdir(root)
    res = _write_results(root, results, listed if with_list else None)
    with caplog.at_level(logging.WARNING):
        summary = convert_predictions(res, "photos", via_out="work/via.json",
                                      labelme_out="work/labelme")
    expected = ["a.png", "b.png"] if with_list else ["a.png"]
    project = json.loads((root / "work" / "via.json").read_text())
    assert sorted(r["filename"] for r in project["_via_img_metadata"].values()) == expected
    assert sorted(p.name for p in (root / "work" / "labelme").iterdir()) == [
        n.replace(".png", ".json") for n in expected]
    left_out = 3 - len(expected)
    assert summary["images"] == len(expected)
    assert summary["warnings"] == {"images under --images that were not predicted "
                                   "(left out)": left_out}
    first = sorted({"a.png", "b.png", "c.png"} - set(expected))[0]
    assert f"(first: {first})" in caplog.text  # the warning names an image it left out


def _tool(name: str):
    """``tools/<name>.py`` as a module (tools/ is not a package)."""
    import importlib.util

    from tests.helpers import REPO

    spec = importlib.util.spec_from_file_location(f"{name}_tool_own_data",
                                                  REPO / "tools" / f"{name}.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def _measure(argv):
    _tool("measure").main(argv)


def test_measure_counts_only_predicted_images_with_their_class_names(photos):
    """A results list measures the images it was made on (visualize's list: ``b`` as zero
    bunches), not every photo under --images; categories are the model's names, and the
    overlays draw an image without any bunch (it used to crash)."""
    root, results, listed = photos
    res = _write_results(root, results, listed)
    _measure(["--coco", str(res), "--images", str(root / "photos"), "--out",
              str(root / "t.csv"), "--overlays", str(root / "overlays")])
    assert [(r["image"], r["bunches"]) for r in read_csv(root / "t_images.csv")] == [
        ("a.png", "2"), ("b.png", "0")]
    assert [r["category"] for r in read_csv(root / "t.csv")] == ["beet", "weed"]
    folders = read_csv(root / "t_folders.csv")
    assert [(f["images"], f["bunches_per_image"]) for f in folders] == [("2", "1")]
    summary = json.loads((root / "t_images.json").read_text())
    assert summary["warnings"] == {"images under --images that were not predicted "
                                   "(left out)": 1}
    assert sorted(p.name for p in (root / "overlays").iterdir()) == ["a.png", "b.png"]
    # without the list: only the image a detection names
    predicted_images_file(res).unlink()
    _measure(["--coco", str(res), "--images", str(root / "photos"), "--out",
              str(root / "u.csv")])
    assert [r["image"] for r in read_csv(root / "u_images.csv")] == ["a.png"]


def test_measure_names_categories_from_the_coco_images_file(photos):
    root, results, _ = photos
    res = _write_results(root, [{**r, "file_name": None} for r in results], None)
    for r in json.loads(res.read_text()):
        assert r["file_name"] is None
    data = [{k: v for k, v in r.items() if k != "file_name"} for r in results]
    res.write_text(json.dumps(data))
    coco = {"images": [{"id": 1, "file_name": "a.png", "height": SIZE[0], "width": SIZE[1]}],
            "annotations": [], "categories": [{"id": 1, "name": "beet"},
                                              {"id": 2, "name": "weed"}]}
    (root / "coco.json").write_text(json.dumps(coco))
    _measure(["--coco", str(res), "--images", str(root / "photos"), "--coco-images",
              str(root / "coco.json"), "--out", str(root / "t.csv")])
    assert [r["category"] for r in read_csv(root / "t.csv")] == ["beet", "weed"]


def test_overlay_of_an_image_without_bunches():
    from grape_instances.inference.draw import masks_as_instances

    inst = masks_as_instances([], [], SIZE)
    assert len(inst) == 0 and tuple(inst.pred_masks.shape) == (0, *SIZE)


# ----------------------------------------------------------------- 8. symlinked photos


def test_symlinked_photo_folder_is_accepted(photos, monkeypatch):
    root, results, listed = photos
    monkeypatch.chdir(root)
    (root / "photos_ln").mkdir()
    for name in ("a.png", "b.png"):
        (root / "photos_ln" / name).symlink_to(root / "photos" / name)
    linked = [{**r, "file_name": "photos_ln/a.png"} for r in results]
    res = _write_results(root, linked, None)
    summary = convert_predictions(res, "photos_ln", via_out="work/via.json")
    assert summary["images"] == 1
    project = json.loads((root / "work" / "via.json").read_text())
    assert [r["filename"] for r in project["_via_img_metadata"].values()] == ["a.png"]


# ----------------------------------------------------------------- 3. the data's own names


def test_count_is_logged_in_the_datasets_own_words(caplog):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from grape_instances.evaluation.count import CountEvaluator

    DatasetCatalog.register("own_beets", lambda: [{"file_name": "a.jpg", "annotations": []}])
    MetadataCatalog.get("own_beets").set(thing_classes=["beet", "weed"])
    evaluator = CountEvaluator("own_beets", distributed=False)
    evaluator.reset()
    with caplog.at_level(logging.INFO, logger="grape_instances.evaluation.count"):
        evaluator.evaluate()
    assert "beet, weed count at score" in caplog.text and "bunch" not in caplog.text


def test_measure_says_what_it_counted(photos, capsys):
    root, results, listed = photos
    res = _write_results(root, results, listed)
    _measure(["--coco", str(res), "--images", str(root / "photos"), "--out",
              str(root / "t.csv")])
    out = capsys.readouterr().out
    assert "2 instances (beet 1, weed 1) in 2 images" in out and "bunches" not in out


# ----------------------------------------------------------------- 2. classes in VIA / labelme

needs_peer = pytest.mark.shared("peer-data")


def _beet_project(tmp_path: Path) -> tuple[Path, Path]:
    """A VIA 2 export of two images whose regions carry a class attribute ``beet`` (1 / 2),
    as the sugar-beet study's project does, plus a per-region ``note``."""
    images = tmp_path / "imgs"
    records = {}
    for i, name in enumerate(("p1.png", "p2.png")):
        _photo(images / name, [])
        regions = [{"shape_attributes": {"name": "rect", "x": 10 + 30 * k, "y": 10,
                                         "width": 20, "height": 20},
                    "region_attributes": {"beet": str(1 + (k + i) % 2), "note": f"r{i}{k}"}}
                   for k in range(3)]
        size = (images / name).stat().st_size
        records[f"{name}{size}"] = {"filename": name, "size": size, "regions": regions,
                                    "file_attributes": {}}
    via = tmp_path / "beets.json"
    via.write_text(json.dumps(records))
    return via, images


def test_via_class_attribute_is_announced_in_one_line(tmp_path, caplog):
    from grape_instances.convert.via import convert_via

    via, images = _beet_project(tmp_path)
    with caplog.at_level(logging.WARNING, logger="grape_instances.convert.via"):
        convert_via(via, images, tmp_path / "one.json")
    lines = [r.getMessage() for r in caplog.records if "look like a class" in r.getMessage()]
    assert len(lines) == 1, caplog.text
    assert "'beet' (1, 2)" in lines[0] and "--label-attr beet" in lines[0]
    assert "note" not in lines[0]  # one value per region: not a class
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="grape_instances.convert.via"):
        convert_via(via, images, tmp_path / "two.json", label_attr="beet")
    assert "look like a class" not in caplog.text
    cats = json.loads((tmp_path / "two.json").read_text())["categories"]
    assert [(c["name"], c["supercategory"]) for c in cats] == [("1", "1"), ("2", "2")]


@needs_peer
def test_peer_via_export_announces_its_name_attribute(tmp_path, caplog):
    from grape_instances.convert.via import convert_via

    with caplog.at_level(logging.WARNING, logger="grape_instances.convert.via"):
        convert_via(PEER / "via" / "nsy0328" / "sample.json", PEER / "via" / "nsy0328",
                    tmp_path / "out.json")
    assert "'name' (PET bottles, Papers, Plastic)" in caplog.text
    assert "--label-attr" in caplog.text


@needs_peer
def test_labelme_classes_get_no_invented_supercategory(tmp_path):
    from grape_instances.convert.labelme import convert_labelme

    convert_labelme([PEER / "labelme_voc" / "data_annotated"], tmp_path / "voc.json")
    cats = json.loads((tmp_path / "voc.json").read_text())["categories"]
    assert cats and all(c["supercategory"] == c["name"] for c in cats)
    assert "grape" not in {c["supercategory"] for c in cats}


# ----------------------------------------------------------------- 7. the round trip's rules


@pytest.mark.parametrize("keep_empty", [False, True])
def test_round_trip_one_rule_for_empty_images_and_one_root(photos, monkeypatch, caplog,
                                                           keep_empty):
    """from-predictions -> VIA and labelme -> COCO: both keep the same images under the same
    file names (labelme with ``--root photos``, the images' folder, as VIA's ``--images``);
    a photo without any region is left out by both, naming --keep-empty, or kept by both."""
    from grape_instances.convert.labelme import convert_labelme
    from grape_instances.convert.via import convert_via
    build_parser = _tool("convert").build_parser

    root, results, listed = photos
    monkeypatch.chdir(root)
    res = _write_results(root, results, listed)
    convert_predictions(res, "photos", via_out="work/via.json", labelme_out="work/labelme")
    with caplog.at_level(logging.WARNING):
        convert_via("work/via.json", "photos", "work/from_via.json", label_attr="name",
                    group_attr="instance", keep_empty=keep_empty)
        convert_labelme(["work/labelme"], "work/from_labelme.json", root="photos",
                        keep_empty=keep_empty)
    names = {}
    for out in ("from_via.json", "from_labelme.json"):
        coco = json.loads((root / "work" / out).read_text())
        names[out] = sorted(i["file_name"] for i in coco["images"])
        assert [c["name"] for c in coco["categories"]] == ["beet", "weed"]
        assert len(coco["annotations"]) == 2
    expected = ["a.png", "b.png"] if keep_empty else ["a.png"]
    assert names == {"from_via.json": expected, "from_labelme.json": expected}
    assert (caplog.text.count("--keep-empty keeps them") == 0) == keep_empty
    if not keep_empty:
        assert caplog.text.count("--keep-empty keeps them") == 2  # one line per format
    for sub in ("via", "labelme"):  # the flag the warning names exists
        args = build_parser().parse_args([sub, "--keep-empty", "--out", "x.json",
                                          *(["--via", "v", "--images", "i"] if sub == "via"
                                            else ["--input", "d"])])
        assert args.keep_empty is True


def test_labelme_without_root_says_which_flag(photos, monkeypatch):
    from grape_instances.convert.labelme import convert_labelme
    from grape_instances.core.errors import GrapeInputError

    root, results, listed = photos
    monkeypatch.chdir(root)
    res = _write_results(root, results, listed)
    convert_predictions(res, "photos", labelme_out="work/labelme")
    with pytest.raises(GrapeInputError, match="resolves outside .* pass --root DIR"):
        convert_labelme(["work/labelme"], "work/x.json")


# ----------------------------------------------------------------- 9. one polygon per bunch


def test_a_bunch_with_slivers_comes_back_as_one_polygon(tmp_path, monkeypatch):
    """A predicted bunch with specks and a fringe beside it is one polygon to correct; a
    bunch split by a leaf into two large pieces is two polygons of one instance."""
    body = ellipse_mask(SIZE, (40, 48), 22, 30)
    with_slivers = body.copy()
    with_slivers[10:13, 70:73] = True  # a speck
    with_slivers[80:82, 20:40] = True  # a thin fringe below the bunch
    with_slivers[5:7, 5:9] = True
    split = ellipse_mask(SIZE, (95, 48), 20, 30)
    split[44:50, :] = False  # a leaf across the bunch
    folder = tmp_path / "photos"
    _photo(folder / "a.png", [with_slivers, split])
    results = [{"image_id": 1, "category_id": 1, "score": s, "file_name": "photos/a.png",
                "segmentation": mask_to_rle(m)} for m, s in ((with_slivers, 0.9),
                                                              (split, 0.8))]
    monkeypatch.chdir(tmp_path)
    res = _write_results(tmp_path, results, None)
    convert_predictions(res, "photos", via_out="via.json", labelme_out="lm")
    regions = next(iter(json.loads(Path("via.json").read_text())["_via_img_metadata"]
                        .values()))["regions"]
    assert [r["region_attributes"]["instance"] for r in regions] == ["1", "2", "2"]
    shapes = json.loads(Path("lm/a.json").read_text())["shapes"]
    assert [s["group_id"] for s in shapes] == [1, 2, 2]
    assert min(len(s["points"]) for s in shapes) > 7


# ----------------------------------------------------------------- 10. what a newcomer meets


def test_make_help_lists_every_target_in_one_line_each():
    import re
    import subprocess

    from tests.helpers import REPO

    out = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    phony = re.search(r"^\.PHONY:(.*?)(?<!\\)$", (REPO / "Makefile").read_text(),
                      re.M | re.S).group(1).replace("\\", " ").split()
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert sorted(listed) == sorted(phony)
    assert len(out.splitlines()) <= 26  # one screen (of 80 x 26 or more)


@pytest.mark.parametrize("tool", ["visualize.py", "train_net.py", "measure.py", "convert.py"])
def test_help_is_fast_and_quiet(tool):
    """--help imports neither torch nor Detectron2 (it took 5-8 s), prints no torch.jit
    warning, and convert.py's shows no developer notes."""
    import subprocess
    import sys

    from tests.helpers import REPO

    code = ("import runpy, sys; sys.argv = [sys.argv[1], '--help']\n"
            "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'detectron2' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, str(REPO / "tools" / tool)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "False False"
    assert "usage:" in proc.stdout and "Warning" not in proc.stderr
    assert ":func:" not in proc.stdout and "dispatch" not in proc.stdout


def test_the_known_torch_jit_warning_is_silenced():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-W", "default", "-c",
                           "import grape_instances.engine"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "torch.jit.script" not in proc.stderr


def test_validate_says_what_training_does_with_empty_images(tmp_path):
    import yaml

    from grape_instances.convert.validate import EMPTY_IMAGES, validate_coco_file
    from tests.helpers import REPO

    _photo(tmp_path / "a.png", [])
    (tmp_path / "c.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "height": SIZE[0], "width": SIZE[1]}],
        "annotations": [], "categories": [{"id": 1, "name": "bunch"}]}))
    report = validate_coco_file(tmp_path / "c.json", tmp_path)
    assert report.warnings[EMPTY_IMAGES] == 1
    assert "drops them in training" not in EMPTY_IMAGES  # the GPU config keeps them
    gpu = yaml.safe_load((REPO / "configs" / "mask_rcnn_grapes.yaml").read_text())
    cpu = yaml.safe_load((REPO / "configs" / "mask_rcnn_grapes_cpu_demo.yaml").read_text())
    assert gpu["DATALOADER"]["FILTER_EMPTY_ANNOTATIONS"] is False
    assert cpu["DATALOADER"]["FILTER_EMPTY_ANNOTATIONS"] is True
    assert "False, as configs/mask_rcnn_grapes.yaml" in EMPTY_IMAGES


def test_readme_folders_are_git_ignored():
    import subprocess

    from tests.helpers import REPO

    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ("data/all.json", "work/labelme/a.json", "work/via_project.json"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0


@pytest.mark.slow
def test_eval_only_logs_the_config_to_a_file_not_the_terminal(trained_model, tiny_synth,
                                                               tmp_path):
    from tests.helpers import DEMO_CONFIG, run_tool, tiny_training_opts

    out = tmp_path / "eval"
    proc = run_tool("train_net.py", "--config-file", DEMO_CONFIG, "--eval-only",
                    *tiny_training_opts(tiny_synth, out), "MODEL.WEIGHTS", str(trained_model))
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "Running with full config" not in log and "Environment info" not in log
    assert "\x1b[" not in log  # no colour codes
    assert len(log.splitlines()) < 300, len(log.splitlines())
    assert "MODEL:" in (out / "config.yaml").read_text()
    assert "PyTorch" in (out / "environment.txt").read_text()


# ----------------------------------------------------------------- 5-7. the README, as written


def _readme_commands(tag: str) -> list[list[str]]:
    """The commands of the README's bash block marked ``<!-- test: tag -->`` (continuation
    lines joined, comments dropped), each split as the shell would."""
    import shlex

    from tests.helpers import REPO

    text = (REPO / "README.md").read_text()
    start = text.index("```bash\n", text.index(f"<!-- test: {tag} -->")) + len("```bash\n")
    body = text[start:text.index("```", start)].replace("\\\n", " ")
    return [shlex.split(line) for line in body.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


# What the test adds to the README's training command: a few small iterations, no workers.
TINY = ["SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "1", "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.STEPS", "()", "SOLVER.CHECKPOINT_PERIOD", "1000", "DATALOADER.NUM_WORKERS", "0",
        "INPUT.SCALE_CROP.TARGET_SIZE", "(320, 320)", "INPUT.SCALE_CROP.CROP_SIZE", "(192, 192)",
        "INPUT.MIN_SIZE_TEST", "320", "INPUT.MAX_SIZE_TEST", "320",
        "TEST.DETECTIONS_PER_IMAGE", "5"]


def _run_readme(commands: list[list[str]], cwd: Path, extra=lambda cmd: cmd) -> None:
    import subprocess
    import sys

    for cmd in commands:
        assert cmd[0] == "python" and cmd[1].startswith("tools/"), cmd
        argv = extra([sys.executable, *cmd[1:]])
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (cmd, proc.stderr[-3000:])


@needs_peer
@pytest.mark.slow
def test_readme_own_data_path_runs_as_written(tmp_path):
    """The README's own-data block, then its correction loop, command by command from the
    repository's folder layout (tools/, configs/), on VIA's unit-test project and photos."""
    import shutil

    from tests.helpers import REPO

    peer = PEER / "via" / "via1_unit_test"
    for name in ("tools", "configs"):
        (tmp_path / name).symlink_to(REPO / name)
    (tmp_path / "photos").mkdir()
    for photo in peer.glob("*.jpg"):
        shutil.copy(photo, tmp_path / "photos" / photo.name)
    shutil.copy(peer / "unit_test_annotation2.json", tmp_path / "my_project.json")

    own = _readme_commands("own-data")
    _run_readme(own, tmp_path, lambda argv: argv + TINY if argv[-1] == "output/mine" else argv)
    data = tmp_path / "data"
    train = json.loads((data / "all_train.json").read_text())
    val = json.loads((data / "all_val.json").read_text())
    assert train["images"] and val["images"]
    assert (tmp_path / "output" / "mine" / "model_final.pth").is_file()
    assert (tmp_path / "output" / "mine_eval" / "inference").is_dir()
    assert json.loads((tmp_path / "output" / "vis" / "coco_results_images.json").read_text())[
        "images"]
    cpu_config = own[2][own[2].index("--config-file") + 1]
    assert cpu_config == "configs/mask_rcnn_grapes_cpu_real.yaml"

    # the GPU block is the same command with the GPU config, which asks for CUDA
    (gpu,) = _readme_commands("own-data-gpu")
    assert gpu[gpu.index("--config-file") + 1] == "configs/mask_rcnn_grapes.yaml"
    assert [a for a in gpu if a != "configs/mask_rcnn_grapes.yaml"] == [
        a for a in own[2] if a != cpu_config]
    assert 'DEVICE: "cuda"' in (REPO / "configs" / "mask_rcnn_grapes.yaml").read_text()

    def low_threshold(argv):  # the 2-iteration model's detections score low: keep them all
        if argv[1] == "tools/visualize.py":
            at = argv.index("--opts")
            return argv[:at] + ["--confidence-threshold", "0.05"] + argv[at:]
        if "from-predictions" in argv:
            return argv + ["--score-threshold", "0.05"]
        return argv

    _run_readme(_readme_commands("correct-predictions"), tmp_path, low_threshold)
    work = tmp_path / "work"
    via_back = json.loads((work / "train.json").read_text())
    labelme_back = json.loads((work / "train_labelme.json").read_text())
    assert via_back["images"], "no image came back"
    assert sorted(i["file_name"] for i in via_back["images"]) == sorted(
        i["file_name"] for i in labelme_back["images"])
    # (the two tools' pixel conventions may disagree on a speck of a 2-iteration model's mask)
    assert abs(len(via_back["annotations"]) - len(labelme_back["annotations"])) <= 1
