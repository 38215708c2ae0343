"""Atomic writes: outputs appear whole or not at all, and never overwrite by accident.

Every output of the project goes through this module, so that a bad output location (a
read-only folder, a full disk, a parent that is a file, an output that is a folder) is one
``GrapeInputError`` line naming the path, and a failed run leaves nothing behind: no half
file, no temporary, and for a set of files (:func:`atomic_outputs`) none of the set.
Reading goes through :func:`read_json`, which refuses what would crash later (nesting that
overflows the stack, integers no array can hold, NaN / Infinity) with one line.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any

from .errors import GrapeInputError

logger = logging.getLogger(__name__)

#: JSON nested deeper than this is refused: COCO / VIA / labelme need fewer than 10 levels,
#: and deep nesting overflows Python's stack in json, copy.deepcopy and the writers.
MAX_JSON_DEPTH = 100
#: Integers outside +-2**63 fit no int64 (numpy, pycocotools, torch): refused when read.
MAX_JSON_INT = 2 ** 63
#: errno values that mean "the output cannot be written there", whatever raised them.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES,
                errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.EBUSY,
                errno.EXDEV, errno.ETXTBSY, errno.ELOOP}


def _write_error(path: Path, e: OSError) -> GrapeInputError:
    reason = e.strerror or type(e).__name__
    if e.errno == errno.ENAMETOOLONG:
        reason = "file name too long for the file system"
    elif e.errno in (errno.EPERM, errno.EBUSY) and os.path.lexists(path):
        reason += "; the existing output cannot be replaced"
    return GrapeInputError(f"{_short(path)}: cannot write the output ({reason})")


def _short(path: str | os.PathLike) -> str:
    """``path`` for a message: a name of thousands of characters is cut in the middle."""
    text = os.fspath(path)
    return text if len(text) <= 200 else f"{text[:120]}...{text[-60:]}"


def path_exists(path: str | os.PathLike) -> bool:
    """``lexists`` that turns a path no file system can hold (a name too long, a loop of
    links) into one line, as Path.exists raises on those."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        return False  # make_parent names the file standing in the way
    except OSError as e:
        raise _write_error(path, e) from None
    return True


def _is_dir(path: Path) -> bool:
    return path_exists(path) and path.is_dir()


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """``a`` and ``b`` name one file: the same real path, or (both existing) the same inode,
    so a hard link or a symlink to an input counts as the input."""
    try:
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except OSError:
        return False


def check_not_input(output: str | os.PathLike, inputs: Sequence[str | os.PathLike] = (),
                    folder: bool = False) -> None:
    """Refuse an output that is one of the run's ``inputs`` whatever the flags (``--overwrite``
    replaces earlier outputs, never what the run reads); with ``folder`` (an output folder
    replaced whole) also one that holds an input."""
    out_real = os.path.realpath(output)
    for given in inputs:
        if given is None:
            continue
        if same_file(output, given):
            raise GrapeInputError(f"{_short(output)}: the output is also an input of this run "
                                  "(refusing to overwrite an input); choose another output")
        if folder and os.path.realpath(given).startswith(out_real.rstrip(os.sep) + os.sep):
            raise GrapeInputError(f"{_short(output)}: the output folder holds the input "
                                  f"{_short(given)}, which replacing the folder would delete; "
                                  "choose another output folder")


def check_output_path(path: str | os.PathLike, overwrite: bool,
                      inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Refuse an existing output unless ``overwrite``, an output that is one of ``inputs``
    (whatever ``overwrite`` says), and a location no file can be written to (a folder in its
    place, a file in place of a parent folder, a name too long); create the parent folder."""
    path = Path(path)
    refuse_existing(path, overwrite, inputs)
    make_parent(path)
    return path


def refuse_existing(path: str | os.PathLike, overwrite: bool,
                    inputs: Sequence[str | os.PathLike] = ()) -> None:
    """The checks of :func:`check_output_path` a tool makes before any work, creating
    nothing: an output that is an input, a folder in its place, an existing output without
    ``overwrite``, a name too long. Checked again when the output is written."""
    path = Path(path)
    check_not_input(path, inputs)
    if _is_dir(path):
        raise GrapeInputError(f"{_short(path)}: output is an existing folder; give a file name")
    if path_exists(path) and not overwrite:
        raise GrapeInputError(f"{_short(path)}: output already exists (pass --overwrite to "
                              "replace it)")
    if len(path.name.encode()) > 255:
        raise _write_error(path, OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG)))


def make_parent(path: Path) -> None:
    """``mkdir -p`` of ``path``'s folder, with one line when a file stands in the way or the
    folder cannot be created."""
    path = Path(path)
    for parent in [path.parent, *path.parent.parents]:
        if path_exists(parent) and not parent.is_dir():
            raise GrapeInputError(f"{_short(path)}: cannot write the output ({parent} is a "
                                  "file, not a folder)")
        if path_exists(parent):
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _write_error(path, e) from None


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", overwrite: bool = True,
                inputs: Sequence[str | os.PathLike] = ()) -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it over ``path`` only if the block
    succeeds. A full disk or a read-only folder is one line naming ``path``."""
    path = check_output_path(path, overwrite, inputs)
    with atomic_outputs([path], overwrite=overwrite, lock=False, inputs=inputs) as out, \
            out.open(path, mode) as f:
        yield f


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


class OutputSet:
    """The temporaries of :func:`atomic_outputs`: write each output through :meth:`open`
    or :meth:`write_json`; they are renamed into place together when the block ends."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self.temporaries: dict[Path, Path] = {}

    def temporary(self, path: str | os.PathLike, suffix: str = ".tmp") -> Path:
        """The temporary file standing for ``path`` (created empty on first use); a
        ``suffix`` such as ``.tmp.mp4`` for writers that choose the format by the name."""
        path = Path(path)
        if path not in self.paths:
            raise ValueError(f"{path} is not one of this set's outputs")
        if path not in self.temporaries:
            try:
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:120]}.",
                                           suffix=suffix)
            except OSError as e:
                raise _write_error(path, e) from None
            os.close(fd)
            self.temporaries[path] = Path(tmp)
        return self.temporaries[path]

    @contextmanager
    def open(self, path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
        """Open the temporary of ``path``; write errors become one line naming ``path``."""
        tmp = self.temporary(path)
        try:
            with open(tmp, mode) as f:
                yield f
        except OSError as e:
            if e.errno in WRITE_ERRNOS:
                raise _write_error(Path(path), e) from None
            raise

    def write_json(self, path: str | os.PathLike, obj: Any, indent: int | None = None,
                   nan_as_null: bool = False) -> None:
        """Standard JSON only: a NaN / Infinity is refused in one line (or, with
        ``nan_as_null``, written as ``null``: metrics use NaN for "not measured")."""
        if nan_as_null:
            obj = finite_or_null(obj)
        with self.open(path, "w") as f:
            try:
                json.dump(obj, f, indent=indent, allow_nan=False)
            except ValueError as e:
                if "JSON compliant" not in str(e):
                    raise
                raise GrapeInputError(f"{path}: refusing to write NaN / Infinity (not "
                                      "standard JSON)") from None


def _lock_folders(paths: Sequence[Path], stack: ExitStack) -> None:
    """Exclusive ``flock`` on every output folder (sorted, so two sets never deadlock), held
    until the stack closes: a second writer of the same outputs waits, then sees them."""
    for folder in sorted({os.path.abspath(p.parent) for p in paths}):
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            raise _write_error(Path(folder), e) from None
        stack.callback(os.close, fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes
        except OSError as e:  # a file system without locks (some network mounts)
            logger.warning("%s: cannot lock the output folder (%s); a concurrent writer "
                           "of the same outputs would not be detected", folder, e.strerror)


@contextmanager
def atomic_outputs(paths: Sequence[str | os.PathLike], overwrite: bool = False,
                   lock: bool = True, inputs: Sequence[str | os.PathLike] = ()
                   ) -> Iterator[OutputSet]:
    """Write several files that belong together (train / val / test of one split, a COCO
    JSON and its VIA project) all or none.

    Every output is written to a temporary beside it; when the block succeeds they are
    renamed into place one after another (a failure halfway puts back what was there), when
    it fails the temporaries are removed. With ``lock`` the output folders are locked from
    the existence check to the last rename, so of two concurrent writers of the same
    outputs without ``overwrite`` one succeeds and the other sees "output already exists".
    An output that is one of ``inputs`` is refused whatever ``overwrite`` says.
    """
    paths = [Path(p) for p in paths]
    out = OutputSet(paths)
    with ExitStack() as stack:
        for p in paths:
            check_not_input(p, inputs)
            make_parent(p)
        if lock:
            _lock_folders(paths, stack)
        for p in paths:
            check_output_path(p, overwrite)
        try:
            yield out
            _rename_all(out)
        finally:
            for tmp in out.temporaries.values():
                if os.path.lexists(tmp):
                    os.unlink(tmp)


def _rename_all(out: OutputSet) -> None:
    """Rename every temporary over its output; undo the done ones if one rename fails."""
    mode = 0o666 & ~current_umask()  # mkstemp's 0600 would hide outputs from others
    done: list[tuple[Path, Path | None]] = []  # outputs renamed into place, with backups
    backups: list[Path] = []
    current = Path(".")
    try:
        for current, tmp in out.temporaries.items():
            os.chmod(tmp, mode)
            backup = None
            if current.exists():
                backup = current.with_name(f".{current.name[:120]}.old-{os.getpid()}")
                try:
                    os.link(current, backup)
                except OSError:  # a file system without hard links (or an immutable file)
                    shutil.copy2(current, backup)
                backups.append(backup)
            os.replace(tmp, current)  # an immutable output or a bind mount fails here
            done.append((current, backup))
    except OSError as e:
        for path, backup in reversed(done):  # only what was actually replaced
            try:
                if backup is not None:
                    os.replace(backup, path)
                elif path.exists():
                    os.unlink(path)
            except OSError:
                logger.warning("%s: could not put the previous content back", path)
        raise _write_error(current, e) from None
    finally:  # a backup left after a rollback is a second link to the restored file
        for backup in backups:
            if os.path.lexists(backup):
                os.unlink(backup)


@contextmanager
def replacing_folder(output_dir: str | os.PathLike, inputs: Sequence[str | os.PathLike] = ()
                     ) -> Iterator[Path]:
    """A fresh temporary folder beside ``output_dir`` that replaces it whole on success: a
    rerun leaves nothing stale from the last run, and a crash leaves the old folder as it was.
    A location no folder can be written to, a folder that cannot be replaced (a mount point,
    an immutable folder) and a folder that is or holds one of ``inputs`` are one line naming
    ``output_dir``."""
    output_dir = Path(output_dir)
    check_not_input(output_dir, inputs, folder=True)
    if path_exists(output_dir) and not output_dir.is_dir():
        raise GrapeInputError(f"{_short(output_dir)}: output folder exists and is a file")
    make_parent(output_dir)
    try:
        tmp = Path(tempfile.mkdtemp(dir=output_dir.parent,
                                    prefix=f".{output_dir.name[:120]}.tmp-"))
    except OSError as e:
        raise _write_error(output_dir, e) from None
    try:
        try:
            yield tmp
        except OSError as e:
            if e.errno in WRITE_ERRNOS:
                raise _write_error(output_dir, e) from None
            raise
        except GrapeInputError as e:  # name the output the user gave, not the temporary
            if str(tmp) in str(e):
                raise GrapeInputError(str(e).replace(str(tmp), str(output_dir))) from None
            raise
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it 0700
        old = None
        try:
            if output_dir.exists():
                old = output_dir.with_name(f".{output_dir.name[:120]}.old-{os.getpid()}")
                os.replace(output_dir, old)
            os.replace(tmp, output_dir)
        except OSError as e:
            if old is not None and not output_dir.exists():
                os.replace(old, output_dir)  # put the previous folder back
            raise _write_error(output_dir, e) from None
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def finite_or_null(obj: Any) -> Any:
    """``obj`` with every NaN / Infinity float replaced by None (JSON ``null``)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    return obj


def write_json_atomic(path: str | os.PathLike, obj: Any, overwrite: bool = True,
                      indent: int | None = None, nan_as_null: bool = False,
                      inputs: Sequence[str | os.PathLike] = ()) -> None:
    """Write ``obj`` as standard JSON through a temporary file and a rename (NaN /
    Infinity: one-line error, or ``null`` with ``nan_as_null``)."""
    path = Path(path)
    with atomic_outputs([path], overwrite=overwrite, lock=False, inputs=inputs) as out:
        out.write_json(path, obj, indent=indent, nan_as_null=nan_as_null)


class _JsonRefused(Exception):
    """Raised inside the JSON parser's hooks; turned into a GrapeInputError by read_json."""


def _refuse_constant(name: str) -> Any:
    raise _JsonRefused(f"{name} is not standard JSON (numbers must be finite)")


def check_json_tree(data: Any) -> str | None:
    """Why a parsed JSON value is unsafe to process (too deep, an integer no int64 holds, a
    float that overflowed to infinity), or None. Iterative: deep input cannot overflow it."""
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return f"nested deeper than {MAX_JSON_DEPTH} levels"
        values = node.values() if isinstance(node, dict) else node
        for v in values:
            if isinstance(v, (dict, list)):
                stack.append((v, depth + 1))
            elif isinstance(v, int) and not isinstance(v, bool):
                if not -MAX_JSON_INT <= v < MAX_JSON_INT:
                    text = str(v) if v.bit_length() < 200 else f"{str(v)[:20]}..."
                    return f"integer {text} is out of range (beyond 64 bits)"
            elif isinstance(v, float) and not math.isfinite(v):
                return "a number is out of range (overflows to infinity)"
    return None


def read_json(path: str | os.PathLike, expect: type | None = None) -> Any:
    """Load a JSON file, turning a missing, malformed or hostile file into a one-line user
    error: nesting deeper than :data:`MAX_JSON_DEPTH`, integers beyond 64 bits, NaN /
    Infinity, and (with ``expect``) a top level of another type than ``expect``."""
    path = Path(path)
    if not os.path.isfile(path):  # Path.is_file raises on a name too long
        raise GrapeInputError(f"{_short(path)}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f, parse_constant=_refuse_constant)
    except json.JSONDecodeError as e:
        raise GrapeInputError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError:
        raise GrapeInputError(f"{path}: not a UTF-8 text file") from None
    except RecursionError:
        raise GrapeInputError(f"{path}: JSON nested deeper than {MAX_JSON_DEPTH} "
                              "levels") from None
    except _JsonRefused as e:
        raise GrapeInputError(f"{path}: {e}") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise GrapeInputError(f"{path}: a number is out of range ({str(e)[:80]})") from None
    if isinstance(data, (dict, list)):
        problem = check_json_tree(data)
        if problem:
            raise GrapeInputError(f"{path}: JSON {problem}")
    if expect is not None and not isinstance(data, expect):
        want = {dict: "an object ({...})", list: "a list ([...])"}.get(expect, expect.__name__)
        raise GrapeInputError(f"{path}: the top level must be {want}, not "
                              f"{_json_type(data)}")
    return data


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "true / false",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)
