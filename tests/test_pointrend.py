"""PointRend's mask head (issue 15), the real-photo recipe's: configs/mask_rcnn_grapes_cpu_real.yaml
builds, trains on the recipe's data path (scaled cache, polygons rasterised at crop size) and
predicts masks; what it cannot do (polygon targets, export) is one line."""

import pytest
import torch

from grape_instances.core.errors import GrapeInputError
from grape_instances.data.build import build_config
from tests.helpers import DEMO_CONFIG, tiny_training_opts

POINTREND_CONFIG = "configs/mask_rcnn_grapes_cpu_real.yaml"


def test_pointrend_config_follows_the_class_count_and_refuses_polygons():
    cfg = build_config(POINTREND_CONFIG)
    assert cfg.MODEL.ROI_MASK_HEAD.NAME == "PointRendMaskHead"
    assert cfg.MODEL.POINT_HEAD.NUM_CLASSES == cfg.MODEL.ROI_HEADS.NUM_CLASSES == 1
    assert cfg.INPUT.MASK_FORMAT == "bitmask" and cfg.INPUT.SCALE_CROP.CACHE
    # the flip at the working scale (0: the test-resized photo), its threshold with it
    assert cfg.TEST.AUG.ENABLED and cfg.TEST.AUG.FLIP and tuple(cfg.TEST.AUG.MIN_SIZES) == (0,)
    assert cfg.TEST.F1_SCORE_THRESH == cfg.TEST.COUNT_SCORE_THRESH == 0.7
    two = build_config(POINTREND_CONFIG, ["MODEL.ROI_HEADS.NUM_CLASSES", "2",
                                          "DATASETS.TRAIN", "()"])
    assert two.MODEL.POINT_HEAD.NUM_CLASSES == 2
    with pytest.raises(GrapeInputError, match="needs INPUT.MASK_FORMAT bitmask"):
        build_config(POINTREND_CONFIG, ["INPUT.MASK_FORMAT", "polygon"])


def test_pointrend_keys_do_not_change_an_exported_models_signature():
    """Exports written before the PointRend keys existed still match their config: only a
    PointRend head reads those keys, and it is not exported (one line)."""
    from grape_instances.inference.export import export_model
    from grape_instances.inference.runtime import model_signature

    signature = model_signature(build_config(DEMO_CONFIG))
    assert not any(k.startswith(("MODEL.POINT_HEAD", "MODEL.IMPLICIT_POINTREND"))
                   or k == "MODEL.ROI_MASK_HEAD.FC_DIM" for k in signature)
    assert "MODEL.ROI_MASK_HEAD.NAME" in signature  # a PointRend config is another model
    with pytest.raises(GrapeInputError, match="PointRend's mask head is not exported"):
        export_model(build_config(POINTREND_CONFIG), "torchscript", "unused")


@pytest.mark.slow
def test_pointrend_trains_on_cached_polygons_and_predicts_masks(tiny_synth, tmp_path):
    """Two iterations of the PointRend recipe on 128 px synthetic photos through the scaled
    cache (polygons, rasterised as bitmasks at crop size): the point head's loss is there and
    finite; the trained model predicts masks at the photo's size, refined to 224 x 224 per
    box (the plain head gives 28 x 28), through the Predictor, with test-time augmentation
    and in evaluation."""
    from grape_instances.checkpoint import release_output_dir
    from grape_instances.data.datasets import register_from_config
    from grape_instances.engine import run_training
    from grape_instances.engine.trainer import Trainer
    from grape_instances.inference.predictor import Predictor
    from grape_instances.inference.tta import TTAModel

    out = tmp_path / "out"
    opts = [*tiny_training_opts(tiny_synth, out, max_iter=2),
            "DATASETS.TRAIN", "('grapes_synth_train',)", "DATASETS.TEST", "('grapes_synth_val',)",
            "DATASETS.SCALED_CACHE_DIR", str(tmp_path / "cache"),
            "INPUT.SCALE_CROP.TARGET_SIZE", "(128, 128)", "INPUT.SCALE_CROP.CROP_SIZE", "(96, 96)",
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "5",
            # one pass first (the raw mask head's output below); the flip after it
            "TEST.AUG.ENABLED", "False"]
    cfg = build_config(POINTREND_CONFIG, opts)
    try:
        trainer = run_training(cfg)
    finally:
        release_output_dir(out)
    losses = trainer.storage.history("loss_mask_point").values()
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(v)) for v, _ in losses)
    assert any((tmp_path / "cache").iterdir())  # trained on the scaled cache

    weights = str(out / "model_final.pth")
    test_cfg = build_config(POINTREND_CONFIG, [*opts, "MODEL.WEIGHTS", weights])
    register_from_config(test_cfg)
    predictor = Predictor(test_cfg)
    image = torch.randint(0, 256, (120, 160, 3), dtype=torch.uint8).numpy()
    inst = predictor(image)["instances"]
    assert len(inst) == 5 and inst.pred_masks.shape == (5, 120, 160)
    model = predictor.model
    with torch.no_grad():
        raw = model.inference([{"image": torch.as_tensor(image).permute(2, 0, 1).float()}],
                              do_postprocess=False)[0]
    assert raw.pred_masks.shape[-2:] == (224, 224)

    tta_cfg = build_config(POINTREND_CONFIG, [*opts, "MODEL.WEIGHTS", weights,
                                              "TEST.AUG.ENABLED", "True",
                                              "TEST.AUG.MIN_SIZES", "(96,)"])
    tta = Predictor(tta_cfg)
    assert isinstance(tta.model, TTAModel)
    assert tta(image)["instances"].pred_masks.shape[-2:] == (120, 160)

    results = Trainer.test(test_cfg, model)
    assert "segm" in results and "instance" in results
