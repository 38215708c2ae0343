"""tools/visualize.py draws overlays and writes COCO results for files, folders and globs."""

import json

import cv2

from tests.helpers import DEMO_CONFIG, assert_user_error, run_tool


def test_visualize_writes_overlays_and_results(trained_model, tiny_synth, tmp_path):
    images = sorted((tiny_synth / "images" / "val").glob("*.jpg"))
    out = tmp_path / "vis"
    proc = run_tool(
        "visualize.py", "--config-file", DEMO_CONFIG,
        "--input", str(images[0]), str(tiny_synth / "images" / "train" / "train_0000[01].jpg"),
        "--output", str(out), "--confidence-threshold", "0.0",
        "--opts", "MODEL.WEIGHTS", str(trained_model), "INPUT.MIN_SIZE_TEST", "96",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    pngs = sorted(out.glob("*.png"))
    assert [p.stem for p in pngs] == sorted([images[0].stem, "train_00000", "train_00001"])
    for png in pngs:
        overlay = cv2.imread(str(png))
        assert overlay.shape[:2] == (128, 128)
    results = json.loads((out / "coco_results.json").read_text())
    assert isinstance(results, list)
    for r in results:
        assert r["category_id"] == 1 and 0.0 <= r["score"] <= 1.0
        assert {"segmentation", "bbox", "image_id", "file_name"} <= set(r)


def test_visualize_folder_input(trained_model, tiny_synth, tmp_path):
    proc = run_tool(
        "visualize.py", "--config-file", DEMO_CONFIG, "--input", str(tiny_synth / "images" / "val"),
        "--output", str(tmp_path), "--opts", "MODEL.WEIGHTS", str(trained_model),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list(tmp_path.glob("*.png"))) == 4


def test_visualize_bad_inputs_are_one_line_errors(trained_model, tmp_path):
    proc = run_tool("visualize.py", "--config-file", DEMO_CONFIG, "--input",
                    str(tmp_path / "missing.jpg"), "--output", str(tmp_path / "o"),
                    "--opts", "MODEL.WEIGHTS", str(trained_model))
    assert_user_error(proc, "missing.jpg", "no such file")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    proc = run_tool("visualize.py", "--config-file", DEMO_CONFIG, "--input", str(broken),
                    "--output", str(tmp_path / "o"), "--opts", "MODEL.WEIGHTS", str(trained_model))
    assert_user_error(proc, "broken.jpg", "cannot read image")
    proc = run_tool("visualize.py", "--config-file", DEMO_CONFIG, "--input", str(broken),
                    "--output", str(tmp_path / "o"), "--opts", "MODEL.WEIGHTS",
                    str(tmp_path / "nope.pth"))
    assert_user_error(proc, "nope.pth", "not found")
