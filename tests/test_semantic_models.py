"""The four semantic baselines (SegNet, PSPNet, UNet, FCN-8s) and their shared encoders.

Narrow variants of the papers' layouts are built through the configurable constructors
(no config); the YAML configs are built through Detectron2's registries.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from torch.nn import functional as F

from grape_instances.core.config import add_grape_config
from grape_instances.core.errors import GrapeInputError
from grape_instances.modeling import FCN8s, PSPNet, SegNet, UNet
from grape_instances.modeling.fcn import bilinear_upsampler
from grape_instances.modeling.layers import resolve_norm
from grape_instances.modeling.resnet import make_dilated_resnet
from grape_instances.modeling.vgg import VGG16Encoder, load_torchvision_vgg16

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "semantic"
MODEL_CONFIGS = sorted(p for p in CONFIG_DIR.glob("*.yaml") if not p.name.startswith("Base-"))
NORMALISATION = {"pixel_mean": (100.0, 100.0, 100.0), "pixel_std": (50.0, 50.0, 50.0)}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: a second thread only adds synchronisation (and, on a shared
    2-core machine, oversubscription that makes them many times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_vgg(**kwargs) -> VGG16Encoder:
    return VGG16Encoder(width_mult=0.125, norm="GN", **kwargs)


def build_tiny(name: str, **kwargs):
    """A narrow variant of each baseline: same layout, 1/8 width (1/4 for the ResNet)."""
    kwargs = {"num_classes": 2, **NORMALISATION, **kwargs}
    if name == "SegNet":
        return SegNet(backbone=tiny_vgg(), norm="GN", **kwargs)
    if name == "UNet":
        return UNet(backbone=tiny_vgg(), norm="GN", **kwargs)
    if name == "FCN8s":
        return FCN8s(backbone=tiny_vgg(fc_dim=32), **kwargs)
    if name == "PSPNet":
        resnet = make_dilated_resnet(
            output_stride=8, norm="GN", stem_channels=16, res2_channels=32, bottleneck_channels=8
        )
        return PSPNet(backbone=resnet, norm="GN", **kwargs)
    raise AssertionError(name)


MODELS = ["SegNet", "UNet", "FCN8s", "PSPNet"]


def random_input(size: tuple[int, int], seed: int, **extra) -> dict:
    """A random image and label map of ``size``; ``extra`` adds e.g. an output height/width."""
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=g),
        "sem_seg": torch.randint(0, 2, size, generator=g),
        **extra,
    }


def ellipse_scene(seed: int, size: int = 64) -> dict:
    """A noisy background with one noisy purple ellipse (the "bunch", class 1)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(0.35 * size, 0.65 * size, 2)
    ry, rx = rng.uniform(0.25 * size, 0.35 * size, 2)
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    image = rng.normal(90, 25, (size, size, 3))
    image[mask] = rng.normal([60, 40, 140], 25, (int(mask.sum()), 3))
    image = np.clip(image, 0, 255).astype(np.uint8).transpose(2, 0, 1).copy()
    return {"image": torch.from_numpy(image), "sem_seg": torch.from_numpy(mask.astype(np.int64))}


def bunch_iou(model, batch: list[dict]) -> float:
    model.eval()
    with torch.no_grad():
        outputs = model(batch)
    model.train()
    pred = torch.stack([o["sem_seg"].argmax(0) == 1 for o in outputs])
    truth = torch.stack([b["sem_seg"] == 1 for b in batch])
    return float((pred & truth).sum() / (pred | truth).sum())


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_and_output_sizes(name):
    torch.manual_seed(0)
    model = build_tiny(name)
    # Odd sizes, a batch of two different sizes (padding), outputs asked at other sizes.
    batch = [
        random_input((97, 131), seed=1, height=50, width=70),
        random_input((64, 45), seed=2, height=64, width=45),
    ]
    losses = model(batch)
    expected_keys = {"loss_sem_seg", "loss_aux"} if name == "PSPNet" else {"loss_sem_seg"}
    assert set(losses) == expected_keys
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    # Every trainable parameter gets a gradient (none unused: DDP needs that).
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []

    model.eval()
    with torch.no_grad():
        outputs = model([{k: v for k, v in x.items() if k != "sem_seg"} for x in batch])
        plain = model([{"image": batch[0]["image"]}])  # no height/width: the image's size
    assert [tuple(o["sem_seg"].shape) for o in outputs] == [(2, 50, 70), (2, 64, 45)]
    assert tuple(plain[0]["sem_seg"].shape) == (2, 97, 131)
    for output in outputs + plain:
        probabilities = output["sem_seg"]
        assert torch.allclose(probabilities.sum(0), torch.ones(()), atol=1e-4)
        assert probabilities.min() >= 0


@pytest.mark.parametrize("name", MODELS)
def test_overfits_one_small_batch(name):
    torch.manual_seed(0)
    model = build_tiny(name)
    batch = [ellipse_scene(1), ellipse_scene(2)]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first_loss = iou = None
    for step in range(1, 61):
        loss = sum(model(batch).values())
        first_loss = first_loss if first_loss is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 0:
            iou = bunch_iou(model, batch)
            if iou > 0.8:
                break
    assert loss.item() < 0.5 * first_loss, (first_loss, loss.item())
    assert iou > 0.8, f"{name}: bunch IoU {iou:.3f} after {step} steps"


def test_segnet_unpools_at_the_encoders_argmax_positions():
    torch.manual_seed(0)
    model = build_tiny("SegNet").eval()
    batch = [random_input((64, 96), seed=3)]
    calls = []
    hook = model.unpool.register_forward_hook(
        lambda module, args, output: calls.append((args[0], args[1], output))
    )
    with torch.no_grad():
        reference = model(batch)[0]["sem_seg"]
        image = (batch[0]["image"].float() - model.pixel_mean) / model.pixel_std
        encoder = model.backbone(image[None])
    hook.remove()
    assert len(calls) == 5
    for stage, (pooled, indices, unpooled) in zip(range(5, 0, -1), calls, strict=True):
        # The decoder receives exactly the encoder's max-pooling indices of that stage ...
        assert torch.equal(indices, encoder[f"pool{stage}_indices"])
        # ... and puts each value back at its argmax position, zeros elsewhere.
        n, c = pooled.shape[:2]
        expected = torch.zeros_like(unpooled).view(n, c, -1)
        expected.scatter_(2, indices.view(n, c, -1), pooled.view(n, c, -1))
        assert torch.equal(unpooled, expected.view_as(unpooled))
        assert (unpooled != 0).float().mean() <= 0.25

    # Other indices (each value moved within its 2x2 window) change the prediction.
    forward = model.backbone.forward

    def moved_indices(x):
        features = forward(x)
        width = features["conv5"].shape[-1]
        idx = features["pool5_indices"]
        col = idx % width
        features["pool5_indices"] = torch.where(col % 2 == 0, idx + 1, idx - 1)
        return features

    model.backbone.forward = moved_indices
    with torch.no_grad():
        changed = model(batch)[0]["sem_seg"]
    assert not torch.allclose(changed, reference, atol=1e-5)


def test_ignore_value_pixels_and_padding_do_not_count():
    torch.manual_seed(0)
    model = build_tiny("SegNet", ignore_value=255)  # no dropout: training forward is exact
    sample = random_input((97, 131), seed=4)
    target = sample["sem_seg"].clone()
    target[:40] = 255
    loss = model([{"image": sample["image"], "sem_seg": target}])["loss_sem_seg"]

    image = (sample["image"].float() - model.pixel_mean) / model.pixel_std
    padded = F.pad(image, (0, 160 - 131, 0, 128 - 97))[None]  # the padding ImageList adds
    logits = model.predict(padded)["sem_seg"][0, :, :97, :131]
    kept = target != 255
    manual = F.cross_entropy(logits.permute(1, 2, 0)[kept], target[kept])
    assert torch.allclose(loss, manual, rtol=1e-4)

    # The same pixels, labelled instead of ignored, do count.
    relabelled = target.clone()
    relabelled[:40] = 1 - sample["sem_seg"][:40]
    other = model([{"image": sample["image"], "sem_seg": relabelled}])["loss_sem_seg"]
    assert not torch.allclose(other, loss)

    everything_ignored = torch.full_like(target, 255)
    zero = model([{"image": sample["image"], "sem_seg": everything_ignored}])["loss_sem_seg"]
    assert zero.item() == 0.0

    weighted = build_tiny("SegNet", class_weights=(0.0, 1.0))
    weighted.load_state_dict(model.state_dict())
    loss_bunch_only = weighted([{"image": sample["image"], "sem_seg": target}])["loss_sem_seg"]
    bunch = kept & (target == 1)
    manual_bunch = F.cross_entropy(logits.permute(1, 2, 0)[bunch], target[bunch])
    assert torch.allclose(loss_bunch_only, manual_bunch, rtol=1e-4)


def test_pspnet_output_stride_and_auxiliary_head():
    x = torch.zeros(1, 3, 64, 96)
    for stride, res4_size, res5_size in (
        (8, (8, 12), (8, 12)),
        (16, (4, 6), (4, 6)),
        (32, (4, 6), (2, 3)),
    ):
        resnet = make_dilated_resnet(
            output_stride=stride,
            norm="GN",
            stem_channels=16,
            res2_channels=32,
            bottleneck_channels=8,
        )
        features = resnet(x)
        assert tuple(features["res4"].shape[-2:]) == res4_size
        assert tuple(features["res5"].shape[-2:]) == res5_size
        assert resnet.output_shape()["res5"].stride == stride
    assert make_dilated_resnet(output_stride=8).res5[0].conv2.dilation == (4, 4)

    with_aux = build_tiny("PSPNet")
    assert with_aux.size_divisibility == 8
    assert set(with_aux([random_input((64, 64), seed=5)])) == {"loss_sem_seg", "loss_aux"}
    without_aux = build_tiny("PSPNet", aux_weight=0.0)
    assert not hasattr(without_aux, "aux_head")
    assert set(without_aux([random_input((64, 64), seed=5)])) == {"loss_sem_seg"}


def test_fcn_upsamplers_start_bilinear():
    x = torch.randn(1, 2, 8, 8)
    for factor in (2, 8):
        up = bilinear_upsampler(2, factor, trainable=factor == 2)
        out = up(x)
        assert out.shape[-2:] == (8 * factor, 8 * factor)
        reference = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
        inner = slice(factor, -factor)  # transposed convs zero-pad at the border
        torch.testing.assert_close(out[..., inner, inner], reference[..., inner, inner])
        assert up.weight.requires_grad == (factor == 2)


def test_vgg_encoder_shapes_and_narrow_group_norm():
    encoder = tiny_vgg(fc_dim=16)
    features = encoder(torch.zeros(1, 3, 64, 96))
    for name, shape in encoder.output_shape().items():
        assert features[name].shape[1] == shape.channels, name
        assert features[name].shape[-1] == 96 // shape.stride, name
    groups = {c: resolve_norm("GN")(c).num_groups for c in (8, 16, 64, 256, 2048)}
    assert groups == {8: 4, 16: 8, 64: 32, 256: 32, 2048: 32}


@pytest.fixture(scope="module")
def torchvision_vgg16_bn(tmp_path_factory):
    """A randomly initialised torchvision vgg16_bn (BN statistics made non-trivial), saved."""
    torch.manual_seed(0)
    vgg = torchvision.models.vgg16_bn(weights=None).eval()
    for module in vgg.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("weights") / "vgg16_bn.pth"
    torch.save(vgg.state_dict(), path)
    return vgg, path


def semantic_cfg(config: Path, *opts: str):
    cfg = add_grape_config(get_cfg())
    cfg.merge_from_file(str(config))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    return cfg


def test_torchvision_vgg16_bn_weights_load_into_the_encoder(torchvision_vgg16_bn):
    vgg, path = torchvision_vgg16_bn
    rgb = torch.randn(1, 3, 64, 64)
    expected = vgg.features(rgb)
    for fmt, image in (("RGB", rgb), ("BGR", rgb.flip(1))):
        cfg = semantic_cfg(
            CONFIG_DIR / "segnet_grapes.yaml",
            "MODEL.ENCODER_WEIGHTS",
            str(path),
            "INPUT.FORMAT",
            fmt,
        )
        model = build_model(cfg).eval()
        with torch.no_grad():
            pool5 = model.backbone(image)["pool5"]
        torch.testing.assert_close(pool5, expected, rtol=1e-4, atol=1e-4)
    state = vgg.state_dict()
    for ours, tv_index in zip(("conv1_1", "conv3_2", "conv5_3"), (0, 17, 40), strict=True):
        assert torch.equal(
            getattr(model.backbone, ours).norm.running_var,
            state[f"features.{tv_index + 1}.running_var"],
        )


def test_torchvision_classifier_becomes_fcn_fc6_fc7(torchvision_vgg16_bn):
    vgg, path = torchvision_vgg16_bn
    encoder = VGG16Encoder(fc_dim=4096, norm="BN").eval()
    load_torchvision_vgg16(encoder, torch.load(path), input_format="RGB")
    image = torch.randn(1, 3, 224, 224)  # pool5 is 7 x 7: fc6 sees it whole at the centre
    with torch.no_grad():
        pool5 = encoder(image)["pool5"]
        fc6 = encoder.fc6(pool5)[0, :, 3, 3]
        expected = vgg.classifier[1](vgg.classifier[0](vgg.features(image).flatten(1)))[0]
    torch.testing.assert_close(fc6, expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(encoder.fc7.weight.flatten(1), vgg.state_dict()["classifier.3.weight"])


def test_encoder_weights_errors_name_the_file(torchvision_vgg16_bn, tmp_path):
    _, path = torchvision_vgg16_bn
    state = torch.load(path)
    with pytest.raises(GrapeInputError, match="WIDTH_MULT"):
        load_torchvision_vgg16(tiny_vgg(), state, source=str(path))
    not_vgg = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, not_vgg)
    cfg = semantic_cfg(CONFIG_DIR / "segnet_grapes.yaml", "MODEL.ENCODER_WEIGHTS", str(not_vgg))
    with pytest.raises(GrapeInputError, match="resnet.pth: not a torchvision VGG16"):
        build_model(cfg)
    cfg = semantic_cfg(
        CONFIG_DIR / "segnet_grapes.yaml", "MODEL.ENCODER_WEIGHTS", str(tmp_path / "missing.pth")
    )
    with pytest.raises(GrapeInputError, match="missing.pth"):
        build_model(cfg)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    cfg = semantic_cfg(CONFIG_DIR / "segnet_grapes.yaml", "MODEL.ENCODER_WEIGHTS", str(corrupt))
    with pytest.raises(GrapeInputError, match="corrupt.pth: cannot read"):
        build_model(cfg)


def test_bn_weights_fill_only_the_convs_of_a_group_norm_encoder(torchvision_vgg16_bn):
    vgg, _ = torchvision_vgg16_bn
    encoder = VGG16Encoder(norm="GN")
    load_torchvision_vgg16(encoder, vgg.state_dict(), input_format="RGB")
    assert torch.equal(encoder.conv4_1.weight, vgg.features[24].weight)
    assert torch.equal(encoder.conv4_1.norm.weight, torch.ones(512))  # GN keeps its init


def test_plain_vgg16_weights_load_into_a_norm_free_encoder():
    torch.manual_seed(0)
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"]).eval()
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    encoder = VGG16Encoder(norm="").eval()
    load_torchvision_vgg16(encoder, state, input_format="RGB")
    image = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder(image)["pool5"], features(image))


@pytest.mark.parametrize("config", MODEL_CONFIGS, ids=lambda p: p.stem)
def test_configs_build_their_registered_model(config):
    torch.manual_seed(0)
    cfg = semantic_cfg(config)
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 2
    assert cfg.DATASETS.TRAIN == ("grapes_synth_train",)
    cpu_demo = config.stem.endswith("_cpu_demo")
    if not cpu_demo:  # the papers' models point at ImageNet weights (not downloaded here)
        weights = cfg.MODEL.ENCODER_WEIGHTS or cfg.MODEL.WEIGHTS
        assert weights.startswith(("https://download.pytorch.org/", "detectron2://")), weights
        cfg.merge_from_list(["MODEL.ENCODER_WEIGHTS", ""])
    model = build_model(cfg)
    assert type(model).__name__ == cfg.MODEL.META_ARCHITECTURE
    if cpu_demo:
        assert cfg.MODEL.DEVICE == "cpu"
        losses = model([random_input((64, 64), seed=6)])
        assert all(torch.isfinite(v) for v in losses.values())
    elif cfg.MODEL.META_ARCHITECTURE == "PSPNet":
        assert model.size_divisibility == 8 and hasattr(model, "aux_head")
    elif cfg.MODEL.META_ARCHITECTURE == "FCN8s":
        assert model.backbone.fc6.weight.shape == (4096, 512, 7, 7)


def test_pspnet_with_batch_norm_trains_on_one_image_per_process():
    """`--num-gpus N` with N images gives each process one image: the 1x1 pyramid bin then
    holds one value per channel, on which BatchNorm raises "Expected more than 1 value"."""
    resnet = make_dilated_resnet(
        output_stride=8, norm="BN", stem_channels=16, res2_channels=32, bottleneck_channels=8
    )
    model = PSPNet(backbone=resnet, norm="BN", num_classes=2, **NORMALISATION)
    model.train()
    losses = model([random_input((64, 64), seed=0)])
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert isinstance(model.ppm.reductions[0].norm, torch.nn.GroupNorm)
    assert isinstance(model.ppm.reductions[-1].norm, torch.nn.BatchNorm2d)
