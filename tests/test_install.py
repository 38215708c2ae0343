"""The install is real: Detectron2 imports and builds Mask R-CNN from its model-zoo YAML."""

import numpy as np
import pytest
import torch


def test_detectron2_builds_model_zoo_mask_rcnn():
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.NORM = "BN"  # random weights: frozen BN would blow up activations
    cfg.INPUT.MIN_SIZE_TEST = 64
    cfg.INPUT.MAX_SIZE_TEST = 64
    model = build_model(cfg).eval()
    assert type(model).__name__ == "GeneralizedRCNN"
    assert sum(p.numel() for p in model.parameters()) > 40e6
    image = torch.as_tensor(np.random.default_rng(0).integers(0, 255, (3, 64, 64), np.uint8))
    with torch.no_grad():
        out = model([{"image": image, "height": 64, "width": 64}])
    assert out[0]["instances"].image_size == (64, 64)


def test_pinned_versions():
    import torchvision

    assert torch.__version__.startswith("2.14.1")
    assert torchvision.__version__.startswith("0.29.1")


@pytest.mark.parametrize("module", ["pycocotools.mask", "cv2", "labelme", "fvcore", "tqdm"])
def test_runtime_packages_import(module):
    __import__(module)


def test_project_config_builds_the_cpu_demo_model():
    from detectron2.modeling import build_model

    from grape_instances.data.build import build_config
    from tests.helpers import DEMO_CONFIG

    cfg = build_config(DEMO_CONFIG)
    model = build_model(cfg)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 1
    assert cfg.MODEL.RESNETS.NORM == "GN" and cfg.MODEL.BACKBONE.FREEZE_AT == 0
    assert cfg.MODEL.WEIGHTS == ""
    assert next(model.parameters()).device.type == "cpu"
