"""`make demo`'s tool end to end, shrunk: synthesize, train, evaluate, draw, summarize."""

import json

import pytest

from tests.helpers import run_tool, tiny_training_opts


@pytest.mark.slow
def test_demo_runs_every_stage_and_prints_the_summary(tmp_path):
    out = tmp_path / "demo"
    synth = tmp_path / "synth"
    proc = run_tool("demo.py", "--output-dir", str(out), "--train-images", "6",
                    "--val-images", "3", *tiny_training_opts(synth, out, max_iter=3))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (synth / "annotations" / "instances_train.json").is_file()
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["iterations"] == 3
    assert {"bbox", "segm", "sem_seg", "count"} <= set(summary["results"])
    assert len(summary["overlays"]) == 3 and all(
        (out / "overlays" / f"val_0000{i}.png").is_file() for i in range(3))
    assert set(summary["timings"]) == {"synthesize_s", "train_s", "evaluate_s", "visualize_s",
                                       "total_s"}
    assert "=== grape_instances CPU demo ===" in proc.stdout
    assert "segm" in proc.stdout and "overlays:" in proc.stdout
