"""Issue 15's ablation table, from hand-written `make real` summaries."""

import json

import pytest

from grape_instances.core.errors import GrapeInputError
from grape_instances.experiments.real_ablation import ablation_table, run_row, variant_means
from tests.helpers import assert_user_error, run_tool


def write_summary(folder, ap50: float, f1_50: float, resumed: int = 0):
    folder.mkdir(parents=True, exist_ok=True)
    summary = {
        "config": "configs/mask_rcnn_grapes_cpu_real.yaml", "iterations": 1800,
        "resumed_from_iteration": resumed, "timings": {"train_s": 2400.0},
        "results": {"whole": {
            "segm": {"AP": ap50 / 2, "AP50": ap50, "AP75": 30.0},
            "instance": {"P@50": 70.0, "R@50": 70.0, "F1@30": 80.0, "F1@50": f1_50,
                         "F1@80": 25.0},
            "count": {"MAE": 2.5},
            "fp_kinds": {"fragment": 20, "duplicate": 4, "merge": 3, "background": 10},
        }},
    }
    (folder / "real_summary.json").write_text(json.dumps(summary))
    return folder


def test_runs_and_the_mean_and_spread_over_seeds(tmp_path):
    rows = [run_row("recipe", 0, write_summary(tmp_path / "a", 70.0, 68.0)),
            run_row("recipe", 1, write_summary(tmp_path / "b", 74.0, 70.0, resumed=1200)),
            run_row("copy-paste", 0, write_summary(tmp_path / "c", 76.0, 72.0))]
    assert rows[0]["segm_ap50"] == 70.0 and rows[0]["train_min"] == 40.0
    assert rows[1]["train_min"] is None  # a resumed run timed only its last part
    (mean,) = variant_means(rows)  # copy-paste has one seed: no mean row
    assert mean["variant"] == "recipe" and mean["seeds"] == 2
    assert mean["segm_ap50"] == pytest.approx(72.0)
    assert mean["segm_ap50_std"] == pytest.approx(2.8284, abs=1e-3)  # sample std of 70, 74
    assert mean["train_min"] == 40.0 and mean["train_min_std"] is None
    table = ablation_table(rows)
    assert "| **recipe, mean of 2** |" in table.replace("  ", "")
    assert "72.0 ± 2.8" in table and "copy-paste" in table


def test_a_score_threshold_reads_fp_kinds_rows(tmp_path):
    folder = write_summary(tmp_path / "a", 70.0, 68.0)
    with pytest.raises(GrapeInputError, match="fp_kinds.py --weights"):
        run_row("recipe", 0, folder, score=0.6)
    (folder / "grid").mkdir()
    row = {"variant": "plain", "containment": 0.0, "segm": {"AP": 35.0, "AP50": 70.0},
           "instance": {"F1@50": 71.5}, "count": {"MAE": 2.0}, "fp_kinds": {"fragment": 9}}
    (folder / "grid" / "fp_kinds.json").write_text(json.dumps(
        [{**row, "score": 0.5, "instance": {"F1@50": 1.0}}, {**row, "score": 0.6},
         {**row, "score": 0.6, "containment": 0.5, "instance": {"F1@50": 2.0}},
         {**row, "score": 0.6, "variant": "flip", "instance": {"F1@50": 74.0}}]))
    scored = run_row("recipe", 0, folder, score=0.6)
    assert scored["f1_50"] == 71.5 and scored["fp_fragment"] == 9 and scored["score"] == 0.6
    assert scored["train_min"] == 40.0  # the run's own summary still gives the time
    with pytest.raises(GrapeInputError, match="no row of the plain variant at score 0.7"):
        run_row("recipe", 0, folder, score=0.7)
    flipped = run_row("recipe, flipped", 0, folder, score=0.6, inference="flip")
    assert flipped["f1_50"] == 74.0 and flipped["inference"] == "flip"
    with pytest.raises(GrapeInputError, match="no row of the tta variant"):
        run_row("recipe", 0, folder, score=0.6, inference="tta")


def test_a_folder_without_results_is_one_line(tmp_path):
    (tmp_path / "real_summary.json").write_text(json.dumps({"results": {}}))
    with pytest.raises(GrapeInputError, match="no whole-photo results"):
        run_row("recipe", 0, tmp_path)


def test_tool_writes_the_table_and_refuses_a_bad_seed(tmp_path):
    folder = write_summary(tmp_path / "a", 70.0, 68.0)
    out = tmp_path / "ablation"
    proc = run_tool("real_ablation.py", "--run", "recipe", "0", str(folder),
                    "--output", str(out), check=True)
    assert "recipe" in proc.stdout
    assert (out.with_suffix(".md")).read_text().strip() == proc.stdout.strip()
    assert json.loads(out.with_suffix(".json").read_text())["runs"][0]["f1_50"] == 68.0
    assert_user_error(run_tool("real_ablation.py", "--run", "recipe", "zero", str(folder)),
                      "seed must be an integer")
    assert_user_error(run_tool("real_ablation.py", "--run", "recipe", "0"),
                      "give VARIANT SEED FOLDER [INFERENCE]")
    assert_user_error(run_tool("real_ablation.py", "--run", "recipe", "0", str(folder), "flip"),
                      "read at a --score threshold")
