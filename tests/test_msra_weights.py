"""ImageNet weights from Detectron2's model zoo (MSRA R-50.pkl, Caffe2 names) load into the
dilated ResNet of PSPNet through MODEL.WEIGHTS, each blob into its own parameter.

The file is fabricated here in the zoo's format (a pickled dict of numpy blobs named
``res2_0_branch2a_w``, ``res_conv1_bn_s``, ..., with ``_momentum`` blobs and the ImageNet
classifier ``fc1000``), with distinct random values, so that a blob landing in the wrong
parameter of the same shape is caught.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model

import grape_instances.modeling  # noqa: F401  (registers PSPNet)
from grape_instances.core.config import add_grape_config

PSPNET_R50 = Path(__file__).resolve().parents[1] / "configs" / "semantic" / "pspnet_r50_grapes.yaml"
_BRANCH = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "shortcut": "branch1"}
_SUFFIX = {"weight": "w", "norm.weight": "bn_s", "norm.bias": "bn_b"}


def msra_name(backbone_key: str) -> str | None:
    """The Caffe2 blob name of a Detectron2 ResNet parameter (None: not in MSRA files)."""
    if backbone_key == "stem.conv1.weight":
        return "conv1_w"
    if backbone_key.startswith("stem.conv1.norm."):
        return {"weight": "res_conv1_bn_s", "bias": "res_conv1_bn_b"}.get(
            backbone_key.rsplit(".", 1)[1])
    m = re.fullmatch(r"res(\d)\.(\d+)\.(conv[123]|shortcut)\.(weight|norm\.weight|norm\.bias)",
                     backbone_key)
    if m is None:  # BN running statistics: MSRA's frozen BN has them folded into s / b
        return None
    stage, block, conv, suffix = m.groups()
    return f"res{stage}_{block}_{_BRANCH[conv]}_{_SUFFIX[suffix]}"


def test_msra_r50_blobs_land_in_the_dilated_resnet(tmp_path):
    cfg = add_grape_config(get_cfg())
    cfg.merge_from_file(str(PSPNET_R50))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    model = build_model(cfg).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    rng = np.random.default_rng(0)
    blobs, expected = {}, {}
    for key, value in model.backbone.state_dict().items():
        name = msra_name(key)
        if name is not None:
            blobs[name] = rng.standard_normal(tuple(value.shape)).astype(np.float32)
            blobs[f"{name}_momentum"] = np.zeros(value.shape, np.float32)
            expected[f"backbone.{key}"] = blobs[name]
    assert len(expected) == 1 + 2 + 3 * 16 * 3 + 3 * 4  # stem; 16 blocks x 3 convs; 4 shortcuts
    blobs["fc1000_w"] = rng.standard_normal((1000, 2048)).astype(np.float32)
    blobs["fc1000_b"] = np.zeros(1000, np.float32)
    path = tmp_path / "R-50.pkl"
    with path.open("wb") as f:
        pickle.dump(blobs, f)

    DetectionCheckpointer(model).load(str(path))
    after = model.state_dict()
    for key, blob in expected.items():
        torch.testing.assert_close(after[key], torch.from_numpy(blob), rtol=0, atol=0,
                                   msg=key)
    for key, value in after.items():  # the rest keeps its initialisation
        if key not in expected:
            assert torch.equal(value, before[key]), key
    # res5 stays dilated (output stride 8) with the zoo's weights in it
    assert model.backbone.res5[0].conv2.dilation == (4, 4)
