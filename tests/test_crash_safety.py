"""Nothing lost, nothing mixed: checkpoints written whole, --resume past a broken newest
checkpoint but never into another run's, and one run per OUTPUT_DIR (issue 10, items 1-2)."""

import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from grape_instances.checkpoint import (
    GrapeCheckpointer,
    find_resume_checkpoint,
    lock_output_dir,
    release_output_dir,
)
from grape_instances.core.errors import GrapeInputError
from tests.helpers import DEMO_CONFIG, REPO, assert_user_error, run_tool, tiny_training_opts

RECORD = {"MODEL.META_ARCHITECTURE": "GeneralizedRCNN", "DATASETS.TRAIN": ["a_train"]}


def tiny_model(seed: int, in_features: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(in_features, 2)


def save(folder, name, seed, record=RECORD):
    GrapeCheckpointer(tiny_model(seed), str(folder), run_record=record).save(name, iteration=1)


def weights(path):
    return torch.load(path, map_location="cpu")["model"]["weight"]


def same_weights(model, seed):
    return torch.equal(model.weight, tiny_model(seed).weight)


# A process that saves model_final.pth once, then is killed (SIGKILL: no cleanup at all)
# halfway through writing it again: the crash of the issue, made deterministic.
KILLED_WHILE_SAVING = textwrap.dedent("""
    import io, os, signal, sys
    import torch
    from torch import nn
    from grape_instances.checkpoint import GrapeCheckpointer

    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    checkpointer = GrapeCheckpointer(model, sys.argv[1])
    checkpointer.save("model_final", iteration=3)
    real_save = torch.save

    def save_half_then_die(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = save_half_then_die
    with torch.no_grad():
        model.weight.add_(1.0)
    checkpointer.save("model_final", iteration=5)
""")


def test_process_killed_while_saving_leaves_the_previous_checkpoint(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", KILLED_WHILE_SAVING, str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    # The first model_final.pth is whole and still the one last_checkpoint names.
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    assert torch.equal(weights(out / "model_final.pth"), tiny_model(0).weight)
    # The half-written bytes are in a hidden temporary file, named as no checkpoint...
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".model_final.pth."), leftovers
    assert sorted(p.name for p in out.glob("*.pth")) == ["model_final.pth"]
    # ...which the next run into the folder removes once it holds the lock.
    lock_output_dir(out)
    try:
        assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    finally:
        release_output_dir(out)


def test_failed_save_keeps_the_previous_checkpoint_and_tag(tmp_path, monkeypatch):
    save(tmp_path, "model_0000001", seed=1)

    def fail_halfway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", fail_halfway)
    for name in ("model_0000003", "model_final"):
        with pytest.raises((OSError, GrapeInputError), match="No space left"):
            save(tmp_path, name, seed=3)
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert torch.equal(weights(tmp_path / "model_0000001.pth"), tiny_model(1).weight)


def corrupt(path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(os.urandom(len(data)))


@pytest.mark.parametrize("how", ["truncated", "empty", "random"])
def test_resume_falls_back_past_an_unreadable_newest_checkpoint(tmp_path, how, caplog):
    save(tmp_path, "model_0000001", seed=1)
    save(tmp_path, "model_0000003", seed=3)
    save(tmp_path, "model_0000005", seed=5)
    corrupt(tmp_path / "model_0000005.pth", how)
    model = tiny_model(9)
    with caplog.at_level(logging.WARNING):
        extra = GrapeCheckpointer(model, str(tmp_path), run_record=RECORD).resume_or_load(
            "", resume=True)
    assert same_weights(model, 3), "did not resume from the newest intact checkpoint"
    assert extra["iteration"] == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "model_0000005.pth: not a loadable checkpoint" in warnings[0]
    assert "resuming from" in warnings[0] and "model_0000003.pth" in warnings[0]
    # last_checkpoint now names the complete file, so the next resume does not warn again.
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000003.pth"


def test_resume_with_no_intact_checkpoint_is_one_line(tmp_path):
    save(tmp_path, "model_0000001", seed=1)
    save(tmp_path, "model_final", seed=3)
    corrupt(tmp_path / "model_0000001.pth", "random")
    corrupt(tmp_path / "model_final.pth", "truncated")
    with pytest.raises(GrapeInputError) as error:
        GrapeCheckpointer(tiny_model(9), str(tmp_path)).resume_or_load("", resume=True)
    message = str(error.value)
    assert "\n" not in message
    assert "model_final.pth: not a loadable checkpoint" in message
    assert "nothing to resume" in message


def test_resume_of_another_runs_checkpoint_is_refused_naming_both(tmp_path):
    save(tmp_path, "model_final", seed=1)
    other = {**RECORD, "DATASETS.TRAIN": ["b_train"]}
    model = tiny_model(9)
    with pytest.raises(GrapeInputError) as error:
        GrapeCheckpointer(model, str(tmp_path), run_record=other).resume_or_load("", resume=True)
    message = str(error.value)
    assert "--resume refused" in message and "\n" not in message
    assert "['a_train']" in message and "['b_train']" in message
    assert same_weights(model, 9), "the refused checkpoint was loaded"


def test_resume_into_a_model_of_other_shapes_is_refused(tmp_path):
    save(tmp_path, "model_final", seed=1)
    with pytest.raises(GrapeInputError, match="--resume refused.*model differs.*weight"):
        GrapeCheckpointer(tiny_model(9, in_features=4), str(tmp_path),
                          run_record=RECORD).resume_or_load("", resume=True)


def test_checkpoints_without_a_record_still_load(tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer

    DetectionCheckpointer(tiny_model(1), str(tmp_path)).save("model_final")
    model = tiny_model(9)
    GrapeCheckpointer(model, "").resume_or_load(str(tmp_path / "model_final.pth"), resume=False)
    assert same_weights(model, 1)  # MODEL.WEIGHTS / fine-tuning
    model = tiny_model(9)
    GrapeCheckpointer(model, str(tmp_path), run_record=RECORD).resume_or_load("", resume=True)
    assert same_weights(model, 1)  # nothing recorded to compare: resumed


def test_unreadable_weights_are_one_line(tmp_path):
    bad = tmp_path / "model.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(GrapeInputError, match="model.pth: not a loadable checkpoint"):
        GrapeCheckpointer(tiny_model(9), "").resume_or_load(str(bad), resume=False)


def test_run_record_is_model_and_data_not_solver(tiny_synth, tmp_path):
    from grape_instances.data.build import build_config
    from grape_instances.engine.checks import run_record

    opts = tiny_training_opts(tiny_synth, tmp_path / "out")
    record = run_record(build_config(DEMO_CONFIG, opts))
    assert record == run_record(build_config(DEMO_CONFIG, [*opts, "SOLVER.MAX_ITER", "99",
                                                           "SOLVER.BASE_LR", "0.1"]))
    for change in (["MODEL.RESNETS.DEPTH", "34"], ["MODEL.MASK_ON", "False"],
                   ["DATASETS.TRAIN", "('grapes_synth_val',)"],
                   ["INPUT.DEPTH.ENABLED", "True", "MODEL.PIXEL_MEAN", "[100, 110, 120, 900]",
                    "MODEL.PIXEL_STD", "[1, 1, 1, 300]"]):
        assert record != run_record(build_config(DEMO_CONFIG, [*opts, *change])), change
    copy = tmp_path / "other_synth"
    shutil.copytree(tiny_synth, copy)
    other = run_record(build_config(DEMO_CONFIG, [*opts, "DATASETS.SYNTHETIC_ROOT", str(copy)]))
    assert other["training JSON"] != record["training JSON"]


HOLD_LOCK = ("import sys, time; from grape_instances.checkpoint import lock_output_dir; "
             "lock_output_dir(sys.argv[1]); print('locked', flush=True); time.sleep(120)")


def test_a_second_run_into_a_locked_folder_is_refused_until_the_holder_dies(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(GrapeInputError) as error:
            lock_output_dir(out)
        assert str(out) in str(error.value) and f"pid {holder.pid}" in str(error.value)
    finally:
        holder.kill()  # SIGKILL: the kernel releases the flock, no stale lock is left
        holder.wait()
    try:
        lock_output_dir(out)
        assert (out / ".lock").read_text().strip() == str(os.getpid())
    finally:
        release_output_dir(out)


@pytest.mark.slow
def test_train_net_refuses_a_folder_another_run_holds(tiny_synth, tmp_path):
    out = tmp_path / "out"
    lock_output_dir(out)
    try:
        proc = run_tool("train_net.py", "--config-file", DEMO_CONFIG,
                        *tiny_training_opts(tiny_synth, out))
        assert_user_error(proc, str(out), f"pid {os.getpid()}")
    finally:
        release_output_dir(out)
    assert not (out / "config.yaml").exists()


def copy_run(trained_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained_run[0], out, ignore=shutil.ignore_patterns("inference", ".lock"))
    return out


def test_train_net_resume_falls_back_and_rewrites_model_final(trained_run, tiny_synth,
                                                              tmp_path):
    out = copy_run(trained_run, tmp_path)
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    corrupt(out / "model_final.pth", "truncated")  # killed while writing it, before the fix
    proc = run_tool("train_net.py", "--config-file", DEMO_CONFIG, "--resume",
                    *tiny_training_opts(tiny_synth, out), "TEST.EVAL_PERIOD", "0")
    assert proc.returncode == 0, proc.stderr[-4000:]
    warned = [ln for ln in proc.stderr.splitlines() if "not a loadable checkpoint" in ln]
    assert len(warned) == 1, proc.stderr[-4000:]
    assert "model_final.pth" in warned[0] and "model_0000003.pth" in warned[0]
    assert "Starting training from iteration 4" in proc.stdout + proc.stderr
    final = torch.load(out / "model_final.pth", map_location="cpu")
    assert final["iteration"] == 3
    assert (out / "last_checkpoint").read_text() == "model_final.pth"


def test_train_net_resume_with_other_data_is_refused(trained_run, tiny_synth, tmp_path):
    out = copy_run(trained_run, tmp_path)
    before = (out / "model_final.pth").read_bytes()
    other = tmp_path / "other_synth"
    shutil.copytree(tiny_synth, other)
    proc = run_tool("train_net.py", "--config-file", DEMO_CONFIG, "--resume",
                    *tiny_training_opts(other, out))
    assert_user_error(proc, "model_final.pth: --resume refused",
                      os.path.realpath(tiny_synth), os.path.realpath(other))
    assert (out / "model_final.pth").read_bytes() == before


def test_a_new_run_forgets_the_previous_runs_last_checkpoint(trained_run, tiny_synth, tmp_path):
    """A run killed before its first checkpoint must not --resume into the previous run of
    the folder, even with the same config: starting it forgets the old last_checkpoint."""
    from grape_instances.data.build import build_config
    from grape_instances.engine.checks import check_config
    from grape_instances.engine.trainer import Trainer

    out = copy_run(trained_run, tmp_path)
    cfg = build_config(DEMO_CONFIG, tiny_training_opts(tiny_synth, out))
    check_config(cfg, eval_only=False)
    Trainer(cfg).resume_or_load(resume=False)
    assert not (out / "last_checkpoint").exists()
    assert (out / "model_final.pth").is_file()  # outputs are replaced as the new run saves
    assert find_resume_checkpoint(str(out)) is None  # --resume now starts afresh


# ----------------------------------------------------------------------------- checksums
def flip_tensor_bytes(path, n: int = 64) -> None:
    """Flip ``n`` bytes inside the weight tensor's data of a checkpoint: torch still loads
    the file (the zip's entries are stored, not checked), with other numbers."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if "/data/" in i.filename
                    and i.file_size >= 24)  # the 2 x 3 weight: 24 bytes of float32
    data = bytearray(path.read_bytes())
    local = info.header_offset  # the local header's own name and extra lengths
    header_end = (local + 30 + int.from_bytes(data[local + 26:local + 28], "little")
                  + int.from_bytes(data[local + 28:local + 30], "little"))
    for i in range(min(n, info.file_size)):
        data[header_end + i] ^= 0x55
    path.write_bytes(bytes(data))


def test_flipped_bytes_in_the_weights_are_caught_on_load(tmp_path):
    save(tmp_path, "model_final", seed=1)
    flip_tensor_bytes(tmp_path / "model_final.pth", n=24)
    assert not torch.equal(weights(tmp_path / "model_final.pth"), tiny_model(1).weight)
    model = tiny_model(9)
    with pytest.raises(GrapeInputError, match="model_final.pth: checksum mismatch") as error:
        GrapeCheckpointer(model, "").resume_or_load(str(tmp_path / "model_final.pth"),
                                                    resume=False)
    assert "\n" not in str(error.value)
    assert same_weights(model, 9), "the damaged weights were loaded"


def test_resume_falls_back_past_a_checkpoint_with_flipped_bytes(tmp_path, caplog):
    save(tmp_path, "model_0000001", seed=1)
    save(tmp_path, "model_0000003", seed=3)
    flip_tensor_bytes(tmp_path / "model_0000003.pth", n=24)
    model = tiny_model(9)
    with caplog.at_level(logging.WARNING):
        GrapeCheckpointer(model, str(tmp_path), run_record=RECORD).resume_or_load("",
                                                                                  resume=True)
    assert same_weights(model, 1)
    assert any("model_0000003.pth: checksum mismatch" in r.getMessage() for r in caplog.records)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"


def test_checksum_survives_a_save_load_round_trip(tmp_path):
    from grape_instances.checkpoint import CHECKSUM_KEY, read_checkpoint, tensor_digest

    save(tmp_path, "model_final", seed=1)
    loaded = read_checkpoint(tmp_path / "model_final.pth")  # verified here
    assert loaded[CHECKSUM_KEY] == tensor_digest(loaded)
    loaded["model"]["weight"][0, 0] += 1
    assert loaded[CHECKSUM_KEY] != tensor_digest(loaded)


def test_resume_after_a_kill_between_model_final_and_its_tag(tmp_path, caplog):
    """model_final.pth was renamed into place, then the process died before last_checkpoint
    was rewritten: --resume continues from model_final.pth and tags it."""
    save(tmp_path, "model_0000001", seed=1)
    tag = (tmp_path / "last_checkpoint").read_text()
    save(tmp_path, "model_final", seed=5)
    (tmp_path / "last_checkpoint").write_text(tag)  # as the kill left it
    old = tmp_path / "model_0000001.pth"
    os.utime(old, ns=(old.stat().st_atime_ns, (tmp_path / "model_final.pth").stat()
                      .st_mtime_ns - 10**9))
    model = tiny_model(9)
    with caplog.at_level(logging.WARNING):
        GrapeCheckpointer(model, str(tmp_path), run_record=RECORD).resume_or_load("",
                                                                                  resume=True)
    assert same_weights(model, 5), "resumed from the older checkpoint"
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
