"""Atomic writes: outputs appear whole or not at all, and never overwrite by accident."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import GrapeInputError


def check_output_path(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an existing output unless ``overwrite``; create its parent folder."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise GrapeInputError(f"{path}: output already exists (pass --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", overwrite: bool = True):
    """Open a temporary file beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = check_output_path(path, overwrite)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 would hide outputs from others
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextmanager
def replacing_folder(output_dir: str | os.PathLike):
    """A fresh temporary folder beside ``output_dir`` that replaces it whole on success: a
    rerun leaves nothing stale from the last run, and a crash leaves the old folder as it was."""
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}.tmp-"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it 0700
        old = None
        if output_dir.exists():
            old = output_dir.with_name(f".{output_dir.name}.old-{os.getpid()}")
            os.replace(output_dir, old)
        os.replace(tmp, output_dir)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_json_atomic(path: str | os.PathLike, obj: Any, overwrite: bool = True, indent=None):
    """Write ``obj`` as JSON through a temporary file and a rename."""
    with atomic_open(path, "w", overwrite=overwrite) as f:
        json.dump(obj, f, indent=indent)


def read_json(path: str | os.PathLike) -> Any:
    """Load a JSON file, turning a missing or malformed file into a one-line user error."""
    path = Path(path)
    if not path.is_file():
        raise GrapeInputError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise GrapeInputError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError:
        raise GrapeInputError(f"{path}: not a UTF-8 text file") from None
