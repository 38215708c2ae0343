"""Exported models (tools/export_model.py) run by TorchScript, ONNX Runtime and OpenVINO give
the eager model's results: same bunches at the threshold, mask IoU >= 0.99."""

import json
import sys

import pytest
from pycocotools import mask as mask_utils

from tests.helpers import DEMO_CONFIG, assert_user_error, run_tool

SIZE_OPTS = ["INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128"]
THRESH = 0.05


def build_cfg(weights, *extra):
    from grape_instances.data.build import build_config

    return build_config(DEMO_CONFIG, ["MODEL.WEIGHTS", str(weights), *SIZE_OPTS,
                                      "MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(THRESH), *extra])


@pytest.fixture(scope="module")
def export_dir(sharp_model, tmp_path_factory):
    from grape_instances.inference.export import export_model

    out = tmp_path_factory.mktemp("export") / "exported"
    for fmt in ("torchscript", "onnx", "openvino"):
        export_model(build_cfg(sharp_model), fmt, out)
    return out


def predict(runtime, paths):
    from grape_instances.inference.batch import iter_predictions

    return [p.outputs["instances"] for p in iter_predictions(runtime, paths, workers=0,
                                                             keep_image=False)]


def assert_same_bunches(eager, other, thresh=THRESH, margin=1e-4):
    """Same count above the threshold (scores within ``margin`` of it may fall either way);
    detections matched in score order: mask IoU >= 0.99."""
    for a, b in zip(eager, other, strict=True):
        sure = int((a.scores > thresh + margin).sum())
        assert sure <= len(b) <= int((a.scores > thresh - margin).sum()) + 0
        for i in range(min(len(a), len(b))):
            union = (a.pred_masks[i] | b.pred_masks[i]).sum().item()
            inter = (a.pred_masks[i] & b.pred_masks[i]).sum().item()
            assert inter >= 0.99 * union, (i, inter, union)  # two empty masks agree


@pytest.mark.parametrize("runtime", ["torchscript", "onnx", "openvino"])
def test_exported_runtime_matches_eager(runtime, export_dir, sharp_model, tiny_synth):
    from grape_instances.inference.runtime import build_runtime

    paths = sorted((tiny_synth / "images" / "val").glob("*.jpg"))
    cfg = build_cfg(sharp_model)
    eager = predict(build_runtime(cfg), paths)
    masks = [m for i in eager for m in i.pred_masks]
    assert len(masks) > 10 and sum(bool(m.any()) for m in masks) > len(masks) // 2
    assert_same_bunches(eager, predict(build_runtime(cfg, runtime, export_dir), paths))
    # a higher threshold than the export's is applied on top, as eager applies it
    high = build_cfg(sharp_model, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.1")
    assert_same_bunches(predict(build_runtime(high), paths),
                        predict(build_runtime(high, runtime, export_dir), paths), thresh=0.1)


def test_openvino_bf16_runs_the_same_ir_in_bfloat16(export_dir, sharp_model, tiny_synth):
    """--runtime openvino_bf16 compiles the f32 IR with OpenVINO's bf16 precision hint; on
    this CPU, which has bf16 units, OpenVINO computes in it: the graph's outputs are finite and
    not f32's bit for bit. (On a barely trained model near-tied detections may reorder, so
    closeness is not asserted here: accuracy on real photos is tools/runtime_accuracy.py's,
    README "Predict a season".)"""
    import numpy as np
    import openvino as ov

    from grape_instances.core.images import decode_image
    from grape_instances.engine.cpu_amp import cpu_has_native_bfloat16
    from grape_instances.inference.runtime import build_runtime

    paths = sorted((tiny_synth / "images" / "val").glob("*.jpg"))
    cfg = build_cfg(sharp_model)
    runtimes = {r: build_runtime(cfg, r, export_dir) for r in ("openvino", "openvino_bf16")}
    hints = {r: rt.model.backend.compiled.get_property("INFERENCE_PRECISION_HINT")
             for r, rt in runtimes.items()}
    assert hints["openvino"] == ov.Type.f32
    native = cpu_has_native_bfloat16()
    if native:
        assert hints["openvino_bf16"] == ov.Type.bf16
    image = runtimes["openvino"].prepare(decode_image(paths[0], format="BGR"))["image"].float()
    f32, bf16 = (runtimes[r].model.backend.run(image) for r in ("openvino", "openvino_bf16"))
    assert all(np.isfinite(np.asarray(o, np.float64)).all() for o in bf16)
    if native:
        pairs = zip(f32, bf16, strict=True)
        assert any(a.shape != b.shape or not np.array_equal(a, b) for a, b in pairs)
    from grape_instances.core.errors import GrapeInputError

    with pytest.raises(GrapeInputError, match="holds no openvino_int8 model"):
        build_runtime(cfg, "openvino_int8_bf16", export_dir)


def test_export_and_predict_command_lines(export_dir, sharp_model, tiny_synth, tmp_path):
    """export_model.py --format onnx, then predict.py --runtime onnx: the results file of
    predict.py on the eager model."""
    photos = tiny_synth / "images" / "val"
    proc = run_tool("export_model.py", "--config-file", DEMO_CONFIG, "--format", "onnx",
                    "--output", str(tmp_path / "exp"), "MODEL.WEIGHTS", str(sharp_model),
                    *SIZE_OPTS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((tmp_path / "exp" / "export.json").read_text())
    assert info["files"] == {"onnx": "model.onnx"} and info["score_thresh"] == THRESH
    common = ["--config-file", DEMO_CONFIG, "--input", str(photos), "--threads", "1",
              "--workers", "0", "--confidence-threshold", "0.05", "--no-progress"]
    results = {}
    for runtime, extra in (("eager", ["MODEL.WEIGHTS", str(sharp_model)]),
                           ("onnx", ["--runtime", "onnx", "--exported", str(tmp_path / "exp")])):
        flags = [e for e in extra if not e.startswith("MODEL") and e != str(sharp_model)]
        opts = [e for e in extra if e not in flags]
        proc = run_tool("predict.py", *common, "--output", str(tmp_path / runtime), *flags,
                        *opts, *SIZE_OPTS)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[runtime] = json.loads((tmp_path / runtime / "results.json").read_text())
    assert len(results["onnx"]) == len(results["eager"]) > 0
    for a, b in zip(results["eager"], results["onnx"], strict=True):
        assert (a["image_id"], a["file_name"], a["category_id"]) == \
            (b["image_id"], b["file_name"], b["category_id"])
        assert abs(a["score"] - b["score"]) < 1e-4
        iou = mask_utils.iou([a["segmentation"]], [b["segmentation"]], [0])[0][0]
        assert iou >= 0.99


def test_exported_model_of_another_config_is_refused(export_dir, sharp_model, tmp_path,
                                                     tiny_synth):
    proc = run_tool("predict.py", "--config-file", DEMO_CONFIG, "--input",
                    str(tiny_synth / "images" / "val"), "--output", str(tmp_path / "o"),
                    "--runtime", "onnx", "--exported", str(export_dir),
                    "MODEL.ROI_HEADS.NUM_CLASSES", "2", *SIZE_OPTS)
    assert_user_error(proc, "does not match the config", "MODEL.ROI_HEADS.NUM_CLASSES")
    assert not (tmp_path / "o").exists()
    from grape_instances.core.errors import GrapeInputError
    from grape_instances.inference.runtime import build_runtime

    with pytest.raises(GrapeInputError, match="score threshold 0.05"):
        build_runtime(build_cfg(sharp_model, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.01"),
                      "openvino", export_dir)
    with pytest.raises(GrapeInputError, match="holds no openvino_int8 model"):
        build_runtime(build_cfg(sharp_model), "openvino_int8", export_dir)


def test_runtime_not_installed_is_one_line(export_dir, sharp_model, monkeypatch):
    from grape_instances.core.errors import GrapeInputError
    from grape_instances.inference.export import export_model
    from grape_instances.inference.runtime import build_runtime

    for package in ("onnxruntime", "openvino"):
        monkeypatch.setitem(sys.modules, package, None)  # import fails as if absent
    with pytest.raises(GrapeInputError, match="needs the Python package onnxruntime"):
        build_runtime(build_cfg(sharp_model), "onnx", export_dir)
    with pytest.raises(GrapeInputError, match="needs the Python package openvino"):
        export_model(build_cfg(sharp_model), "openvino", export_dir / "new")
    assert not (export_dir / "new").exists()


def test_openvino_int8_runs(sharp_model, tiny_synth, tmp_path):
    """NNCF post-training quantization on two photos gives a model predict can run, with the
    backbone quantized and the RPN and ROI heads left in f32 (its accuracy on real photos is
    measured by tools/runtime_accuracy.py, not here)."""
    from grape_instances.inference.export import export_model
    from grape_instances.inference.runtime import build_runtime

    cfg = build_cfg(sharp_model)
    info = export_model(cfg, "openvino", tmp_path, int8=True,
                        calibration=tiny_synth / "images" / "val", calibration_size=2)
    assert info["files"] == {"openvino_int8": "model_int8.xml"}
    paths = sorted((tiny_synth / "images" / "val").glob("*.jpg"))[:2]
    out = predict(build_runtime(cfg, "openvino_int8", tmp_path), paths)
    assert len(out) == 2 and all(len(i) <= 20 for i in out)
    import openvino as ov

    quantized = [op.get_friendly_name() for op in
                 ov.Core().read_model(str(tmp_path / "model_int8.xml")).get_ops()
                 if op.get_type_name() == "FakeQuantize"]
    assert any("/backbone/" in n for n in quantized)
    assert not [n for n in quantized if "roi_heads" in n or "proposal_generator" in n]


def test_visualize_and_measure_run_the_exported_model(export_dir, sharp_model, tiny_synth,
                                                      tmp_path):
    """visualize.py and measure.py take --runtime/--exported: the same engine as predict.py,
    the same detections as the checkpoint."""
    photos = str(tiny_synth / "images" / "val")
    common = ["--config-file", DEMO_CONFIG, "--input", photos, "--confidence-threshold", "0.05"]
    found = {}
    for runtime, extra in (("eager", []), ("onnx", ["--runtime", "onnx", "--exported",
                                                     str(export_dir)])):
        proc = run_tool("visualize.py", *common, "--output", str(tmp_path / runtime), *extra,
                        "--opts", "MODEL.WEIGHTS", str(sharp_model), *SIZE_OPTS)
        assert proc.returncode == 0, proc.stderr[-3000:]
        found[runtime] = json.loads((tmp_path / runtime / "coco_results.json").read_text())
    assert len(found["onnx"]) == len(found["eager"]) > 0
    assert [r["file_name"] for r in found["onnx"]] == [r["file_name"] for r in found["eager"]]
    proc = run_tool("measure.py", *common, "--out", str(tmp_path / "m.csv"), "--runtime", "onnx",
                    "--exported", str(export_dir), "--opts", *SIZE_OPTS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    nonempty = sum(int(mask_utils.area(r["segmentation"])) > 0 for r in found["onnx"])
    assert len((tmp_path / "m.csv").read_text().splitlines()) == nonempty + 1
