"""Every training goes one way (issue 18.1): ``engine.run_training`` / ``launch_from_args``
take the OUTPUT_DIR lock and run the pre-run checks, from train_net.py and from every driver.
"""

import ast
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.helpers import DEMO_CONFIG, REPO, assert_user_error, run_tool, tiny_training_opts
from tests.test_wgisd import _masks, _yolo_lines

PHOTOS = ["CDY_1", "CDY_2", "SVB_1", "SVB_2", "SVB_3"]  # two varieties: the split stratifies


def fake_wgisd(root: Path) -> Path:
    """Five tiny masked photos in WGISD's layout (random pixels: nothing is meant to learn)."""
    data = root / "data"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, stem in enumerate(PHOTOS):
        masks = _masks(i, 2)
        h, w = masks.shape[:2]
        cv2.imwrite(str(data / f"{stem}.jpg"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        (data / f"{stem}.txt").write_text(_yolo_lines(masks))
        np.savez_compressed(data / f"{stem}.npz", masks)
    (root / "train_masked.txt").write_text("\n".join(PHOTOS) + "\n")
    return root


def start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *argv], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def wait_for_lock(out: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    """Until ``proc`` holds OUTPUT_DIR's lock (its pid in ``.lock``)."""
    deadline = time.monotonic() + timeout
    lock = out / ".lock"
    while time.monotonic() < deadline:
        if lock.is_file() and lock.read_text().strip() == str(proc.pid):
            return
        if proc.poll() is not None:
            pytest.fail(f"the first run ended (rc {proc.returncode}) before taking the lock: "
                        f"{proc.stderr.read()[-3000:]}")
        time.sleep(0.2)
    pytest.fail("the first run did not take the lock in time")


def stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.communicate()


LONG = ["SOLVER.MAX_ITER", "100000", "TEST.EVAL_PERIOD", "0"]
REAL_TINY = ["INPUT.SCALE_CROP.TARGET_SIZE", "(64, 64)", "INPUT.SCALE_CROP.CROP_SIZE",
             "(48, 48)", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96",
             "SOLVER.IMS_PER_BATCH", "1", "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", "1",
             "DATALOADER.NUM_WORKERS", "0"]


@pytest.mark.slow
def test_make_real_driver_and_train_net_into_one_folder_the_second_is_refused(tiny_synth,
                                                                              tmp_path):
    """`make real`'s driver (tools/real.py) and train_net.py started into one OUTPUT_DIR: in
    either order the second is refused in one line naming the first's pid before it writes
    anything there."""
    root = fake_wgisd(tmp_path / "wgisd")
    out = tmp_path / "out"
    # the plain-head recipe: PointRend's point head fails on a batch without a bunch (a
    # 48 px window of these photos can hold none), and this test is about the lock
    real_argv = [str(REPO / "tools" / "real.py"), "--root", str(root), "--output-dir",
                 str(out), "--data-dir", str(tmp_path / "data"), "--overlays", "0",
                 "--config-file", "configs/mask_rcnn_grapes_cpu_real_plain.yaml"]
    train_net_argv = ["--config-file", DEMO_CONFIG, *tiny_training_opts(tiny_synth, out)]

    first = start([str(REPO / "tools" / "train_net.py"), *train_net_argv, *LONG])
    try:
        wait_for_lock(out, first)
        proc = run_tool("real.py", *real_argv[1:], *REAL_TINY)
        assert first.poll() is None, first.stderr.read()[-3000:]  # still training
        assert_user_error(proc, str(out), f"pid {first.pid}", "another run")
    finally:
        stop(first)
    assert not (out / "real_summary.json").exists()

    out = tmp_path / "out2"  # a fresh folder: out holds train_net's run, which real.py would
    real_argv[4] = str(out)  # (rightly) refuse to --resume
    train_net_argv = ["--config-file", DEMO_CONFIG, *tiny_training_opts(tiny_synth, out)]
    first = start([*real_argv, *REAL_TINY, *LONG])
    try:
        wait_for_lock(out, first)
        proc = run_tool("train_net.py", *train_net_argv)
        assert first.poll() is None, first.stderr.read()[-3000:]  # still training
        assert_user_error(proc, str(out), f"pid {first.pid}", "another run")
        assert not (out / "config.yaml").exists()  # train_net's setup never ran
    finally:
        stop(first)


def test_run_training_checks_the_config_before_training(tiny_synth, tmp_path):
    """The guarded path runs check_config: a test set nobody registered is refused in one
    line before any Trainer is built (and the folder stays free for the next run)."""
    from grape_instances.checkpoint import release_output_dir
    from grape_instances.core.errors import GrapeInputError
    from grape_instances.data.build import build_config
    from grape_instances.engine import run_training

    out = tmp_path / "out"
    cfg = build_config(DEMO_CONFIG, [*tiny_training_opts(tiny_synth, out),
                                     "DATASETS.TEST", "('nobody_registered_this',)"])
    try:
        with pytest.raises(GrapeInputError, match="unknown dataset 'nobody_registered_this'"):
            run_training(cfg)
        assert (out / ".lock").is_file()  # taken before the checks
        assert not (out / "last_checkpoint").exists()
    finally:
        release_output_dir(out)


def _calls(tree: ast.AST) -> list[str]:
    """Called names: ``f`` for ``f(...)``; ``x.f`` for ``x.f(...)`` with a plain name ``x``."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute):
                owner = func.value.id if isinstance(func.value, ast.Name) else "?"
                names.append(f"{owner}.{func.attr}")
                names.append(func.attr if func.attr != "train" else "")
            else:
                names.append(getattr(func, "id", ""))
    return names


@pytest.mark.parametrize("path", sorted((REPO / "grape_instances" / "experiments").glob("*.py"))
                         + sorted((REPO / "tools").glob("*.py")), ids=lambda p: p.name)
def test_no_driver_or_tool_trains_outside_the_guarded_path(path):
    """Drivers and tools never build a trainer and call train / resume_or_load themselves,
    nor take the lock or run the checks by hand: engine.run_training does all of it."""
    tree = ast.parse(path.read_text())
    calls = _calls(tree)
    for forbidden in ("trainer.train", "resume_or_load", "lock_output_dir", "check_config",
                      "Trainer", "TrainOnlyTrainer", "defrost"):
        assert forbidden not in calls, f"{path.name} calls {forbidden}()"
