"""Image checks shared by every converter: safe paths, header sizes, decompression-bomb guard.

Converters never trust an annotation file's idea of where an image is or how big it is:

* :func:`resolve_image_path` turns a file name written in an annotation file into a path and
  refuses names that leave the folders the user named on the command line
  (``../../etc/passwd``, ``/etc/passwd``, ``C:\\x.jpg``), so a hostile file cannot make us
  read (or later write next to) anything else. ``../images/x.jpg`` from a labelme JSON is
  fine while it stays inside an allowed root.
* :func:`read_image_size` reads width and height from the image header only (PIL opens
  lazily), with the EXIF orientation applied, because Detectron2's ``read_image`` applies
  it too and the sizes in the COCO JSON must be the ones Detectron2 will see.
* :func:`decode_image` fully decodes (``validate --deep``, edge detection, and the images
  ``predict`` / ``measure`` run on) with the same orientation handling as Detectron2;
  :func:`list_image_files` and :func:`expand_inputs` list the images of a folder or glob.
  These sit here, not beside ``predict``, because they depend on nothing but PIL and the
  project's errors, and every converter already reads images through them.
* ``read_image_size(..., decode=True)`` also decodes the pixels cheaply (a JPEG at 1/8
  scale), because a truncated file has a valid header: without this, a converter accepts it
  and training dies minutes later in a data-loader worker. Such a file raises
  :class:`UndecodableImageError`; converters leave it out as a counted warning
  (:func:`leave_out_undecodable`) or, with ``--strict-images``, refuse it.
* Photos in a pixel format Detectron2 misreads are refused (:func:`check_photo_mode`,
  :class:`UnsupportedImageModeError`), not converted: ``read_image`` converts a 16-bit
  grayscale PNG with ``convert("RGB")``, which clips every value above 255, so the model
  would train on an all-white image. Refusing costs one header read; scaling them to 8 bits
  would need our own reader in every place Detectron2 reads an image (mappers, predictor,
  visualize), so the user converts them once instead. Depth maps, which are 16-bit on
  purpose, are read with ``photo=False``.

Every failure is a :class:`~grape_instances.core.errors.GrapeInputError` whose message names the
file. Checking the pixel count ourselves matters: importing labelme sets
``PIL.Image.MAX_IMAGE_PIXELS = None`` process-wide, which silently disables PIL's own guard.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import GrapeInputError
from .warning_counter import WarningCounter

logger = logging.getLogger(__name__)

#: Default pixel limit (width * height): PIL's own default ``MAX_IMAGE_PIXELS``
#: (about 9459 x 9459), far above any grape photo, far below a decompression bomb.
DEFAULT_MAX_PIXELS = 89_478_485

#: EXIF tag of the orientation; values 5-8 swap width and height.
EXIF_ORIENTATION_TAG = 0x0112
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}

#: File extensions treated as images when a folder is listed.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

_WINDOWS_ABSOLUTE = re.compile(r"^(?:[A-Za-z]:|\\\\|//)")

#: Warning kind of the images converters leave out because their pixels cannot be decoded.
UNDECODABLE = "undecodable or truncated images (left out with their annotations)"
#: Scale of the cheap decode: libjpeg still reads every byte, so truncation is caught.
CHEAP_DECODE_SCALE = 8

#: PIL modes that Detectron2's ``read_image`` (``Image.convert("RGB")``) turns into the right
#: 8-bit colours. Every other mode is refused: ``I;16*`` (16-bit grayscale PNG / TIFF), ``I``
#: (32-bit) and ``F`` (float) are clipped at 255, so nearly white; ``LAB`` and ``HSV`` are
#: copied channel by channel as if they were RGB; ``La`` cannot be converted at all.
PHOTO_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "RGBa", "CMYK",
                         "YCbCr"})


class UndecodableImageError(GrapeInputError):
    """An image file that exists but cannot be decoded (empty, not an image, truncated,
    corrupt): converters may leave it out instead of stopping, unlike a missing file."""

    def __init__(self, path: str | os.PathLike, message: str) -> None:
        super().__init__(message)
        self.path = Path(path)


class UnsupportedImageModeError(GrapeInputError):
    """A photo whose pixel format (PIL mode) Detectron2 would read as wrong colours, e.g. a
    16-bit grayscale PNG read as all white: refused, never left out silently."""


def check_photo_mode(mode: str, path: str | os.PathLike) -> None:
    """Refuse, in one line naming the file, a photo whose PIL ``mode`` is not in
    :data:`PHOTO_MODES` (see the module docstring: clipped 16-bit, float, LAB...)."""
    if mode not in PHOTO_MODES:
        depth = {"I": "32-bit integer", "F": "32-bit float"}.get(
            mode, "16-bit" if mode.startswith("I;16") else f"{mode!r}")
        raise UnsupportedImageModeError(
            f"{path}: {depth} image (PIL mode {mode}) is not supported: Detectron2 would read "
            "it as wrong (clipped, nearly white) 8-bit colours; convert it to 8-bit RGB or "
            "grayscale first (e.g. ImageMagick: convert IN -depth 8 OUT.png)"
        )


class ImageSize(NamedTuple):
    """Size of an image as Detectron2 will see it (EXIF orientation applied)."""

    width: int
    height: int
    #: EXIF orientation tag found in the file (1 when absent).
    orientation: int = 1


def normalize_annotation_name(name: str) -> str:
    """Use ``/`` as the separator: annotation files written on Windows use ``\\``."""
    return name.replace("\\", "/")


def resolve_image_path(
    name: str,
    base_dir: str | os.PathLike,
    roots: Sequence[str | os.PathLike] | None = None,
    source: str | os.PathLike | None = None,
) -> Path:
    """Resolve an image name from an annotation file, refusing anything outside ``roots``.

    Args:
        name: the name as written in the annotation file (``filename``, ``imagePath``...).
        base_dir: folder the name is relative to (the images folder for VIA, the JSON's
            folder for labelme).
        roots: folders the name may resolve into; defaults to ``[base_dir]``. Give the
            dataset folder from the command line here to allow ``../images/x.jpg``.
        source: the annotation file, named in error messages.

    Returns:
        An absolute, normalised path (which need not exist: see :func:`read_image_size`).

    The check is lexical (``..`` is collapsed, symlinks are not followed) so that a user's
    own symlinked image folders keep working, while names inside a file cannot escape.
    """
    where = f"{source}: " if source is not None else ""
    if not isinstance(name, str) or not name.strip():
        raise GrapeInputError(f"{where}empty or non-text image name {name!r}")
    if "\x00" in name:
        raise GrapeInputError(f"{where}image name {name!r} contains a NUL character")
    if "://" in name or name.startswith("data:"):
        raise GrapeInputError(
            f"{where}image {name!r} is a URL; download it into the images folder first"
        )
    clean = normalize_annotation_name(name)
    if os.path.isabs(clean) or _WINDOWS_ABSOLUTE.match(name) or clean.startswith("~"):
        raise GrapeInputError(
            f"{where}image name {name!r} is an absolute path; refusing to read outside "
            "the folders given on the command line"
        )
    base = Path(os.path.abspath(base_dir))
    path = Path(os.path.normpath(base / clean))
    allowed = [Path(os.path.abspath(r)) for r in (roots if roots else [base_dir])]
    if not any(path == root or root in path.parents for root in allowed):
        shown = ", ".join(str(r) for r in allowed)
        raise GrapeInputError(
            f"{where}image name {name!r} resolves outside the allowed folder(s) {shown}; "
            "refusing to read it"
        )
    return path


def _check_readable_file(path: Path, source: str | os.PathLike | None) -> None:
    ref = f" (referenced by {source})" if source is not None else ""
    try:
        os.stat(path)
    except FileNotFoundError:
        raise GrapeInputError(f"{path}: image not found{ref}") from None
    except OSError as e:  # a name too long for the file system, a loop of links...
        shown = str(path) if len(str(path)) <= 200 else f"{str(path)[:120]}..."
        raise GrapeInputError(f"{shown}: image not found ({e.strerror}){ref}") from None
    if not path.is_file():
        raise GrapeInputError(f"{path}: not a regular file{ref}")
    if path.stat().st_size == 0:
        raise UndecodableImageError(path, f"{path}: image file is empty (0 bytes){ref}")


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except Exception:  # broken EXIF: Detectron2 ignores it too (see its _apply_exif_orientation)
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _check_pixels(path: Path, width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise GrapeInputError(
            f"{path}: image is {width} x {height} = {width * height} pixels, above the limit "
            f"of {max_pixels} (decompression-bomb guard; raise it with --max-pixels)"
        )


def decode_cheaply(img: Image.Image, name: str | os.PathLike) -> None:
    """Decode an opened image's pixels at low cost (JPEG at 1/8 scale via ``draft``).

    Truncated or corrupt data raises here, in the converter, rather than in a training
    worker. Call it after the pixel-limit check: it decodes. Raises UndecodableImageError.
    """
    width, height = img.size
    img.draft(img.mode, (max(1, width // CHEAP_DECODE_SCALE),
                         max(1, height // CHEAP_DECODE_SCALE)))  # no-op unless JPEG
    try:
        img.load()
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for bad data
        raise UndecodableImageError(
            name, f"{name}: image data is corrupt or truncated ({e})"
        ) from None


@contextmanager
def pil_errors_as_user_errors(path: str | os.PathLike, problem: str):
    """Turn what PIL raises for one image into one line: a decompression bomb is refused,
    unreadable data becomes an UndecodableImageError (``problem`` may use ``{name}``, the
    exception's type, and ``{error}``, its text)."""
    try:
        yield
    except Image.DecompressionBombError:
        raise GrapeInputError(
            f"{path}: image exceeds PIL's decompression-bomb limit; refusing to read it"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        detail = problem.format(name=type(e).__name__, error=e)
        raise UndecodableImageError(path, f"{path}: {detail}") from None


def read_image_size(
    path: str | os.PathLike,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    source: str | os.PathLike | None = None,
    decode: bool = False,
    photo: bool = True,
) -> ImageSize:
    """Width and height from the header, after EXIF orientation.

    With ``decode``, the pixels are also decoded cheaply (:func:`decode_cheaply`), in the
    same open, so a truncated file is caught. Raises GrapeInputError (naming the file) when
    it is missing or larger than ``max_pixels`` (None disables the limit), and its subclass
    UndecodableImageError when it is empty, not an image PIL can identify, or (``decode``)
    truncated or corrupt. A ``photo`` (the default; pass False for a depth map) in a pixel
    format Detectron2 misreads, such as 16-bit grayscale, raises UnsupportedImageModeError:
    it is refused, not scaled (see :func:`check_photo_mode`).
    """
    path = Path(path)
    _check_readable_file(path, source)
    with pil_errors_as_user_errors(path, "not a readable image ({name})"):
        with Image.open(path) as img:
            width, height = img.size
            orientation = _orientation(img)
            if photo:
                check_photo_mode(img.mode, path)
            _check_pixels(path, width, height, max_pixels)
            if decode:
                decode_cheaply(img, path)
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return ImageSize(width, height, orientation)


def leave_out_undecodable(
    error: UndecodableImageError, warnings: WarningCounter, strict: bool = False
) -> None:
    """Count an undecodable image as a warning (the caller then leaves it out), or re-raise
    it when ``strict`` (``--strict-images``): one bad photo should not cost a whole run."""
    if strict:
        raise error
    warnings.add(UNDECODABLE, str(error.path))
    logger.warning("%s; left out (pass --strict-images to refuse instead)", error)


def refuse_all_undecodable(undecodable: list[str], source: str | os.PathLike) -> None:
    """An empty output because every image listed failed to decode is no conversion: one
    line naming the first (exit 1), not an empty COCO file and exit 0."""
    if undecodable:
        more = f" (and {len(undecodable) - 1} more)" if len(undecodable) > 1 else ""
        raise GrapeInputError(f"{source}: no image could be converted, every one it lists is "
                              f"undecodable: {undecodable[0]}{more}")


def checked_image_size(
    path: str | os.PathLike,
    warnings: WarningCounter,
    strict: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    source: str | os.PathLike | None = None,
) -> ImageSize | None:
    """:func:`read_image_size` with the cheap decode, for converters: None (counted in
    ``warnings``) for an undecodable image unless ``strict``; other problems still raise."""
    try:
        return read_image_size(path, max_pixels=max_pixels, source=source, decode=True)
    except UndecodableImageError as e:
        leave_out_undecodable(e, warnings, strict)
        return None


def decode_image(
    path: str | os.PathLike,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    format: str = "RGB",
    source: str | os.PathLike | None = None,
) -> np.ndarray:
    """Decode an image exactly as Detectron2's ``read_image`` does (EXIF applied), safely.

    The header is checked first (existence, size, pixel limit, pixel format: a 16-bit image
    is refused, not scaled), so a bomb is refused before any pixel is decoded. Truncated or
    corrupt pixel data becomes a GrapeInputError.
    """
    from detectron2.data.detection_utils import read_image

    read_image_size(path, max_pixels=max_pixels, source=source)
    with pil_errors_as_user_errors(path, "image data is corrupt or truncated ({error})"):
        return read_image(str(path), format=format)


def list_image_files(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files (by extension, case-insensitive) in ``folder``, sorted by name.

    Raises GrapeInputError when ``folder`` is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise GrapeInputError(f"{folder}: images folder not found")
    pattern = "**/*" if recursive else "*"
    return sorted(
        p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files, folders (their images, sorted) and globs -> a sorted, de-duplicated file list
    (what visualize and measure take on the command line)."""
    files: list[Path] = []
    for item in inputs:
        if any(c in item for c in "*?["):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise GrapeInputError(f"{item}: no file matches this pattern")
            files += [Path(m) for m in matches if Path(m).suffix.lower() in IMAGE_EXTENSIONS]
        elif os.path.isdir(item):
            found = list_image_files(item)
            if not found:
                raise GrapeInputError(f"{item}: folder holds no image")
            files += found
        elif os.path.isfile(item):
            files.append(Path(item))
        else:
            raise GrapeInputError(f"{item}: no such file or folder")
    return list(dict.fromkeys(files))


def image_file_size(path: str | os.PathLike) -> int:
    """Size of a file in bytes (VIA keys images by ``filename + size``)."""
    return Path(path).stat().st_size
