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
