"""GrapesNet importer: the four sub-datasets of a GrapesNet folder as COCO instances JSON.

GrapesNet ("Indian RGB & RGB-D vineyard image datasets", Kaggle / Mendeley Data) holds:

1. one bunch per image on a **black** cloth or in the vineyard (**natural** background);
2. several bunches per image, natural background;
3. RGB-D vineyard images (an RGB image and a depth map per view);
4. RGB-D single bunches on a **coral** background, with each bunch's weight in a table.

Expected layout under ROOT (the defaults of :class:`GrapesNetLayout`; every pattern can be
replaced with ``--layout layout.json`` or ``--pattern KEY=GLOB``)::

    ROOT/
      Dataset-1/ ...black.../*.jpg       one bunch, black background  (auto-annotated)
      Dataset-1/ ...natural.../*.jpg     one bunch, natural background
      Dataset-2/**/*.jpg                 several bunches, natural background
      Dataset-3/**/RGB/*.jpg + **/Depth/*.png     (or img_rgb.jpg + img_depth.png side by side)
      Dataset-4/**/RGB/*.jpg + **/Depth/*.png     + a weights table given with --weights

Patterns are shell globs matched case-insensitively against each file's path relative to
ROOT, with ``/`` separators; ``*`` also crosses folders. A file belongs to the first
sub-dataset whose pattern matches (``dataset?1[!0-9]*`` matches ``Dataset-1/...``,
``dataset_1 (single bunch)/...`` but not ``Dataset-10/...``); its background is ``black`` or
``natural`` when its folders match the ``black`` / ``natural`` patterns; it is a depth map
when its path matches a ``depth`` pattern (16-bit PNGs as written by RGB-D cameras). These
three are matched against the path *below* the sub-dataset folder, so a top folder named
``Dataset-3 RGB-D depth`` does not make every file a depth map.

**Pairing** RGB with depth: inside one sub-dataset, both paths are reduced to a key: the
folders below the sub-dataset folder and the file stem, lower-cased, with the tokens of
``rgb_tokens`` / ``depth_tokens`` removed where they stand alone or at either end after a
``_ - . space`` separator. So ``RGB/img_001.jpg`` pairs with ``Depth/img_001.png``,
``img_001_rgb.jpg`` with ``img_001_depth.png``, ``bunch7/color.jpg`` with ``bunch7/depth.png``.
Depth maps without an RGB partner and RGB-D images without depth are counted (warnings).

**Weights** (Dataset-4): a CSV (or XLSX when ``openpyxl`` is installed) with a header row;
the key column (``image``, ``file``, ``name``, ``id``, ``bunch`` or ``sample`` in its header,
or ``key_column``) names an image by file name, stem or pairing key, the weight column
(``weight`` or ``mass`` in its header, or ``weight_column``) holds grams, or kilograms when
its header says ``kg``. Every Dataset-4 image whose key, stem or folder matches gets it.

**Annotations**: Dataset-1 black-background images are annotated by
:mod:`grape_instances.data.edges`; VIA (1/2/3) and labelme JSON files under ``annotations``
(searched recursively) annotate the others, and win over the automatic masks (they are what
a person corrected). Images of annotation files are found by path, else by unique file name.
Images without any annotation are counted, listed in the log and left out. Images that do
not decode (checked by the VIA / labelme readers, or by the one full decode of edge
detection) are left out as a counted warning, or refused with ``strict_images``.

Output: ``OUT_DIR/grapesnet_<subset>.json`` (``dataset1`` ... ``dataset4``), file names
relative to ROOT (register with ROOT as image root), image extras ``subset``,
``background``, ``depth_file`` (relative to ROOT or null), ``weight_g`` (or null) and
``annotation`` (``edges``, ``via`` or ``labelme``).
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import io
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..core.errors import GrapeInputError
from ..core.fileio import atomic_outputs, read_json, refuse_existing
from ..core.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    UNDECODABLE,
    UndecodableImageError,
    decode_image,
    leave_out_undecodable,
    read_image_size,
)
from ..core.warning_counter import WarningCounter
from .coco import DEFAULT_CATEGORY, CocoBuilder, ImageRecord, Records, add_instances
from .edges import EdgeParams, detect_background, edge_record

logger = logging.getLogger(__name__)

SUBSETS = ("dataset1", "dataset2", "dataset3", "dataset4")
RGBD_SUBSETS = ("dataset3", "dataset4")
#: Background of each sub-dataset when its folders do not say (Dataset-1 decides per image).
SUBSET_BACKGROUND = {"dataset1": None, "dataset2": "natural", "dataset3": "natural",
                     "dataset4": "coral"}
AUTO_CHOICES = ("black", "single", "none")
_SEPARATORS = "_-. "

UNPAIRED_DEPTH = "depth maps without an RGB image (ignored)"
NO_DEPTH = "RGB-D images without a depth map"
DEPTH_SIZE = "depth maps whose size differs from their RGB image"
OUTSIDE = "files outside the four sub-datasets (ignored)"
UNMATCHED_ANN = "annotated images not found in the GrapesNet tree (ignored)"
NOT_ANNOTATION = "JSON files under --annotations that are neither VIA nor labelme (ignored)"
NO_BUNCH = "images where edge detection found no bunch (left out)"
UNMATCHED_WEIGHT = "weight table rows matching no Dataset-4 image"
NO_WEIGHT = "Dataset-4 images without a weight"
EMPTY_WEIGHT = "weight table rows with an empty weight (skipped)"
EMPTY_INSTANCE = "annotated instances without any pixel (skipped)"


@dataclass
class GrapesNetLayout:
    """Where things are under ROOT: lists of case-insensitive globs (see the module doc)."""

    dataset1: list[str] = field(default_factory=lambda: ["dataset?1[!0-9]*", "dataset1[!0-9]*"])
    dataset2: list[str] = field(default_factory=lambda: ["dataset?2[!0-9]*", "dataset2[!0-9]*"])
    dataset3: list[str] = field(default_factory=lambda: ["dataset?3[!0-9]*", "dataset3[!0-9]*"])
    dataset4: list[str] = field(default_factory=lambda: ["dataset?4[!0-9]*", "dataset4[!0-9]*"])
    #: Matched against the folders below the sub-dataset folder (Dataset-1 background).
    black: list[str] = field(default_factory=lambda: ["*black*"])
    natural: list[str] = field(default_factory=lambda: ["*natural*"])
    #: Matched against the path below the sub-dataset folder: depth maps of Dataset-3 / 4.
    depth: list[str] = field(default_factory=lambda: ["*depth*"])
    #: Name tokens removed before pairing RGB with depth.
    rgb_tokens: list[str] = field(default_factory=lambda: ["rgb", "color", "colour"])
    depth_tokens: list[str] = field(default_factory=lambda: ["depth", "d"])
    image_extensions: list[str] = field(default_factory=lambda: list(IMAGE_EXTENSIONS))

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> GrapesNetLayout:
        """Defaults replaced by the keys of a JSON object (each a list of strings)."""
        data = read_json(path)
        if not isinstance(data, dict):
            raise GrapeInputError(f"{path}: layout must be a JSON object of pattern lists")
        return cls().updated(data, str(path))

    def updated(self, changes: dict[str, Any], where: str) -> GrapesNetLayout:
        names = {f.name for f in dataclasses.fields(self)}
        clean = {}
        for key, value in changes.items():
            if key not in names:
                raise GrapeInputError(
                    f"{where}: unknown layout key {key!r} (known: {', '.join(sorted(names))})"
                )
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise GrapeInputError(f"{where}: layout key {key!r} must be a list of strings")
            clean[key] = [v.lower() for v in value]
        return dataclasses.replace(self, **clean)

    def with_patterns(self, items: Sequence[str]) -> GrapesNetLayout:
        """Apply ``KEY=GLOB`` overrides (repeating a key gives it several patterns)."""
        changes: dict[str, list[str]] = defaultdict(list)
        for item in items:
            key, sep, glob = item.partition("=")
            if not sep or not key.strip() or not glob.strip():
                raise GrapeInputError(f"--pattern {item!r}: expected KEY=GLOB")
            changes[key.strip()].append(glob.strip())
        return self.updated(dict(changes), "--pattern")


@dataclass
class GrapesNetImage:
    """One RGB image of the tree and what is known about it."""

    path: Path
    rel: str  # relative to ROOT, '/' separators
    subset: str
    background: str | None
    key: str
    depth_rel: str | None = None
    weight_g: float | None = None

    def extras(self, annotation: str) -> dict:
        return {"subset": self.subset, "background": self.background,
                "depth_file": self.depth_rel, "weight_g": self.weight_g,
                "annotation": annotation}


def _matches(text: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(text, p.lower()) for p in patterns)


def strip_tokens(name: str, tokens: Sequence[str]) -> str:
    """``img_001_depth`` -> ``img_001``; ``RGB images`` -> ``images``; ``depth`` -> ``""``."""
    name = name.lower().strip()
    changed = True
    while changed and name:
        changed = False
        for token in tokens:
            token = token.lower()
            if name == token:
                return ""
            for sep in _SEPARATORS:
                if name.startswith(token + sep):
                    name, changed = name[len(token) + 1:].strip(_SEPARATORS), True
                elif name.endswith(sep + token):
                    name, changed = name[: -len(token) - 1].strip(_SEPARATORS), True
    return name


def pairing_key(rel: str, tokens: Sequence[str]) -> str:
    """Folders below the sub-dataset folder plus the stem, with RGB / depth tokens removed."""
    parts = rel.split("/")
    folders = [strip_tokens(p, tokens) for p in parts[1:-1]]
    stem = strip_tokens(Path(parts[-1]).stem, tokens)
    return "/".join(p for p in [*folders, stem] if p)


def scan_tree(root: str | os.PathLike, layout: GrapesNetLayout, warnings: WarningCounter
              ) -> list[GrapesNetImage]:
    """Every RGB image under ``root`` with its sub-dataset, background and depth partner."""
    root = Path(root)
    if not root.is_dir():
        raise GrapeInputError(f"{root}: GrapesNet root folder not found")
    extensions = {e.lower() for e in layout.image_extensions}
    rgb: list[GrapesNetImage] = []
    depth: dict[str, dict[str, list[str]]] = {s: defaultdict(list) for s in SUBSETS}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() not in extensions:
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            low = rel.lower()
            subset = next((s for s in SUBSETS if _matches(low, getattr(layout, s))), None)
            if subset is None or "/" not in low:
                warnings.add(OUTSIDE, rel)
                continue
            inner = low.split("/", 1)[1]  # below the sub-dataset folder
            if subset in RGBD_SUBSETS and _matches(inner, layout.depth):
                depth[subset][pairing_key(low, layout.depth_tokens)].append(rel)
                continue
            folder = inner.rsplit("/", 1)[0] if "/" in inner else ""
            background = SUBSET_BACKGROUND[subset]
            if subset == "dataset1":
                if _matches(folder, layout.black):
                    background = "black"
                elif _matches(folder, layout.natural):
                    background = "natural"
            rgb.append(GrapesNetImage(path, rel, subset, background,
                                      pairing_key(low, layout.rgb_tokens)))
    if not rgb:
        raise GrapeInputError(
            f"{root}: no GrapesNet images found (expected Dataset-1 ... Dataset-4 folders; "
            "see datasets/README.md or pass --layout / --pattern)"
        )
    _pair_depth(rgb, depth, warnings)
    return rgb


def _pair_depth(rgb: list[GrapesNetImage], depth: dict[str, dict[str, list[str]]],
                warnings: WarningCounter) -> None:
    by_key: dict[tuple[str, str], list[GrapesNetImage]] = defaultdict(list)
    for img in rgb:
        by_key[(img.subset, img.key)].append(img)
    for subset, keyed in depth.items():
        for key, rels in keyed.items():
            partners = by_key.get((subset, key), [])
            if len(rels) > 1 or len(partners) > 1:
                names = ", ".join(rels + [p.rel for p in partners])
                raise GrapeInputError(
                    f"ambiguous RGB-D pairing key {key!r} in {subset}: {names} (rename the "
                    "files or set rgb_tokens / depth_tokens in --layout)"
                )
            if not partners:
                warnings.add(UNPAIRED_DEPTH, rels[0])
                continue
            partners[0].depth_rel = rels[0]
    for img in rgb:
        if img.subset in RGBD_SUBSETS and img.depth_rel is None:
            warnings.add(NO_DEPTH, img.rel)


def _check_depth_sizes(root: Path, images: list[GrapesNetImage], max_pixels: int | None,
                       warnings: WarningCounter) -> None:
    for img in images:
        if img.depth_rel is None:
            continue
        rgb = read_image_size(img.path, max_pixels=max_pixels)
        dep = read_image_size(root / img.depth_rel, max_pixels=max_pixels, photo=False)
        if (rgb.width, rgb.height) != (dep.width, dep.height):
            warnings.add(DEPTH_SIZE, f"{img.depth_rel}: {dep.width}x{dep.height} vs "
                                     f"{rgb.width}x{rgb.height}")


# --------------------------------------------------------------------------- weights

KEY_HEADERS = ("image", "file", "name", "id", "bunch", "sample")
WEIGHT_HEADERS = ("weight", "mass")


def _table_rows(path: Path) -> list[list[str]]:
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        try:
            import openpyxl
        except ImportError:
            raise GrapeInputError(
                f"{path}: reading .xlsx needs the openpyxl package, which is not installed; "
                "export the sheet as CSV (File > Save as > CSV) and pass that"
            ) from None
        try:
            book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        except Exception as e:  # openpyxl raises many types for a bad file
            raise GrapeInputError(f"{path}: not a readable .xlsx file ({type(e).__name__})"
                                  ) from None
        sheet = book.worksheets[0]
        rows = [["" if v is None else str(v) for v in row]
                for row in sheet.iter_rows(values_only=True)]
        book.close()
        return rows
    if suffix == ".xls":
        raise GrapeInputError(f"{path}: old .xls sheets are not supported; export as CSV")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise GrapeInputError(f"{path}: not a UTF-8 text (CSV) file") from None
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    return [row for row in csv.reader(io.StringIO(text), dialect)]


def _find_column(header: list[str], wanted: str | None, candidates: Sequence[str],
                 path: Path, what: str) -> int:
    low = [h.strip().lower() for h in header]
    if wanted is not None:
        if wanted.strip().lower() in low:
            return low.index(wanted.strip().lower())
        raise GrapeInputError(f"{path}: no column {wanted!r} (columns: {', '.join(header)})")
    for cand in candidates:
        for i, h in enumerate(low):
            if cand in h:
                return i
    raise GrapeInputError(
        f"{path}: no {what} column (a header containing {' / '.join(candidates)}; columns: "
        f"{', '.join(header)}); name it with --{what}-column"
    )


def read_weights(path: str | os.PathLike, key_column: str | None = None,
                 weight_column: str | None = None, warnings: WarningCounter | None = None,
                 rgb_tokens: Sequence[str] = ("rgb", "color", "colour")) -> dict[str, float]:
    """``{normalised key: grams}`` from a CSV / XLSX weights table (see the module doc)."""
    path = Path(path)
    warnings = warnings if warnings is not None else WarningCounter()
    if not path.is_file():
        raise GrapeInputError(f"{path}: weights table not found")
    rows = [r for r in _table_rows(path) if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise GrapeInputError(f"{path}: weights table has no header and data rows")
    header = rows[0]
    k = _find_column(header, key_column, KEY_HEADERS, path, "key")
    w = _find_column(header, weight_column, WEIGHT_HEADERS, path, "weight")
    if k == w:
        raise GrapeInputError(f"{path}: key and weight columns are the same ({header[k]!r})")
    factor = 1000.0 if "kg" in header[w].lower() else 1.0
    weights: dict[str, float] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        key = row[k].strip() if k < len(row) else ""
        raw = row[w].strip() if w < len(row) else ""
        if not key:
            raise GrapeInputError(f"{path}: row {lineno}: empty {header[k]!r}")
        if not raw:
            warnings.add(EMPTY_WEIGHT, f"{path.name} row {lineno}")
            continue
        try:
            value = float(raw.replace(",", ".")) * factor
        except ValueError:
            raise GrapeInputError(
                f"{path}: row {lineno}: weight {raw!r} is not a number") from None
        if not np.isfinite(value) or value <= 0:
            raise GrapeInputError(f"{path}: row {lineno}: weight {raw!r} is not positive")
        norm = strip_tokens(Path(key).stem if Path(key).suffix.lower() in IMAGE_EXTENSIONS
                             else key, rgb_tokens)
        if norm in weights and weights[norm] != value:
            raise GrapeInputError(f"{path}: row {lineno}: {key!r} is listed twice with "
                                  "different weights")
        weights[norm] = value
    return weights


def attach_weights(images: list[GrapesNetImage], weights: dict[str, float],
                   warnings: WarningCounter) -> None:
    """Give each Dataset-4 image the weight whose key equals its key, stem or folder."""
    used: set[str] = set()
    for img in images:
        if img.subset != "dataset4":
            continue
        parts = img.key.split("/")
        for candidate in (img.key, parts[-1], *reversed(parts[:-1]),
                          img.path.stem.lower()):
            if candidate in weights:
                img.weight_g = weights[candidate]
                used.add(candidate)
                break
        else:
            warnings.add(NO_WEIGHT, img.rel)
    for key in weights.keys() - used:
        warnings.add(UNMATCHED_WEIGHT, key)


# --------------------------------------------------------------------------- annotations


def _annotation_files(folder: Path) -> tuple[list[Path], list[Path], WarningCounter]:
    from .via import detect_via_version

    skipped = WarningCounter()
    via, labelme = [], []
    for path in sorted(folder.rglob("*.json")):
        data = read_json(path)
        if isinstance(data, dict) and isinstance(data.get("shapes"), list):
            labelme.append(path)
            continue
        try:
            detect_via_version(data, path)
        except GrapeInputError:
            skipped.add(NOT_ANNOTATION, str(path))
            continue
        via.append(path)
    return via, labelme, skipped


def _via_images_dir(via_path: Path, root: Path, by_name: dict[str, list[GrapesNetImage]]
                    ) -> Path:
    """The one folder of the tree holding every image a VIA file names."""
    from .via import iter_via_images

    names = [img.filename for img in iter_via_images(read_json(via_path), via_path,
                                                     WarningCounter()) if img.regions]
    if not names:
        return root
    candidates = [root] + sorted({img.path.parent for n in names
                                  for img in by_name.get(Path(n).name.lower(), [])})
    for folder in candidates:
        if all((folder / n).is_file() for n in names):
            return folder
    missing = next((n for n in names if not by_name.get(Path(n).name.lower())), None)
    if missing is not None:
        raise GrapeInputError(f"{via_path}: image {missing!r} is not in the GrapesNet tree "
                              f"under {root}")
    raise GrapeInputError(f"{via_path}: its images are in several folders of {root}; save one "
                          "VIA project per folder")


def load_annotations(annotations: str | os.PathLike, root: Path,
                     images: list[GrapesNetImage], max_pixels: int | None,
                     warnings: WarningCounter, strict_images: bool = False,
                     undecodable: set[str] | None = None
                     ) -> dict[str, tuple[str, ImageRecord]]:
    """``{image rel path: (tool, record)}`` from the VIA / labelme files of a folder.

    Each file is read by the project's own VIA / labelme reader (same rules, same
    warnings), in memory; its images are matched back to the tree by path, else by unique
    file name. The absolute paths of the images those readers left out as undecodable are
    added to ``undecodable``, so they are not decoded again.
    """
    from .labelme import read_labelme
    from .via import read_via

    folder = Path(annotations)
    if not folder.is_dir():
        raise GrapeInputError(f"{folder}: annotations folder not found")
    via_files, labelme_files, skipped = _annotation_files(folder)
    for kind, n in skipped.counts.items():
        warnings.add(kind, skipped.examples.get(kind, ""), n)
    by_path = {os.path.abspath(img.path): img for img in images}
    by_name: dict[str, list[GrapesNetImage]] = defaultdict(list)
    for img in images:
        by_name[img.path.name.lower()].append(img)
    found: dict[str, tuple[str, ImageRecord]] = {}
    source_of: dict[str, Path] = {}
    skipped_paths = undecodable if undecodable is not None else set()
    jobs: list[tuple[str, Path, Records, str]] = []
    for via_path in via_files:
        jobs.append(("via", via_path, read_via(via_path, _via_images_dir(via_path, root, by_name),
                                               max_pixels=max_pixels,
                                               strict_images=strict_images), f"{via_path}: "))
    if labelme_files:
        common = Path(os.path.commonpath([os.path.abspath(root), os.path.abspath(folder)]))
        jobs.append(("labelme", folder, read_labelme(labelme_files, root=common,
                                                     max_pixels=max_pixels,
                                                     strict_images=strict_images),
                     "labelme: "))
    for tool, source, records, prefix in jobs:
        for rec in records.images:
            target = None if rec.embedded else by_path.get(os.path.abspath(rec.path))
            if target is None:
                same = by_name.get(Path(rec.file_name).name.lower(), [])
                target = same[0] if len(same) == 1 else None
            if target is None:
                warnings.add(UNMATCHED_ANN, f"{source}: {rec.file_name}")
                continue
            if target.rel in found:
                raise GrapeInputError(f"{target.rel} is annotated twice (in "
                                      f"{source_of[target.rel]} and {source})")
            found[target.rel] = (tool, rec)
            source_of[target.rel] = source
        skipped_paths.update(os.path.abspath(p) for p in records.undecodable)
        records.warnings.log(logger, prefix=prefix)
    return found


# --------------------------------------------------------------------------- conversion


def _should_auto(img: GrapesNetImage, auto: str) -> bool:
    if auto == "none":
        return False
    if auto == "single":
        return img.subset in ("dataset1", "dataset4")
    return img.subset == "dataset1" and img.background in ("black", None)


def convert_grapesnet(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    annotations: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    layout: GrapesNetLayout | None = None,
    auto: str = "black",
    key_column: str | None = None,
    weight_column: str | None = None,
    overwrite: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    edge_params: EdgeParams | None = None,
    strict_images: bool = False,
) -> dict:
    """Import a GrapesNet tree into ``out_dir/grapesnet_<subset>.json``; returns a summary.

    ``auto``: ``black`` auto-annotates Dataset-1 black-background images (and Dataset-1
    images of unknown background that turn out black), ``single`` every one-bunch image
    (Dataset-1 and Dataset-4), ``none`` nothing. Everything is read and checked first; the
    JSON files are written at the end, so a bad input leaves no partial output.
    """
    if auto not in AUTO_CHOICES:
        raise GrapeInputError(f"--auto must be one of {', '.join(AUTO_CHOICES)}, got {auto!r}")
    root = Path(root)
    layout = layout or GrapesNetLayout()
    edge_params = edge_params or EdgeParams()
    warnings = WarningCounter()
    images = scan_tree(root, layout, warnings)
    outputs = {s: Path(out_dir) / f"grapesnet_{s}.json" for s in SUBSETS}
    for path in outputs.values():
        refuse_existing(path, overwrite)  # refuse before any work
    _check_depth_sizes(root, images, max_pixels, warnings)
    if weights is not None:
        table = read_weights(weights, key_column, weight_column, warnings, layout.rgb_tokens)
        attach_weights(images, table, warnings)
    undecodable: set[str] = set()
    manual = (load_annotations(annotations, root, images, max_pixels, warnings,
                               strict_images, undecodable)
              if annotations is not None else {})
    categories = sorted({i.category for _, rec in manual.values() for i in rec.instances}
                        - {DEFAULT_CATEGORY})
    builders = {s: CocoBuilder([DEFAULT_CATEGORY, *categories], source="grapesnet")
                for s in SUBSETS}
    unannotated: list[str] = []
    counts = {s: {"images": 0, "annotated": 0, "instances": 0} for s in SUBSETS}
    for img in tqdm(images, desc="GrapesNet", unit="img", leave=False, disable=None):
        counts[img.subset]["images"] += 1
        builder = builders[img.subset]
        if os.path.abspath(img.path) in undecodable:  # already named by VIA / labelme
            warnings.add(UNDECODABLE, img.rel)
            continue
        if img.rel in manual:
            tool, rec = manual[img.rel]
            size = read_image_size(img.path, max_pixels=max_pixels)
            if (size.height, size.width) != (rec.height, rec.width):
                raise GrapeInputError(
                    f"{rec.source}: {rec.file_name} is annotated at {rec.width}x{rec.height} "
                    f"but {img.rel} is {size.width}x{size.height}")
            image_id = builder.add_image(img.rel, size.height, size.width, **img.extras(tool))
            # VIA polygons stay polygons; labelme masks become RLE once
            add_instances(builder, image_id, rec.instances, warnings, EMPTY_INSTANCE,
                          keep_polygons=True)
        elif _should_auto(img, auto):
            try:
                image = np.ascontiguousarray(decode_image(img.path, max_pixels=max_pixels,
                                                          format="BGR"))
            except UndecodableImageError as e:
                leave_out_undecodable(e, warnings, strict_images)
                continue
            if img.background is None:
                img.background = detect_background(image, edge_params)
                if img.background != "black" and auto == "black":
                    unannotated.append(img.rel)
                    continue
            route = "black" if img.background == "black" else "natural"
            rec = edge_record(Path(img.path), img.rel, image, route, edge_params)
            if not rec.instances:
                warnings.add(NO_BUNCH, img.rel)
                unannotated.append(img.rel)
                continue
            image_id = builder.add_image(img.rel, rec.height, rec.width, **img.extras("edges"))
            add_instances(builder, image_id, rec.instances, warnings, EMPTY_INSTANCE)
        else:
            unannotated.append(img.rel)
            continue
        counts[img.subset]["annotated"] += 1
    if not any(b.num_images for b in builders.values()):
        raise GrapeInputError(f"{root}: none of the {len(images)} images has an annotation "
                              "(no Dataset-1 black-background images; pass --annotations)")
    written = []
    to_write = [outputs[s] for s, b in builders.items() if b.num_images]
    with atomic_outputs(to_write, overwrite=overwrite) as out:  # every subset or none
        for subset, builder in builders.items():
            counts[subset]["instances"] = builder.num_annotations
            if not builder.num_images:
                continue
            builder.info["image_root"] = str(root)
            path = outputs[subset]
            builder.write(path, outputs=out)
            written.append(path)
            logger.info("%s: %d of %d images annotated, %d instances -> %s", subset,
                        counts[subset]["annotated"], counts[subset]["images"],
                        counts[subset]["instances"], path)
    if unannotated:
        logger.warning("%d image(s) without any annotation, left out: %s", len(unannotated),
                       ", ".join(unannotated))
    warnings.log(logger, prefix="grapesnet: ")
    return {"subsets": counts, "outputs": written, "unannotated": unannotated,
            "warnings": warnings.as_dict()}
