"""Weights a config names are checked (or downloaded) before a run, in one line."""

import pytest

from grape_instances.checkpoint import ensure_weights_available
from grape_instances.core.errors import GrapeInputError
from tests.helpers import DEMO_CONFIG, assert_user_error, run_tool, tiny_training_opts

# Port 9 (discard) on loopback: nothing listens, so the download fails at once.
UNREACHABLE = "http://127.0.0.1:9/model_final_f10217.pkl"


def test_unreachable_model_zoo_is_one_line_with_the_offline_way(tmp_path):
    with pytest.raises(GrapeInputError, match="cannot download the weights.*offline"):
        ensure_weights_available(UNREACHABLE)
    with pytest.raises(GrapeInputError, match="not found"):
        ensure_weights_available(str(tmp_path / "missing.pth"))
    ensure_weights_available("")  # from scratch: nothing to fetch


def test_train_net_names_the_unreachable_url(tiny_synth, tmp_path):
    opts = tiny_training_opts(tiny_synth, tmp_path / "out")
    proc = run_tool("train_net.py", "--config-file", DEMO_CONFIG, *opts,
                    "MODEL.WEIGHTS", UNREACHABLE)
    assert_user_error(proc, UNREACHABLE, "MODEL.WEIGHTS")


def test_cuda_config_on_a_cpu_machine_says_how_to_run_on_cpu(monkeypatch):
    import torch

    from grape_instances.data.build import build_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(GrapeInputError, match="MODEL.DEVICE cpu"):
        build_config(DEMO_CONFIG, ["MODEL.DEVICE", "cuda"])
