"""Mixed precision on CPU (issue 15, item 1): ``SOLVER.AMP.ENABLED`` trains the forward pass in
bfloat16 on the CPU, leaving weights, gradients and checkpoints float32."""

import torch
from detectron2.engine import AMPTrainer, SimpleTrainer

from grape_instances.data.build import build_config
from grape_instances.engine.cpu_amp import CPUAutocastTrainer, cpu_has_native_bfloat16
from grape_instances.engine.trainer import step_trainer_class
from tests.helpers import DEMO_CONFIG, tiny_training_opts

REAL_CONFIG = "configs/mask_rcnn_grapes_cpu_real.yaml"


def test_the_loop_follows_amp_and_the_device():
    assert step_trainer_class(build_config(DEMO_CONFIG)) is SimpleTrainer
    amp = build_config(DEMO_CONFIG, ["SOLVER.AMP.ENABLED", "True"])
    assert step_trainer_class(amp) is CPUAutocastTrainer
    amp.defrost()
    amp.MODEL.DEVICE = "cuda"  # not built here: which loop it would get
    assert step_trainer_class(amp) is AMPTrainer


def test_the_real_recipe_trains_in_bfloat16_on_cpu():
    """The recipe (PointRend) spends the time bfloat16 saves on iterations; the plain-head
    config keeps float32 and its 1,800."""
    real = build_config(REAL_CONFIG)
    assert real.SOLVER.AMP.ENABLED and real.MODEL.DEVICE == "cpu"
    assert step_trainer_class(real) is CPUAutocastTrainer
    assert real.SOLVER.MAX_ITER == 2700 and tuple(real.SOLVER.STEPS) == (2100, 2550)
    plain = build_config("configs/mask_rcnn_grapes_cpu_real_plain.yaml")
    assert not plain.SOLVER.AMP.ENABLED and plain.SOLVER.MAX_ITER == 1800
    assert isinstance(cpu_has_native_bfloat16(), bool)


def test_amp_training_runs_convolutions_in_bfloat16_and_keeps_float32_weights(
        tiny_synth, tmp_path):
    """Two iterations with AMP: the backbone's convolutions output bfloat16, the losses are
    finite, and the parameters and the checkpoint stay float32; the evaluation that follows
    the training runs in float32, as every inference does."""
    from grape_instances.checkpoint import release_output_dir
    from grape_instances.data.datasets import register_from_config
    from grape_instances.engine.trainer import Trainer

    out = tmp_path / "out"
    cfg = build_config(DEMO_CONFIG, [*tiny_training_opts(tiny_synth, out, max_iter=2),
                                     "SOLVER.AMP.ENABLED", "True"])
    out.mkdir()
    register_from_config(cfg)
    trainer = Trainer(cfg)
    assert isinstance(trainer._trainer, CPUAutocastTrainer)
    model = trainer.model
    seen = []
    stem = model.backbone.bottom_up.stem.conv1
    handle = stem.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    try:
        trainer.resume_or_load(resume=False)
        trainer.train()
    finally:
        handle.remove()
        release_output_dir(out)
    # two training iterations in bfloat16, then the evaluation after training in float32
    assert seen[:2] == [torch.bfloat16, torch.bfloat16]
    assert len(seen) > 2 and set(seen[2:]) == {torch.float32}
    losses = trainer.storage.history("total_loss").values()
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(v)) for v, _ in losses)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    saved = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    assert all(t.dtype == torch.float32 for t in saved.values() if t.is_floating_point())
