"""Model weights and the run state in ``OUTPUT_DIR``.

Weights a config names can be had before a run starts; checkpoints are written whole or not at
all; ``--resume`` continues from a checkpoint that loads and belongs to the same run; and one
run at a time writes an ``OUTPUT_DIR``.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import logging
import os
import re
from typing import IO, Any

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager

from .core.errors import GrapeInputError
from .core.fileio import atomic_open
from .modeling.rgbd import RGBDCheckpointerMixin

logger = logging.getLogger(__name__)

OFFLINE_HINT = (
    'offline, pass a local checkpoint (MODEL.WEIGHTS path/to/model_final.pth) or train from '
    'scratch (MODEL.WEIGHTS "", as configs/mask_rcnn_grapes_cpu_real.yaml does)'
)

#: The file in OUTPUT_DIR naming the checkpoint ``--resume`` continues from (Detectron2's name).
LAST_CHECKPOINT = "last_checkpoint"
#: The file in OUTPUT_DIR a run holds an exclusive flock on for its whole life.
LOCK_FILE = ".lock"
#: The key under which a checkpoint records the config it came from (see engine.run_record).
RUN_RECORD_KEY = "grape_run"
#: The key under which a checkpoint records the SHA-256 of its tensors (see tensor_digest).
CHECKSUM_KEY = "grape_sha256"
#: Detectron2's periodic checkpoint names, model_0000059.pth; model_final.pth is the newest.
_PERIODIC_NAME = re.compile(r"model_(\d+)\.pth")
FINAL_CHECKPOINT = "model_final.pth"


def ensure_weights_available(weights: str) -> None:
    """Check a local ``MODEL.WEIGHTS`` file, or download a URL / ``detectron2://`` one now into
    Detectron2's cache (where the checkpointer then finds it), so that a missing file or an
    unreachable model zoo is one line before the run, not a traceback inside it."""
    if not weights:
        return
    if "://" not in weights:
        if not os.path.isfile(weights):
            raise GrapeInputError(f"{weights}: checkpoint (MODEL.WEIGHTS) not found")
        return
    try:
        PathManager.get_local_path(weights)
    except Exception as e:  # URLError, HTTPError, socket and OS errors alike
        reason = getattr(e, "reason", None) or e
        raise GrapeInputError(
            f"{weights}: cannot download the weights ({reason}); {OFFLINE_HINT}"
        ) from None


class UnreadableCheckpointError(GrapeInputError):
    """A checkpoint file that torch cannot load (truncated, empty, random bytes, missing),
    or whose tensors no longer match the checksum written with them."""


def tensor_digest(obj: Any) -> str:
    """SHA-256 of every tensor in a checkpoint's content (dicts by sorted key, lists in
    order; each tensor's place, dtype, shape and bytes), the checksum key itself left out.

    Computed from the loaded tensors, not the file's bytes, so it is the same after any
    number of save / load round trips, and a byte flipped inside the tensor data (which
    torch loads without a word) is caught on load.
    """
    digest = hashlib.sha256()
    stack: list[tuple[str, Any]] = [("", obj)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, torch.Tensor):
            t = node.detach().to("cpu").contiguous()
            digest.update(f"{where}|{t.dtype}|{tuple(t.shape)}|".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(node, dict):
            keys = sorted((k for k in node if k != CHECKSUM_KEY), key=str, reverse=True)
            stack.extend((f"{where}/{k}", node[k]) for k in keys)
        elif isinstance(node, (list, tuple)):
            stack.extend((f"{where}/{i}", v) for i, v in reversed(list(enumerate(node))))
    return digest.hexdigest()


def check_digest(path: str, checkpoint: Any) -> None:
    """Refuse, as an unreadable checkpoint, one whose recorded checksum its tensors do not
    match (a checkpoint without one, written by Detectron2 or before checksums, passes)."""
    if not isinstance(checkpoint, dict) or CHECKSUM_KEY not in checkpoint:
        return
    if checkpoint[CHECKSUM_KEY] != tensor_digest(checkpoint):
        raise UnreadableCheckpointError(
            f"{path}: checksum mismatch, its weights changed after it was written (a damaged "
            "disk or copy); not loaded"
        )


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load`` a checkpoint as fvcore does (on the CPU), any failure as one line.

    torch reports a truncated zip, an empty file and random bytes with different exception
    types (RuntimeError, EOFError, UnpicklingError), so all of them are caught here.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UnreadableCheckpointError(f"{path}: checkpoint not found")
    if os.path.getsize(path) == 0:
        raise UnreadableCheckpointError(f"{path}: not a loadable checkpoint (empty file)")
    try:
        checkpoint = torch.load(path, map_location=torch.device("cpu"))
    except Exception as e:
        reason = (str(e).strip().splitlines() or ["the file ends too early"])[0]
        reason = reason.split(". ")[0][:160]  # torch appends long advice after the cause
        raise UnreadableCheckpointError(
            f"{path}: not a loadable checkpoint ({type(e).__name__}: {reason})"
        ) from None
    check_digest(path, checkpoint)
    return checkpoint


def _read_training_checkpoint(path: str) -> dict[str, Any]:
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise UnreadableCheckpointError(f"{path}: not a training checkpoint (no \"model\" entry)")
    return checkpoint


def resume_candidates(save_dir: str) -> list[str]:
    """The checkpoints of ``save_dir``, newest first: model_final.pth, then model_NNNNNNN.pth
    by iteration (not by mtime, which a copy or a restore changes)."""
    periodic = []
    for path in glob.glob(os.path.join(glob.escape(save_dir), "model_*.pth")):
        match = _PERIODIC_NAME.fullmatch(os.path.basename(path))
        if match:
            periodic.append((int(match.group(1)), path))
    final = os.path.join(save_dir, FINAL_CHECKPOINT)
    newest_first = [p for _, p in sorted(periodic, reverse=True)]
    return ([final] if os.path.isfile(final) else []) + newest_first


def check_run_record(path: str, checkpoint: dict, record: dict | None) -> None:
    """Refuse, in one line naming both, to resume a checkpoint whose run had another model or
    data than ``record`` (engine.run_record of the config at hand).

    A checkpoint without a record (written before records existed, or not by a training) is
    accepted with a log line: there is nothing to compare it with.
    """
    if record is None:
        return
    saved = checkpoint.get(RUN_RECORD_KEY)
    if not isinstance(saved, dict):
        logger.info("%s records no config; resuming without checking that it is the same run",
                    path)
        return
    differ = [key for key in dict.fromkeys([*saved, *record]) if saved.get(key) != record.get(key)]
    if differ:
        theirs = ", ".join(f"{k}={saved.get(k)!r}" for k in differ)
        ours = ", ".join(f"{k}={record.get(k)!r}" for k in differ)
        raise GrapeInputError(
            f"{path}: --resume refused, this checkpoint's run had {theirs} but the config has "
            f"{ours} (train without --resume to start a new run, or use another OUTPUT_DIR)"
        )


def find_resume_checkpoint(
    save_dir: str, record: dict | None = None, retag: bool = False
) -> tuple[str, dict[str, Any]] | None:
    """The checkpoint ``--resume`` continues from and its loaded content; None without a
    ``last_checkpoint`` (Detectron2 then starts afresh).

    The one ``last_checkpoint`` names, if it loads; otherwise, with one warning line naming it,
    the newest checkpoint of ``save_dir`` that loads, which ``last_checkpoint`` is then made to
    name when ``retag`` (so other processes and later runs agree without warning again). None
    loading is one GrapeInputError line, as is a run record that differs from ``record``.
    """
    tag = os.path.join(save_dir, LAST_CHECKPOINT)
    if not os.path.isfile(tag):
        return None
    with open(tag, encoding="utf-8", errors="replace") as f:
        named = f.read().strip()
    named_path = os.path.join(save_dir, named)
    try:
        if not named:
            raise UnreadableCheckpointError(f"{tag}: names no checkpoint")
        found = _newer_final(save_dir, named_path) or (
            named_path, _read_training_checkpoint(named_path))
    except UnreadableCheckpointError as error:
        found = None
        for candidate in resume_candidates(save_dir):
            if candidate == named_path:
                continue
            try:
                found = candidate, _read_training_checkpoint(candidate)
                break
            except UnreadableCheckpointError:
                continue
        if found is None:
            raise GrapeInputError(
                f"{error}; no other checkpoint in {save_dir} loads, so there is nothing to "
                "resume (train without --resume to start over)"
            ) from None
        logger.warning("%s; resuming from %s, the newest checkpoint that loads", error, found[0])
    check_run_record(found[0], found[1], record)
    if retag and found[0] != named_path:
        write_last_checkpoint(save_dir, os.path.basename(found[0]))
    return found


def _newer_final(save_dir: str, named_path: str) -> tuple[str, dict[str, Any]] | None:
    """``model_final.pth`` and its content when it was written after the checkpoint
    ``last_checkpoint`` names and loads: the run was killed between writing it and tagging
    it, and it is the newest state of this run. None otherwise."""
    final = os.path.join(save_dir, FINAL_CHECKPOINT)
    if os.path.abspath(final) == os.path.abspath(named_path) or not os.path.isfile(final) \
            or not os.path.isfile(named_path):
        return None
    if os.stat(final).st_mtime_ns <= os.stat(named_path).st_mtime_ns:
        return None
    try:
        checkpoint = _read_training_checkpoint(final)
    except UnreadableCheckpointError:
        return None
    logger.warning("%s names %s, but %s was written after it (a run stopped between saving it "
                   "and naming it); resuming from %s", os.path.join(save_dir, LAST_CHECKPOINT),
                   os.path.basename(named_path), FINAL_CHECKPOINT, final)
    return final, checkpoint


def write_last_checkpoint(save_dir: str, basename: str) -> None:
    """Name ``basename`` in ``last_checkpoint``, atomically: a reader sees the old or the new
    name, never an empty or half-written file."""
    with atomic_open(os.path.join(save_dir, LAST_CHECKPOINT), "w") as f:
        f.write(basename)


class GrapeCheckpointer(RGBDCheckpointerMixin, DetectionCheckpointer):
    """DetectionCheckpointer that cannot leave a broken or foreign checkpoint to resume from.

    - ``save`` writes each checkpoint (``model_final.pth`` included) to a temporary file in
      the same folder, fsyncs it and renames it into place, then tags it in
      ``last_checkpoint`` the same way; a crash mid-write leaves the previous checkpoint and
      tag as they were. Each checkpoint also records ``run_record``, the config it came from.
    - ``resume_or_load(resume=True)`` continues from find_resume_checkpoint's choice (falls
      back past an unreadable newest one, refuses another run's) and refuses weights whose
      tensors do not match the model: loading them partially would resume a different model.
    - Any unreadable file (MODEL.WEIGHTS too) is one GrapeInputError line, not a traceback.
    """

    def __init__(self, model, save_dir: str = "", *, run_record: dict | None = None,
                 save_to_disk: bool | None = None, **checkpointables) -> None:
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.run_record = run_record
        self._preloaded: tuple[str, dict] | None = None
        self._resuming: str | None = None

    def save(self, name: str, **kwargs: Any) -> None:
        """fvcore's Checkpointer.save, through a temporary file and a rename."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        if self.run_record is not None:
            data[RUN_RECORD_KEY] = self.run_record
        data[CHECKSUM_KEY] = tensor_digest(data)  # verified by every load (read_checkpoint)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        with atomic_open(save_file, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())  # the rename must not outrun the data to the disk
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        write_last_checkpoint(self.save_dir, last_filename_basename)

    def forget_last_checkpoint(self) -> None:
        """Remove ``last_checkpoint`` (main process): a new run starts, so a later ``--resume``
        must not continue the previous run of this folder before this one saved anything."""
        tag = os.path.join(self.save_dir, LAST_CHECKPOINT)
        if self.save_to_disk and os.path.isfile(tag):
            os.remove(tag)
            logger.info("%s of the previous run removed: this is a new run", tag)

    def resume_or_load(self, path: str, *, resume: bool = True) -> dict[str, Any]:
        if not (resume and self.has_checkpoint()):
            return self.load(path, checkpointables=[])
        found = find_resume_checkpoint(self.save_dir, self.run_record, retag=self.save_to_disk)
        if found is None:  # last_checkpoint vanished since has_checkpoint()
            return self.load(path, checkpointables=[])
        self._preloaded = (os.path.abspath(found[0]), found[1])
        self._resuming = found[0]
        try:
            return self.load(found[0])
        finally:
            self._preloaded = self._resuming = None

    def _torch_load(self, f: str) -> dict[str, Any]:
        if self._preloaded is not None and os.path.abspath(f) == self._preloaded[0]:
            return self._preloaded[1]  # read (and checked) once by find_resume_checkpoint
        return read_checkpoint(f)

    def _load_model(self, checkpoint: Any):
        incompatible = super()._load_model(checkpoint)
        if self._resuming is not None:
            problems = [f"{k} is {tuple(theirs)} there, {tuple(ours)} here"
                        for k, theirs, ours in incompatible.incorrect_shapes]
            problems += [f"{k} missing there" for k in incompatible.missing_keys]
            problems += [f"{k} unknown here" for k in incompatible.unexpected_keys]
            if problems:
                raise GrapeInputError(
                    f"{self._resuming}: --resume refused, this checkpoint's model differs from "
                    f"the config's ({len(problems)} tensors, e.g. {problems[0]})"
                )
        return incompatible


def checkpoint_loads(path: str | os.PathLike) -> bool:
    """True when ``path`` is a training checkpoint that torch loads."""
    try:
        _read_training_checkpoint(os.fspath(path))
    except UnreadableCheckpointError:
        return False
    return True


def verify_final_checkpoint(output_dir: str) -> str:
    """The path of ``OUTPUT_DIR/model_final.pth`` once checked to load, so a run never reports
    success without it (e.g. one resumed at or past ``SOLVER.MAX_ITER`` writes none)."""
    path = os.path.join(output_dir, FINAL_CHECKPOINT)
    if not os.path.isfile(path):
        raise GrapeInputError(
            f"{path}: training ended without writing it (was it resumed at or past "
            "SOLVER.MAX_ITER from a model_*.pth?)"
        )
    _read_training_checkpoint(path)
    return path


#: Locks this process holds, by real path of the folder: the open file keeps the flock.
_HELD_LOCKS: dict[str, IO[str]] = {}


def lock_output_dir(output_dir: str | os.PathLike) -> IO[str]:
    """Hold an exclusive ``flock`` on ``OUTPUT_DIR/.lock`` (with this pid in it) until this
    process exits, or refuse in one line naming the folder and the holder's pid.

    Two runs writing one folder mix config.yaml, metrics.json and checkpoints of both. Taken
    in the launching process (before ``launch``), so the worker processes of a multi-process
    run are covered; the kernel releases it when the process dies, however it dies, so a
    killed run never leaves a stale lock. ``--eval-only`` takes it too: it rewrites
    config.yaml, the log and ``inference/`` in the same folder.

    Temporary files a killed run left behind (``.model_*.pth.*.tmp``) are removed here, once
    nobody else can be writing them.
    """
    output_dir = os.fspath(output_dir)
    key = os.path.realpath(output_dir)
    if key in _HELD_LOCKS:
        return _HELD_LOCKS[key]
    try:
        os.makedirs(output_dir, exist_ok=True)
        lock_file = open(os.path.join(output_dir, LOCK_FILE), "a+", encoding="utf-8")
    except OSError as e:
        raise GrapeInputError(
            f"{output_dir}: cannot write to this OUTPUT_DIR ({e.strerror or e})"
        ) from None
    try:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.seek(0)
        holder = lock_file.read().strip() or "unknown"
        lock_file.close()
        raise GrapeInputError(
            f"{output_dir}: another run (pid {holder}) is writing this OUTPUT_DIR; wait for it "
            "to end or choose another OUTPUT_DIR"
        ) from None
    except OSError as e:  # a file system without flock (some network mounts): run unguarded
        logger.warning("%s: cannot lock this OUTPUT_DIR (%s); nothing stops a second run "
                       "from writing it at the same time", output_dir, e.strerror or e)
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(f"{os.getpid()}\n")
    lock_file.flush()
    _HELD_LOCKS[key] = lock_file
    for stale in glob.glob(os.path.join(glob.escape(output_dir), ".*.tmp")):
        if re.fullmatch(r"\.(model_\w+\.pth|last_checkpoint)\..+\.tmp", os.path.basename(stale)):
            os.remove(stale)
            logger.info("removed %s, left by a run killed while saving", stale)
    return lock_file


def release_output_dir(output_dir: str | os.PathLike) -> None:
    """Give up this process's lock on ``output_dir`` (for in-process drivers and tests)."""
    lock_file = _HELD_LOCKS.pop(os.path.realpath(os.fspath(output_dir)), None)
    if lock_file is not None:
        lock_file.close()  # closing the last descriptor releases the flock
