"""Shared helpers for tests that run the project's tools as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# ../shared next to the repository (read-only: tests never write there). Tests that read it
# carry @pytest.mark.shared("<sub-folder>"); conftest skips them, naming what is missing,
# where it is absent.
SHARED = Path(os.environ.get("GRAPE_SHARED_DIR") or REPO.parent / "shared")
PEER_DATA = SHARED / "peer-data"
REAL_DATA = SHARED / "real-data" / "wgisd-train"
DEMO_CONFIG = str(REPO / "configs" / "mask_rcnn_grapes_cpu_demo.yaml")


def tiny_training_opts(synth_root: Path, output_dir: Path, max_iter: int = 4) -> list[str]:
    """Overrides that make the CPU demo config train in seconds on 128 px images."""
    return [
        "DATASETS.SYNTHETIC_ROOT", str(synth_root),
        "DATASETS.SEMANTIC_CACHE_DIR", str(output_dir / "semantic_cache"),
        "OUTPUT_DIR", str(output_dir),
        "SOLVER.MAX_ITER", str(max_iter),
        "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.STEPS", "()",
        "SOLVER.CHECKPOINT_PERIOD", "2",
        "INPUT.MIN_SIZE_TRAIN", "(96,)",
        "INPUT.MAX_SIZE_TRAIN", "128",
        "INPUT.MIN_SIZE_TEST", "96",
        "INPUT.MAX_SIZE_TEST", "128",
        "DATALOADER.NUM_WORKERS", "0",
    ]


def tool_env() -> dict[str, str]:
    """The environment tools run in: this one, with 2 OpenMP threads unless set."""
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}


def run_tool(script: str, *args: str, timeout: int = 300, check: bool = False):
    """Run ``tools/<script>`` with the test interpreter; returns the CompletedProcess."""
    env = tool_env()
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / script), *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


# Runs a tool as __main__ and, at exit, writes the process's peak resident memory (VmHWM of
# /proc/self/status, kB) to $PEAK_FILE. VmHWM belongs to the address space the tool ran in;
# ru_maxrss would not do: a child started with vfork inherits the test process's high-water
# mark at exec (Linux keeps the larger of the two).
_PEAK_WRAPPER = """
import atexit, os, runpy, sys
def _peak():
    with open('/proc/self/status') as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith('VmHWM:'))
    with open(os.environ['PEAK_FILE'], 'w') as f:
        f.write(str(kb))
atexit.register(_peak)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def run_tool_with_usage(script: str, *args: str, timeout: int = 300
                        ) -> tuple[subprocess.CompletedProcess, float, int]:
    """Run ``tools/<script>`` like :func:`run_tool`; also return that one process's CPU seconds
    (``os.wait4``) and peak resident memory in kB (its own VmHWM), so that nothing the test
    session ran before counts."""
    with tempfile.TemporaryDirectory() as tmp:
        peak_file = Path(tmp) / "peak"
        env = {**tool_env(), "PEAK_FILE": str(peak_file)}
        with open(Path(tmp) / "out", "w+b") as out, open(Path(tmp) / "err", "w+b") as err:
            proc = subprocess.Popen(
                [sys.executable, "-c", _PEAK_WRAPPER, str(REPO / "tools" / script), *args],
                stdout=out, stderr=err, cwd=REPO, env=env)
            timer = threading.Timer(timeout, proc.kill)
            timer.start()
            try:
                _, status, usage = os.wait4(proc.pid, 0)
            finally:
                timer.cancel()
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            done = subprocess.CompletedProcess(proc.args, proc.returncode,
                                               out.read().decode(errors="replace"),
                                               err.read().decode(errors="replace"))
        peak_kb = int(peak_file.read_text()) if peak_file.exists() else -1
    return done, usage.ru_utime + usage.ru_stime, peak_kb


def assert_user_error(proc, *fragments: str) -> None:
    """A user mistake: exit 1, an ``error:`` line naming the problem, no traceback."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, but the generator's stamp (``.complete``:
    it records the seconds the generation took, so it differs between equal datasets)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".complete"}


def photos_with_a_broken_one(tiny_synth: Path, folder: Path) -> list[Path]:
    """The tiny dataset's val photos copied into ``folder`` as p0.jpg, p2.jpg, ... with an
    undecodable p3.jpg among them; all of them, sorted as a folder input lists them."""
    import shutil

    folder.mkdir(parents=True)
    for n, src in enumerate(sorted((tiny_synth / "images" / "val").glob("*.jpg"))):
        shutil.copy(src, folder / f"p{2 * n}.jpg")
    (folder / "p3.jpg").write_bytes(b"not a jpeg at all")
    return sorted(folder.glob("*.jpg"))


def record_decoding_processes(monkeypatch, log: Path) -> None:
    """Have the photo loader append the id of the process that decodes each photo to ``log``
    (its workers are forked with the patch, so the file is how they tell)."""
    import os

    from grape_instances.inference import batch

    real = batch.decode_image

    def decode(*args, **kwargs):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return real(*args, **kwargs)

    monkeypatch.setattr(batch, "decode_image", decode)


def photo_by_photo(predictor, paths: list[Path]) -> list[tuple[int, Path, object, dict]]:
    """``(image_id, path, image, outputs)`` of each decodable photo, the Predictor called on
    one decoded photo after another: what the photo loader must reproduce."""
    from grape_instances.core.errors import GrapeInputError
    from grape_instances.core.images import decode_image

    done = []
    for image_id, path in enumerate(paths, start=1):
        try:
            image = decode_image(path, format="BGR")
        except GrapeInputError:
            continue
        outputs = predictor(image)
        outputs["instances"] = outputs["instances"].to("cpu")
        done.append((image_id, path, image, outputs))
    return done
