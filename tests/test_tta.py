"""Test-time augmentation (issue 15): Detectron2's GeneralizedRCNNWithTTA built by
``inference.wrap`` for the Predictor, evaluation and the photo loader; refused in one line
where it cannot run (exported runtimes, semantic models); tiles replace it."""

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from grape_instances.core.errors import GrapeInputError
from grape_instances.data.build import build_config
from grape_instances.inference.containment import ContainmentFilter
from grape_instances.inference.tta import TTAModel
from grape_instances.inference.wrap import inference_model
from tests.helpers import DEMO_CONFIG

# The demo model at a tiny input: 96 px short side, TTA at 72 and 96 px, flipped too.
TINY = ["MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "10"]
TTA = ["TEST.AUG.ENABLED", "True", "TEST.AUG.MIN_SIZES", "(72, 96)", "TEST.AUG.MAX_SIZE", "128"]


def tiny_model(*opts):
    cfg = build_config(DEMO_CONFIG, [*TINY, *opts])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    return cfg, model


def record_images(model) -> list[torch.Tensor]:
    """The images every forward pass of ``model`` gets, as the backbone sees them (before
    normalisation and padding)."""
    seen = []
    preprocess = model.preprocess_image

    def recording(batched_inputs):
        seen.extend(x["image"].float().clone() for x in batched_inputs)
        return preprocess(batched_inputs)

    model.preprocess_image = recording
    return seen


def photo(h=96, w=128) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (3, h, w), generator=g).float()


def test_tta_runs_every_size_and_flip_and_returns_masks_at_the_photo_size():
    cfg, model = tiny_model(*TTA)
    wrapped = inference_model(cfg, model)
    assert isinstance(wrapped, TTAModel) and not wrapped.training
    seen = record_images(model)
    backbone_runs = []
    model.backbone.bottom_up.register_forward_hook(
        lambda module, args, output: backbone_runs.append(tuple(args[0].shape)))
    image = photo()
    with torch.no_grad():
        out = wrapped([{"image": image, "height": 150, "width": 200}])[0]["instances"]
    assert out.image_size == (150, 200) and len(out) > 0
    assert out.pred_masks.shape == (len(out), 150, 200) and out.pred_masks.dtype == torch.bool
    assert (out.pred_boxes.tensor[:, 2] <= 200).all() and (out.pred_boxes.tensor[:, 3] <= 150).all()
    # 2 sizes x (plain, flipped), once for the boxes and once for the masks; the backbone
    # runs in the box pass only (batches of 3: two runs), the mask pass reuses its features
    assert len(seen) == 8
    assert len(backbone_runs) == 2
    sizes = sorted({tuple(s.shape[-2:]) for s in seen})
    assert sizes == [(72, 96), (96, 128)]
    full = [s for s in seen if s.shape[-2:] == (96, 128)]
    assert any(torch.equal(s, image) for s in full)
    assert any(torch.equal(s, image.flip(-1)) for s in full)  # really flipped


def test_size_0_is_the_test_resized_image_whatever_its_shape():
    """The recipe's flip at its working scale (MIN_SIZES (0,)): both passes see the image the
    plain model sees, one of them flipped, for a 4:3 and a 3:4 photo alike."""
    cfg, model = tiny_model("TEST.AUG.ENABLED", "True", "TEST.AUG.MIN_SIZES", "(0,)",
                            "TEST.AUG.MAX_SIZE", "128")
    wrapped = inference_model(cfg, model)
    seen = record_images(model)
    for h, w in ((96, 128), (128, 96)):
        seen.clear()
        image = photo(h, w)
        with torch.no_grad():
            out = wrapped([{"image": image, "height": 2 * h, "width": 2 * w}])[0]["instances"]
        assert out.image_size == (2 * h, 2 * w)
        assert {tuple(s.shape[-2:]) for s in seen} == {(h, w)}
        assert any(torch.equal(s, image) for s in seen)
        assert any(torch.equal(s, image.flip(-1)) for s in seen)


def test_tta_of_one_size_without_flips_is_the_plain_model():
    """One pass at the model's own input size: the same detections and masks as without TTA
    (boxes mapped back to the photo, masks pasted there, exactly as the plain model does)."""
    cfg, model = tiny_model("TEST.AUG.ENABLED", "True", "TEST.AUG.MIN_SIZES", "(96,)",
                            "TEST.AUG.MAX_SIZE", "128", "TEST.AUG.FLIP", "False")
    inputs = [{"image": photo(), "height": 150, "width": 200}]
    with torch.no_grad():
        plain = model(inputs)[0]["instances"]
        tta = inference_model(cfg, model)(inputs)[0]["instances"]
    assert len(plain) > 0 and len(tta) == len(plain)
    order = torch.argsort(tta.scores, descending=True)
    assert torch.allclose(tta.scores[order], plain.scores, atol=1e-6)
    assert torch.allclose(tta.pred_boxes.tensor[order], plain.pred_boxes.tensor, atol=1e-3)
    agree = (tta.pred_masks[order] == plain.pred_masks).float().mean()
    assert agree > 0.999


def test_tta_reusing_the_box_pass_features_gives_detectron2s_tta():
    from detectron2.modeling.test_time_augmentation import GeneralizedRCNNWithTTA

    cfg, model = tiny_model(*TTA)
    # uint8, as the evaluation loader gives it (float images are resized as uint8 here)
    inputs = [{"image": photo().to(torch.uint8), "height": 150, "width": 200}]
    with torch.no_grad():
        ours = inference_model(cfg, model)(inputs)[0]["instances"]
        stock = GeneralizedRCNNWithTTA(cfg, model)(inputs)[0]["instances"]
    assert len(ours) == len(stock) > 0
    assert torch.equal(ours.scores, stock.scores)
    assert torch.allclose(ours.pred_boxes.tensor, stock.pred_boxes.tensor)
    assert torch.equal(ours.pred_masks, stock.pred_masks)


def test_predictor_and_evaluation_use_tta_inside_the_containment_rule(monkeypatch):
    from detectron2.engine import DefaultTrainer

    from grape_instances.engine.trainer import Trainer
    from grape_instances.inference.predictor import Predictor

    cfg = build_config(DEMO_CONFIG, [*TINY, *TTA, "TEST.CONTAINMENT_THRESH", "0.8"])
    predictor = Predictor(cfg, allow_random_weights=True)
    assert isinstance(predictor.model, ContainmentFilter)
    assert isinstance(predictor.model.model, TTAModel) and not predictor.model.training
    out = predictor(np.zeros((150, 200, 3), np.uint8))["instances"]
    assert out.image_size == (150, 200)

    seen = []
    monkeypatch.setattr(DefaultTrainer, "test", classmethod(
        lambda cls, cfg, model, evaluators=None: seen.append(model)))
    _, model = tiny_model()
    Trainer.test(cfg, model)
    assert isinstance(seen[-1], ContainmentFilter)
    assert isinstance(seen[-1].model, TTAModel) and seen[-1].model.model is model


@pytest.mark.parametrize("sizes", ["()", "(96, -1)"])
def test_tta_sizes_it_cannot_use_are_one_line(sizes):
    from grape_instances.inference.predictor import Predictor

    cfg, model = tiny_model(*TTA, "TEST.AUG.MIN_SIZES", sizes)
    with pytest.raises(GrapeInputError, match="TEST.AUG.MIN_SIZES"):
        inference_model(cfg, model)
    with pytest.raises(GrapeInputError, match="TEST.AUG.MIN_SIZES"):
        Predictor(cfg, allow_random_weights=True)


def test_tiles_replace_tta_with_a_warning(caplog):
    """The recipe has test-time augmentation on; --tile (TEST.TILE_SIZE) still works with it:
    the tiles run without it (its sizes are whole-photo sizes) and a warning says so."""
    import logging

    from grape_instances.inference.predictor import Predictor
    from grape_instances.inference.tiling import TiledModel

    cfg, model = tiny_model(*TTA, "TEST.TILE_SIZE", "64")
    with caplog.at_level(logging.WARNING, logger="grape_instances.inference.wrap"):
        wrapped = inference_model(cfg, model)
    assert isinstance(wrapped, TiledModel) and wrapped.model is model
    assert "tiles replace the config's test-time augmentation" in caplog.text
    predictor = Predictor(cfg, allow_random_weights=True)
    assert isinstance(predictor.model, TiledModel)
    assert predictor(np.zeros((150, 200, 3), np.uint8))["instances"].image_size == (150, 200)


def test_tta_needs_the_eager_mask_rcnn(tmp_path, monkeypatch):
    """An exported runtime and the exporter refuse TEST.AUG.ENABLED in one line; so does
    wrapping anything that is not a GeneralizedRCNN."""
    from grape_instances.inference.export import export_model
    from grape_instances.inference.runtime import exported_runtime

    cfg, _ = tiny_model(*TTA)
    with pytest.raises(GrapeInputError, match="eager Mask R-CNN"):
        inference_model(cfg, torch.nn.Identity())
    with pytest.raises(GrapeInputError, match="without test-time augmentation"):
        exported_runtime(cfg, "torchscript", tmp_path)
    with pytest.raises(GrapeInputError, match="without test-time augmentation"):
        export_model(cfg, "torchscript", tmp_path / "export")


def test_semantic_model_with_tta_is_one_line():
    cfg = build_config("configs/semantic/unet_vgg16_grapes_cpu_demo.yaml",
                       ["TEST.AUG.ENABLED", "True"])
    with pytest.raises(GrapeInputError, match="instance models"):
        inference_model(cfg, torch.nn.Identity())


def test_score_settings_scores_the_plain_model_and_tta_side_by_side(trained_model, tiny_synth,
                                                                    tmp_path):
    """tools/fp_kinds.py's scoring: one row per inference variant, the same metrics and the
    seconds per photo of each; TTA's four passes cost more CPU than the plain one."""
    from grape_instances.data.datasets import register_from_config
    from grape_instances.experiments.fragments import score_settings, settings_table
    from tests.helpers import tiny_training_opts

    cfg = build_config(DEMO_CONFIG, [*tiny_training_opts(tiny_synth, tmp_path),
                                     "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.05"])
    register_from_config(cfg)
    rows = score_settings(cfg, str(trained_model), "grapes_synth_val", [0.0], [0.5],
                          [("plain", []), ("tta", TTA)])
    assert [r["variant"] for r in rows] == ["plain", "tta"]
    assert all(r["photos"] == 4 and "AP" in r["segm"] and "F1@50" in r["instance"]
               for r in rows)
    assert rows[1]["cpu_s_per_photo"] > rows[0]["cpu_s_per_photo"] > 0
    table = settings_table(rows)
    assert "| tta " in table and "s/photo" in table
    with pytest.raises(GrapeInputError, match="--variant"):
        score_settings(cfg, str(trained_model), "grapes_synth_val", [0.0], [0.5],
                       [("bad", ["TEST.AUG.NO_SUCH_KEY", "1"])])
