"""tools/convert.py as a user runs it: every bad input of issue 3, one subprocess each.

For each error case: exit status 1, exactly one line on stderr (``error: <file>: ...``), no
traceback, no output file (nor temporary file) left, every input file byte-identical.
Warning cases exit 0 and log one counted line per kind. The processes are started
together (a few at a time) because each one pays the Detectron2 / torch import.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import PEER_DATA

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "convert.py"
PEER = PEER_DATA
PARALLEL = 2


def jpeg(path, width=64, height=48, orientation=None):
    img = Image.fromarray(np.full((height, width, 3), 100, np.uint8))
    kwargs = {}
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif
    img.save(path, quality=80, **kwargs)


def region(xs, ys):
    return {"shape_attributes": {"name": "polygon", "all_points_x": xs, "all_points_y": ys},
            "region_attributes": {"name": "bunch"}}


SQUARE = region([10, 30, 30, 10], [10, 10, 30, 30])


def via_export(images: Path, records: dict, sizes: dict | None = None) -> str:
    out = {}
    for name, regions in records.items():
        f = images / name
        size = (sizes or {}).get(name, f.stat().st_size if f.is_file() else 1234)
        out[f"{name}{size}"] = {"filename": name, "size": size, "regions": regions,
                                "file_attributes": {}}
    return json.dumps(out)


def build_cases(ws: Path) -> dict:
    """Every case: its own folder with inputs, the argv, and what must come out."""
    cases = {}

    def case(name, files: dict, argv, rc=1, expect="", out="out.json"):
        folder = ws / name
        (folder / "images").mkdir(parents=True)
        jpeg(folder / "images" / "a.jpg")
        for rel, content in files.items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if callable(content):
                content(path)
            elif isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        cases[name] = {"folder": folder, "argv": [str(a).format(d=folder) for a in argv],
                       "rc": rc, "expect": expect, "out": folder / out}

    via = ["via", "--via", "{d}/p.json", "--images", "{d}/images", "--out", "{d}/out.json"]
    lm = ["labelme", "--input", "{d}/lm", "--out", "{d}/out.json"]

    case("truncated_json", {"p.json": '{"a.jpg1": {"filename": "a.j'}, via,
         expect=r"p\.json: not valid JSON")
    case("non_json_labelme", {"lm/a.json": "this is not json"}, lm,
         expect=r"a\.json: not valid JSON")
    case("labelme_file_given_to_via",
         {"p.json": json.dumps({"shapes": [], "imagePath": "a.jpg", "imageData": None})}, via,
         expect=r"p\.json: this is a labelme file, not VIA")
    case("via_file_given_to_labelme",
         {"lm/a.json": json.dumps({"_via_img_metadata": {}})}, lm,
         expect=r"a\.json: not a labelme file")
    case("missing_image", {"p.json": json.dumps(
        {"b.jpg1": {"filename": "b.jpg", "size": 1, "regions": [SQUARE]}})}, via,
         expect=r"b\.jpg: image not found \(referenced by .*p\.json\)")
    case("zero_byte_image", {"images/z.jpg": b"", "p.json": json.dumps(
        {"z.jpg0": {"filename": "z.jpg", "size": 0, "regions": [SQUARE]}})},
         via + ["--strict-images"],
         expect=r"z\.jpg: image file is empty \(0 bytes\)")
    case("unreadable_image", {"images/t.jpg": "text", "p.json": json.dumps(
        {"t.jpg4": {"filename": "t.jpg", "size": 4, "regions": [SQUARE]}})},
         via + ["--strict-images"],
         expect=r"t\.jpg: not a readable image")
    case("duplicate_file_names", {"p.json": json.dumps({
        "k1": {"filename": "a.jpg", "size": 1, "regions": [SQUARE]},
        "k2": {"filename": "a.jpg", "size": 2, "regions": [SQUARE]}})}, via,
         expect=r"p\.json: image 'a\.jpg' appears twice")
    case("path_traversal", {"p.json": json.dumps(
        {"x": {"filename": "../../etc/passwd", "size": 1, "regions": [SQUARE]}})}, via,
         expect=r"p\.json: image name '\.\./\.\./etc/passwd' resolves outside")
    case("absolute_path", {"p.json": json.dumps(
        {"x": {"filename": "/etc/passwd", "size": 1, "regions": [SQUARE]}})}, via,
         expect=r"p\.json: image name '/etc/passwd' is an absolute path")
    case("labelme_image_outside_root", {"lm/a.json": json.dumps(
        {"shapes": [], "imagePath": "../../../../etc/passwd", "imageData": None})}, lm,
         expect=r"a\.json: image name .* resolves outside")
    case("pixel_limit", {"p.json": lambda p: p.write_text(
        via_export(p.parent / "images", {"a.jpg": [SQUARE]}))},
         via + ["--max-pixels", "1000"], expect=r"a\.jpg: image is 64 x 48 = 3072 pixels, "
         r"above the limit of 1000")
    case("output_exists", {"out.json": "precious", "p.json": lambda p: p.write_text(
        via_export(p.parent / "images", {"a.jpg": [SQUARE]}))}, via,
         expect=r"out\.json: output already exists \(pass --overwrite")
    case("validate_via_coco_export", {}, ["validate", "--json",
         PEER / "via/nsy0328/sample_coco.json", "--images", PEER / "via/nsy0328"],
         expect="", out="none.json")
    case("split_bad_fractions", {"c.json": json.dumps(
        {"images": [], "annotations": [], "categories": []})},
         ["split", "--json", "{d}/c.json", "--out-dir", "{d}/o", "--val", "0.9",
          "--test", "0.5"], expect="fractions must be", out="o/c_train.json")
    case("merge_not_coco", {"c.json": "[]"}, ["merge", "{d}/c.json", "--out", "{d}/out.json"],
         expect=r"c\.json: not a COCO instances JSON")
    case("predictions_not_results", {"r.json": "{}"},
         ["from-predictions", "--results", "{d}/r.json", "--images", "{d}/images",
          "--via-out", "{d}/out.json"], expect=r"r\.json: not a Detectron2")

    # warning cases: exit 0, the good region is converted, one counted line per kind
    bad_regions = [
        SQUARE,
        region([-20, 20, 20, -20], [10, 10, 30, 30]),            # 2 points outside: clipped
        region([10, 20, None], [10, 10, 20]),                    # null (VIA's NaN)
        region([10, 20, "x"], [10, 10, 20]),                     # non-numeric
        region([10, 20], [10, 10]),                              # 2 points
        region([10, 20, 30], [10, 10]),                          # mismatched x / y
        region([10, 20, 30], [10, 20, 30]),                      # zero area
    ]
    case("nan_is_not_json", {"p.json": lambda p: p.write_text(via_export(
        p.parent / "images", {"a.jpg": [region([10, 20, float("nan")], [10, 10, 20])]}))},
         via, expect=r"p\.json: NaN is not standard JSON")
    case("region_warnings", {"p.json": lambda p: p.write_text(via_export(
        p.parent / "images", {"a.jpg": bad_regions}, sizes={"a.jpg": 99}))}, via, rc=0)
    case("exif_rotated", {"images/r.jpg": lambda p: jpeg(p, 64, 48, orientation=8),
                          "p.json": lambda p: p.write_text(via_export(
                              p.parent / "images", {"r.jpg": [SQUARE]}))}, via, rc=0)
    case("labelme_inside_root", {"lm/a.json": json.dumps(
        {"shapes": [{"label": "bunch", "points": [[1, 1], [20, 1], [20, 20]],
                     "group_id": None, "shape_type": "polygon", "flags": {}}],
         "imagePath": "../images/a.jpg", "imageData": None})},
         lm + ["--root", "{d}"], rc=0)
    case("overwrite_allowed", {"out.json": "old", "p.json": lambda p: p.write_text(
        via_export(p.parent / "images", {"a.jpg": [SQUARE]}))}, via + ["--overwrite"], rc=0)
    return cases


def tree_hashes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    cases = build_cases(tmp_path_factory.mktemp("cli"))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore::FutureWarning")
    pending, running, done = list(cases.items()), {}, {}
    while pending or running:
        while pending and len(running) < PARALLEL:
            name, c = pending.pop(0)
            c["before"] = tree_hashes(c["folder"])
            c["out_before"] = c["out"].read_bytes() if c["out"].exists() else None
            running[name] = subprocess.Popen(
                [sys.executable, str(TOOL), *c["argv"]], cwd=REPO, env=env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                stdout, stderr = proc.communicate()
                done[name] = dict(cases[name], returncode=proc.returncode, stdout=stdout,
                                  stderr=stderr)
                del running[name]
        time.sleep(0.05)
    return done


ERROR_CASES = [
    "truncated_json", "non_json_labelme", "labelme_file_given_to_via",
    "via_file_given_to_labelme", "missing_image", "zero_byte_image", "unreadable_image",
    "duplicate_file_names", "path_traversal", "absolute_path", "labelme_image_outside_root",
    "pixel_limit", "output_exists", "split_bad_fractions", "merge_not_coco",
    "predictions_not_results", "nan_is_not_json",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", ERROR_CASES)
def test_bad_input_one_line_error_no_output_inputs_untouched(runs, name):
    r = runs[name]
    assert r["returncode"] == 1, (r["stdout"], r["stderr"])
    assert "Traceback" not in r["stderr"] + r["stdout"]
    lines = r["stderr"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r["stderr"]
    assert re.search(r["expect"], lines[0]), lines[0]
    # no new output and no leftover temporary file; the inputs (and a pre-existing
    # output) are byte-identical
    after = tree_hashes(r["folder"])
    assert after == r["before"], set(after) ^ set(r["before"])
    if r["out_before"] is None:
        assert not r["out"].exists()
    else:
        assert r["out"].read_bytes() == r["out_before"]


@pytest.mark.slow
@pytest.mark.shared("peer-data")
def test_validate_exits_1_with_a_report(runs):
    r = runs["validate_via_coco_export"]
    assert r["returncode"] == 1 and "Traceback" not in r["stderr"]
    assert "ERROR   annotations without 'area' (COCOeval needs it): 4" in r["stdout"]
    assert "result: FAILED" in r["stdout"]


@pytest.mark.slow
def test_region_problems_are_counted_warnings(runs):
    r = runs["region_warnings"]
    assert r["returncode"] == 0, r["stderr"]
    out = r["stdout"]
    for line in [
        "images whose VIA size key does not match the file on disk: 1",
        "coordinates outside the image (clipped to the border): 2",
        "regions with NaN or non-numeric coordinates (skipped): 2",
        "polygons with fewer than 3 points (skipped): 1",
        "polygons with different numbers of x and y values (skipped): 1",
        "regions with zero area (skipped): 1",
    ]:
        assert out.count(line) == 1, (line, out)
    coco = json.loads(r["out"].read_text())
    assert len(coco["annotations"]) == 2  # the square and the clipped square
    assert r["stderr"].strip() == ""


@pytest.mark.slow
def test_exif_rotated_size_and_successful_runs(runs):
    r = runs["exif_rotated"]
    assert r["returncode"] == 0, r["stderr"]
    img = json.loads(r["out"].read_text())["images"][0]
    assert (img["width"], img["height"]) == (48, 64)
    r = runs["labelme_inside_root"]
    assert r["returncode"] == 0, r["stderr"]
    assert json.loads(r["out"].read_text())["images"][0]["file_name"] == "images/a.jpg"
    r = runs["overwrite_allowed"]
    assert r["returncode"] == 0 and json.loads(r["out"].read_text())["annotations"]


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, str(TOOL), "--help"], capture_output=True,
                         text=True, cwd=REPO, check=True).stdout
    for sub in ("via", "labelme", "split", "merge", "validate", "from-predictions"):
        assert sub in out
