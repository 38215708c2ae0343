"""Definitions kept in one place: the synthetic dataset's layout, is_semantic_model."""

import subprocess
import sys

from detectron2.data import MetadataCatalog

from grape_instances.core import paths as layout
from grape_instances.data.datasets import register_synthetic, synthetic_dataset_name
from grape_instances.synthetic.export import generate_dataset
from grape_instances.synthetic.render import config_from_size
from tests.helpers import REPO


def test_generator_and_registration_share_the_layout(tmp_path):
    root = tmp_path / "synth"
    assert not layout.has_coco_files(root)
    written = generate_dataset(root, {"train": 1, "val": 1}, cfg=config_from_size(64))
    for split in layout.SPLITS:
        paths = written[split]
        assert paths["coco"] == layout.coco_json(root, split) and paths["coco"].is_file()
        assert paths["images"] == layout.images_dir(root, split)
        assert paths["via"] == layout.via_json(root, split) and paths["via"].is_file()
        assert paths["labelme"] == layout.labelme_dir(root, split)
    assert layout.has_coco_files(root)
    register_synthetic(str(root))
    meta = MetadataCatalog.get(synthetic_dataset_name("val"))
    assert meta.json_file == str(layout.coco_json(root, "val"))
    assert meta.image_root == str(layout.images_dir(root, "val"))


def test_predict_does_not_import_the_trainer():
    """is_semantic_model lives with the models: prediction needs no training engine."""
    code = ("import sys, grape_instances.inference.predictor; "
            "sys.exit('grape_instances.engine' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _images(root, split="train") -> int:
    import json

    return len(json.loads(layout.coco_json(root, split).read_text())["images"])


def test_a_dataset_is_ready_only_for_the_request_its_stamp_records(tmp_path, caplog):
    """One rule (synthetic.export.ensure_dataset): the demo's dataset is reused for the same
    counts, size and seed, and generated again for others (tools/demo.py --train-images 100
    after a 300-image dataset trains on 100 images), never silently reused."""
    from grape_instances.experiments.demo import ensure_synthetic

    root = tmp_path / "demo_synth"
    ensure_synthetic(str(root), num_train=3, num_val=1, size=64, seed=0)
    stamp = layout.read_stamp(root)
    assert stamp["splits"] == {"train": 3, "val": 1} and stamp["size"] == [64, 64]
    assert stamp["kind"] == "synthetic" and stamp["seed"] == 0 and stamp["seconds"] > 0
    first = layout.coco_json(root, "train").stat().st_mtime_ns

    ensure_synthetic(str(root), num_train=3, num_val=1, size=64, seed=0)  # the same: reused
    assert layout.coco_json(root, "train").stat().st_mtime_ns == first

    with caplog.at_level("WARNING", logger="grape_instances"):
        ensure_synthetic(str(root), num_train=2, num_val=1, size=64, seed=0)
    assert _images(root) == 2 and layout.read_stamp(root)["splits"]["train"] == 2
    assert "3 train / 1 val images" in caplog.text and "2 train / 1 val images" in caplog.text
    for other in ({"size": 72}, {"seed": 1}):  # size and seed count as much as the count
        args = {"num_train": 2, "num_val": 1, "size": 64, "seed": 0, **other}
        ensure_synthetic(str(root), **args)
        assert layout.read_stamp(root)["size"] == [args["size"]] * 2
        assert layout.read_stamp(root)["seed"] == args["seed"]


def test_an_unstamped_or_other_dataset_is_refused_where_it_may_not_be_replaced(tmp_path):
    import pytest

    from grape_instances.core.errors import GrapeInputError
    from grape_instances.synthetic.export import ensure_dataset

    root = tmp_path / "scenes"
    generate_dataset(root, {"train": 1, "val": 1}, cfg=config_from_size(64))
    want = layout.dataset_stamp("synthetic", {"train": 2, "val": 1}, 0, (64, 64))
    assert not layout.dataset_ready(root, want)
    with pytest.raises(GrapeInputError, match=r"holds synthetic: 1 train / 1 val images, "
                                              r"64x64, seed 0, not synthetic: 2 train"):
        ensure_dataset(root, want, lambda: None, other="refuse")
    # a comparison trains on whatever finished synthetic set its configs name
    assert ensure_dataset(root, want, lambda: None, other="use") > 0
    assert layout.read_stamp(root)["splits"] == {"train": 1, "val": 1}  # untouched
    (root / layout.STAMP).unlink()  # a generation killed before its stamp: not ready
    have = layout.dataset_stamp("synthetic", {"train": 1, "val": 1}, 0, (64, 64))
    assert not layout.dataset_ready(root, have)
    with pytest.raises(GrapeInputError, match="an unfinished or unstamped dataset"):
        ensure_dataset(root, have, lambda: None, other="refuse")


def test_the_model_tools_share_one_definition_of_the_model_flags():
    """--config-file, --tile, --tile-overlap, --runtime, --exported and the KEY VALUE
    overrides are defined in inference/cli.py only (one type, default and help), which loads
    neither torch nor Detectron2 (a tool's --help stays fast)."""
    import re

    from grape_instances.inference import cli, runtime

    assert runtime.RUNTIMES is cli.RUNTIMES
    shared = re.compile(r"add_argument\(\s*\"(--config-file|--tile|--tile-overlap|--runtime|"
                        r"--exported|--opts|opts)\"")
    for tool in ("count_row", "visualize", "predict", "measure", "export_model"):
        text = (REPO / "tools" / f"{tool}.py").read_text()
        assert not shared.search(text), tool
        assert "add_config_file(" in text and "add_overrides(" in text, tool
    code = ("import sys, grape_instances.inference.cli; "
            "sys.exit('torch' in sys.modules or 'detectron2' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
