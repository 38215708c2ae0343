"""Own data with any categories: class names and counts come from the COCO JSON."""

import itertools
import json
import os
import shutil

import cv2
import numpy as np
import pytest
import torch
import yaml
from detectron2.data import DatasetCatalog, MetadataCatalog
from pycocotools.coco import COCO

import grape_instances.modeling  # noqa: F401  (registers the semantic meta-architectures)
from grape_instances.core.errors import GrapeInputError
from grape_instances.data.build import build_config
from grape_instances.data.datasets import register_coco_dataset, register_from_config
from grape_instances.engine.checks import check_config
from grape_instances.engine.trainer import Trainer
from tests.helpers import DEMO_CONFIG, assert_user_error, run_tool, tiny_training_opts

SEGNET_CONFIG = "configs/semantic/segnet_grapes_cpu_demo.yaml"
TWO_CLASSES = ["bunch", "bunch_occluded"]
_names = itertools.count()


def unique_name(prefix: str) -> str:
    """Detectron2's catalogs are global: every in-process registration gets a fresh name."""
    return f"{prefix}_{os.getpid()}_{next(_names)}"


def relabel(src, dst, categories: list[dict], category_of) -> None:
    """Copy a synthetic dataset, giving it ``categories`` and annotation i the category id
    ``category_of(i)``."""
    shutil.copytree(src, dst)
    for split in ("train", "val"):
        path = dst / "annotations" / f"instances_{split}.json"
        data = json.loads(path.read_text())
        data["categories"] = categories
        for i, ann in enumerate(data["annotations"]):
            ann["category_id"] = category_of(i)
        path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def grape_synth(tiny_synth, tmp_path_factory):
    """``tiny_synth`` with its one category named "grape"."""
    root = tmp_path_factory.mktemp("grape") / "synth"
    relabel(tiny_synth, root, [{"id": 1, "name": "grape"}], lambda i: 1)
    return root


@pytest.fixture(scope="module")
def two_class_synth(tiny_synth, tmp_path_factory):
    """``tiny_synth`` with every other bunch relabelled "bunch_occluded" (id 2); the JSON
    lists the categories out of id order, as a hand-edited file may."""
    root = tmp_path_factory.mktemp("two_classes") / "synth"
    categories = [{"id": 2, "name": "bunch_occluded"}, {"id": 1, "name": "bunch"}]
    relabel(tiny_synth, root, categories, lambda i: 1 + i % 2)
    return root


def register_opts(prefix: str, root) -> list[str]:
    """DATASETS.REGISTER / TRAIN / TEST overrides for ``root``'s splits as own data."""
    entries = [[f"{prefix}_{s}", str(root / "annotations" / f"instances_{s}.json"),
                str(root / "images" / s)] for s in ("train", "val")]
    return ["DATASETS.REGISTER", repr(entries), "DATASETS.TRAIN", f"('{prefix}_train',)",
            "DATASETS.TEST", f"('{prefix}_val',)"]


def read_metrics(out) -> dict:
    merged: dict = {}
    for line in (out / "metrics.json").read_text().splitlines():
        merged.update(json.loads(line))
    return merged


def test_registered_datasets_take_their_classes_from_their_json(
    tiny_synth, grape_synth, two_class_synth
):
    cfg = build_config(DEMO_CONFIG, ["DATASETS.SYNTHETIC_ROOT", str(two_class_synth),
                                     *register_opts("own_grape", grape_synth)])
    register_from_config(cfg)
    assert MetadataCatalog.get("own_grape_train").thing_classes == ["grape"]
    assert DatasetCatalog.get("own_grape_train")  # Detectron2's loader agrees (it asserts)
    # Synthetic splits too, in category-id order although the JSON lists id 2 first.
    assert MetadataCatalog.get("grapes_synth_val").thing_classes == TWO_CLASSES
    records = DatasetCatalog.get("grapes_synth_val")
    assert {a["category_id"] for r in records for a in r["annotations"]} == {0, 1}
    # The default for unregistered prediction is still "bunch".
    register_from_config(build_config(DEMO_CONFIG, ["DATASETS.SYNTHETIC_ROOT", str(tiny_synth)]))
    assert MetadataCatalog.get("grapes_synth_val").thing_classes == ["bunch"]


@pytest.mark.parametrize("content, problem", [
    ('{"images": [], "categories": [', "not valid JSON"),
    ('{"images": [], "annotations": []}', 'no "categories"'),
    ('{"categories": [{"id": 1}]}', 'needs an "id" and a "name"'),
])
def test_unreadable_json_is_a_one_line_error(tmp_path, content, problem):
    json_file = tmp_path / "broken.json"
    json_file.write_text(content)
    with pytest.raises(GrapeInputError, match=problem) as err:
        register_coco_dataset(unique_name("broken"), str(json_file), str(tmp_path))
    assert str(json_file) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_grape_category_trains_and_evaluates(tiny_synth, grape_synth, tmp_path):
    out = tmp_path / "grape"
    proc = run_tool("train_net.py", "--config-file", DEMO_CONFIG,
                    *tiny_training_opts(tiny_synth, out, max_iter=2),
                    *register_opts("grape", grape_synth))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (out / "model_final.pth").is_file()
    metrics = read_metrics(out)
    # COCO AP has no per-category entry for one category; the semantic scores name it.
    assert {"segm/AP", "sem_seg/IoU-grape", "sem_seg/Dice-grape"} <= set(metrics), sorted(metrics)
    assert "set to" not in proc.stderr  # one category: the config's NUM_CLASSES 1 fits


@pytest.fixture(scope="module")
def two_class_run(two_class_synth, tmp_path_factory):
    """2 iterations of Mask R-CNN on the two-category data, then its evaluation."""
    out = tmp_path_factory.mktemp("two_class_run")
    proc = run_tool("train_net.py", "--config-file", DEMO_CONFIG,
                    *tiny_training_opts(two_class_synth, out, max_iter=2))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc


@pytest.mark.slow
def test_two_categories_train_and_evaluate(two_class_run):
    out, proc = two_class_run
    log = proc.stdout + proc.stderr
    assert "MODEL.ROI_HEADS.NUM_CLASSES set to 2 (config said 1)" in log
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["MODEL"]["ROI_HEADS"]["NUM_CLASSES"] == 2
    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    assert state["roi_heads.box_predictor.cls_score.weight"].shape[0] == 3  # 2 + background
    assert state["roi_heads.mask_head.predictor.weight"].shape[0] == 2
    metrics = read_metrics(out)
    for key in ("segm/AP-bunch", "segm/AP-bunch_occluded", "bbox/AP-bunch_occluded",
                "sem_seg/IoU-bunch", "sem_seg/IoU-bunch_occluded", "count/MAE"):
        assert key in metrics, (key, sorted(metrics))


@pytest.mark.slow
def test_visualize_draws_the_datasets_class_names(two_class_run, two_class_synth, tmp_path,
                                                  monkeypatch):
    out, _ = two_class_run
    opts = [*tiny_training_opts(two_class_synth, tmp_path / "o"),
            "MODEL.WEIGHTS", str(out / "model_final.pth")]
    vis = tmp_path / "vis"
    proc = run_tool("visualize.py", "--config-file", DEMO_CONFIG, "--input",
                    str(two_class_synth / "images" / "val"), "--output", str(vis),
                    "--confidence-threshold", "0.0", "--opts", *opts)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list(vis.glob("*.png"))) == 4
    results = json.loads((vis / "coco_results.json").read_text())
    assert results and {r["category_id"] for r in results} <= {1, 2}

    # The same drawing in-process, recording the class names it writes on the overlays.
    from detectron2.utils.visualizer import Visualizer

    from grape_instances.core.images import expand_inputs
    from grape_instances.inference.writers import visualize_files

    drawn, labels = [], []
    original = Visualizer.overlay_instances

    def spy(self, *args, **kwargs):
        drawn.append(self.metadata.get("thing_classes"))
        labels.extend(kwargs.get("labels") or [])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Visualizer, "overlay_instances", spy)
    cfg = build_config(DEMO_CONFIG, [*opts, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
    register_from_config(cfg)
    visualize_files(cfg, expand_inputs([str(two_class_synth / "images" / "val")]),
                    tmp_path / "vis2")
    assert drawn == [TWO_CLASSES] * 4
    assert labels and all(label.rsplit(" ", 1)[0] in TWO_CLASSES for label in labels), labels


def expected_label_map(coco: COCO, image_id: int, merge: bool) -> np.ndarray:
    """Background 0, category id (or 1 when merged) inside each bunch, later ones on top."""
    info = coco.loadImgs([image_id])[0]
    labels = np.zeros((info["height"], info["width"]), np.uint8)
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
        labels[coco.annToMask(ann).astype(bool)] = 1 if merge else ann["category_id"]
    return labels


@pytest.mark.parametrize("merge, stuff", [
    (False, ["background", *TWO_CLASSES]),
    (True, ["background", "foreground"]),
])
def test_semantic_view_per_class_or_merged(two_class_synth, tmp_path, merge, stuff):
    name = unique_name("two_class_train")
    json_file = two_class_synth / "annotations" / "instances_train.json"
    cfg = build_config(SEGNET_CONFIG, [
        "DATASETS.REGISTER", repr([[name, str(json_file),
                                    str(two_class_synth / "images" / "train")]]),
        "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", f"('{name}',)",
        "DATASETS.SYNTHETIC_ROOT", str(tmp_path / "absent"),
        "DATASETS.SEMANTIC_CACHE_DIR", str(tmp_path / "cache"),
        "DATASETS.SEMANTIC_MERGE_CLASSES", str(merge),
        "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "128",
        "SOLVER.IMS_PER_BATCH", "4", "DATALOADER.NUM_WORKERS", "0",
    ])
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == len(stuff)  # 3 per class, 2 merged
    check_config(cfg, eval_only=False)
    view = name + ("_sem_merged" if merge else "_sem")
    assert MetadataCatalog.get(view).stuff_classes == stuff

    coco = COCO(str(json_file))
    records = DatasetCatalog.get(view)
    assert len(records) == 8
    values = set()
    for record in records:
        got = cv2.imread(record["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(got, expected_label_map(coco, record["image_id"], merge))
        values |= set(np.unique(got).tolist())
    assert values == set(range(len(stuff)))

    # The semantic baseline built from this config learns from these labels.
    batch = next(iter(Trainer.build_train_loader(cfg)))
    model = Trainer.build_model(cfg)
    assert model.num_classes == len(stuff)
    losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.slow
def test_train_and_test_sets_with_other_categories_are_refused(
    tiny_synth, grape_synth, tmp_path
):
    opts = tiny_training_opts(tiny_synth, tmp_path / "out", max_iter=2)
    json_file = grape_synth / "annotations" / "instances_train.json"
    proc = run_tool("train_net.py", "--config-file", DEMO_CONFIG, *opts,
                    "DATASETS.REGISTER", repr([["grape_train", str(json_file),
                                                str(grape_synth / "images" / "train")]]),
                    "DATASETS.TRAIN", "('grape_train',)", "DATASETS.TEST", "('grapes_synth_val',)")
    assert_user_error(proc, "'grape_train'", "'grapes_synth_val'", "['grape']", "['bunch']")
    assert not (tmp_path / "out" / "model_final.pth").exists()


def test_evaluating_other_categories_than_the_model_is_refused(two_class_synth, tmp_path):
    """Without its training data at hand the model's class count cannot follow the data."""
    cfg = build_config(DEMO_CONFIG, [
        "DATASETS.SYNTHETIC_ROOT", str(two_class_synth),
        "DATASETS.TRAIN", "('not_here',)", "DATASETS.TEST", "('grapes_synth_val',)",
    ])
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 1
    with pytest.raises(GrapeInputError, match=r"NUM_CLASSES is 1 but .* 2 categories .* need 2"):
        check_config(cfg, eval_only=True)
