"""Shared pytest fixtures (a tiny synthetic grape dataset rendered once per session) and the
markers: ``shared`` tests are skipped, with the missing path named, where ../shared is absent;
``slow`` ones are left out by ``make test-fast``."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")  # CI machines have 2 cores shared by workers

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from grape_instances.synthetic.export import generate_dataset  # noqa: E402
from grape_instances.synthetic.render import config_from_size  # noqa: E402

TINY_SPLITS = {"train": 8, "val": 4}


#: Session fixtures that train a model: a test using them is slow even when its own body is not.
TRAINING_FIXTURES = {"trained_run", "trained_model"}


def pytest_collection_modifyitems(config, items):
    """Skip each ``@pytest.mark.shared("sub/path")`` test whose ../shared/sub/path is absent
    (a clone without the shared data), saying so, instead of failing on a missing file; mark
    ``slow`` every test that needs a training fixture."""
    from tests.helpers import SHARED

    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        for mark in item.iter_markers("shared"):
            needed = SHARED.joinpath(*mark.args) if mark.args else SHARED
            if not needed.exists():
                item.add_marker(pytest.mark.skip(
                    reason=f"needs {needed} (../shared next to the repository), not found"))
                break
TINY_SIZE = 128
TINY_SEED = 0


@pytest.fixture(scope="session")
def tiny_synth_params() -> dict:
    """How ``tiny_synth`` was generated, for tests that re-render its images."""
    return {"splits": dict(TINY_SPLITS), "size": TINY_SIZE, "seed": TINY_SEED}


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> Path:
    """Root of a 128 x 128 synthetic dataset (train 8, val 4, seed 0) in the COCO/VIA/labelme
    layout of ``generate_dataset``; read-only for tests (copy before writing next to it)."""
    root = tmp_path_factory.mktemp("tiny_synth") / "grapes_synth"
    generate_dataset(root, TINY_SPLITS, seed=TINY_SEED, cfg=config_from_size(TINY_SIZE))
    return root


@pytest.fixture(scope="session")
def trained_run(tiny_synth, tmp_path_factory):
    """One 4-iteration Mask R-CNN run of tools/train_net.py on ``tiny_synth``:
    (output folder, CompletedProcess). Shared so the suite trains once."""
    from tests.helpers import DEMO_CONFIG, run_tool, tiny_training_opts

    out = tmp_path_factory.mktemp("trained")
    opts = tiny_training_opts(tiny_synth, out)
    proc = run_tool("train_net.py", "--config-file", DEMO_CONFIG, *opts)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc


@pytest.fixture(scope="session")
def trained_model(trained_run) -> Path:
    """Checkpoint written by ``trained_run``."""
    return trained_run[0] / "model_final.pth"


@pytest.fixture(scope="session")
def sharp_model(trained_model, tmp_path_factory) -> Path:
    """The 4-iteration model with its mask logits spread (random weights x 10, bias 0): its pasted
    masks are neither empty nor full boxes, so mask IoU between runtimes means something;"""
    import torch

    checkpoint = torch.load(trained_model, map_location="cpu", weights_only=False)
    model = checkpoint["model"]
    # seeded zero-mean mask weights: whatever 4 iterations learnt (all-negative logits on
    # some runs), the masks' signs vary across each box
    weight = torch.as_tensor(model["roi_heads.mask_head.predictor.weight"])
    model["roi_heads.mask_head.predictor.weight"] = torch.randn(
        weight.shape, generator=torch.Generator().manual_seed(0)) * 10
    model["roi_heads.mask_head.predictor.bias"] = \
        torch.zeros_like(torch.as_tensor(model["roi_heads.mask_head.predictor.bias"]))
    # and its class scores raised (foreground bias + 2): many detections above the threshold
    # whatever 4 iterations happened to learn, so the comparison has something to compare
    cls_bias = torch.as_tensor(model["roi_heads.box_predictor.cls_score.bias"]).clone()
    cls_bias[:-1] += 2.0
    model["roi_heads.box_predictor.cls_score.bias"] = cls_bias
    path = tmp_path_factory.mktemp("sharp") / "model.pth"
    torch.save({"model": model}, path)
    return path


@pytest.fixture(autouse=True)
def isolated_dataset_catalog():
    """Forget the datasets a test registered in this process, as a new tool process would:
    a semantic view registered with one test's cache folder must not refuse the next test's."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    before = set(DatasetCatalog.list())
    yield
    for name in set(DatasetCatalog.list()) - before:
        DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():  # metadata exists only once something asked for it
            MetadataCatalog.remove(name)
