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
