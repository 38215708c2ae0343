"""A seeded fuzz test: mutated VIA / labelme / COCO / results files through every convert.py
subcommand that reads JSON.

Each mutant must end in success or in one ``GrapeInputError`` line: never a traceback, never
a hang, never a changed input, and every COCO JSON written must load with pycocotools.
Most runs call the CLI's ``main`` in-process (the torch import is paid once); a handful go
through a subprocess to check the real exit path. The mutation logic lives here, not in
the package: it is test machinery.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import io
import json
import logging
import math
import random
import signal
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import REPO, run_tool, run_tool_with_usage

SEED = 20240610
PER_CALL_TIMEOUT_S = 20
IMAGE_SIZE = (24, 32)  # height, width: tiny, so each run costs milliseconds
DEEP = "__DEEP_NESTING__"
#: mutants per base file; the total is a few hundred
MUTANTS = {"via1": 50, "via2": 50, "via2_project": 50, "via3": 60, "labelme": 80, "coco": 100,
           "results": 40}


# ----------------------------------------------------------------------------- base files
def _poly(x0, y0, x1, y1):
    return [x0, x1, x1, x0], [y0, y0, y1, y1]


def _region(name, **shape):
    return {"shape_attributes": {"name": name, **shape}, "region_attributes": {"class": "bunch"}}


def via2_records(sizes: dict[str, int]) -> dict:
    xs, ys = _poly(2, 2, 14, 12)
    regions_a = [
        _region("polygon", all_points_x=xs, all_points_y=ys),
        _region("rect", x=16, y=4, width=10, height=8),
        _region("circle", cx=8, cy=18, r=4),
        _region("ellipse", cx=22, cy=18, rx=5, ry=3, theta=0.3),
    ]
    xs, ys = _poly(1, 1, 20, 20)
    regions_b = [_region("polygon", all_points_x=xs, all_points_y=ys),
                 _region("point", cx=3, cy=3)]
    return {f"{n}{sizes[n]}": {"filename": n, "size": sizes[n], "regions": r,
                               "file_attributes": {}}
            for n, r in (("a.png", regions_a), ("b.png", regions_b))}


def via1_export(sizes):
    data = via2_records(sizes)
    for rec in data.values():
        rec["regions"] = {str(i): r for i, r in enumerate(rec["regions"])}
    return data


def via2_project(sizes):
    return {"_via_settings": {"project": {"name": "fuzz"}},
            "_via_img_metadata": via2_records(sizes),
            "_via_attributes": {"region": {"class": {"type": "radio", "description": "",
                                                     "options": {"bunch": ""},
                                                     "default_options": {}}},
                                "file": {}}}


def via3_project():
    return {
        "project": {"pid": "__VIA_PROJECT_ID__", "pname": "fuzz", "vid_list": ["1", "2"]},
        "config": {"file": {"loc_prefix": {"1": "", "2": "", "3": "", "4": ""}}},
        "attribute": {"1": {"aname": "class", "anchor_id": "FILE1_Z0_XY1", "type": 3,
                            "desc": "", "options": {"0": "bunch"}, "default_option_id": ""}},
        "file": {"1": {"fid": "1", "fname": "a.png", "type": 2, "loc": 1, "src": ""},
                 "2": {"fid": "2", "fname": "b.png", "type": 2, "loc": 1, "src": ""}},
        "view": {"1": {"fid_list": ["1"]}, "2": {"fid_list": ["2"]}},
        "metadata": {
            "1_a": {"vid": "1", "flg": 0, "z": [], "xy": [7, 2, 2, 14, 2, 14, 12, 2, 12],
                    "av": {"1": "0"}},
            "1_b": {"vid": "1", "flg": 0, "z": [], "xy": [2, 16, 4, 10, 8], "av": {"1": "0"}},
            "1_c": {"vid": "1", "flg": 0, "z": [], "xy": [3, 8, 18, 4], "av": {"1": "0"}},
            "2_a": {"vid": "2", "flg": 0, "z": [], "xy": [4, 12, 12, 6, 4], "av": {"1": "0"}},
            "2_b": {"vid": "2", "flg": 0, "z": [], "xy": [8, 1, 1, 9, 3, 5, 9, 2, 4],
                    "av": {"1": "0"}},
        },
    }


def labelme_file():
    h, w = IMAGE_SIZE
    return {"version": "5.2.1", "flags": {}, "imagePath": "a.png", "imageData": None,
            "imageHeight": h, "imageWidth": w,
            "shapes": [
                {"label": "bunch", "points": [[2, 2], [14, 2], [14, 12], [2, 12]],
                 "group_id": None, "shape_type": "polygon", "flags": {}},
                {"label": "bunch", "points": [[16, 4], [26, 12]], "group_id": 1,
                 "shape_type": "rectangle", "flags": {}},
                {"label": "bunch", "points": [[8, 18], [8, 22]], "group_id": 1,
                 "shape_type": "circle", "flags": {}},
                {"label": "leaf", "points": [[20, 14], [30, 14], [30, 22]], "group_id": None,
                 "shape_type": "polygon", "flags": {}},
                {"label": "bunch", "points": [[1, 1], [5, 5]], "group_id": None,
                 "shape_type": "line", "flags": {}},
            ]}


def coco_file():
    from pycocotools import mask as mask_utils

    h, w = IMAGE_SIZE
    m = np.zeros((h, w), np.uint8, order="F")
    m[4:12, 16:28] = 1
    rle = mask_utils.encode(m)
    rle["counts"] = rle["counts"].decode("ascii")
    return {
        "info": {"description": "fuzz"}, "licenses": [],
        "images": [{"id": 1, "file_name": "a.png", "height": h, "width": w},
                   {"id": 2, "file_name": "b.png", "height": h, "width": w}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 120.0,
             "bbox": [2.0, 2.0, 12.0, 10.0], "segmentation": [[2, 2, 14, 2, 14, 12, 2, 12]]},
            {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 96.0,
             "bbox": [16.0, 4.0, 12.0, 8.0], "segmentation": rle},
            {"id": 3, "image_id": 2, "category_id": 2, "iscrowd": 1, "area": 16.0,
             "bbox": [0.0, 0.0, 4.0, 4.0],
             "segmentation": {"size": [h, w], "counts": [0, 4, h - 4, 4, h - 4, 4, h - 4, 4,
                                                         h * w - 3 * h - 4]}},
        ],
        "categories": [{"id": 1, "name": "bunch", "supercategory": "grape"},
                       {"id": 2, "name": "leaf", "supercategory": "grape"}],
    }


def results_file():
    rle = coco_file()["annotations"][1]["segmentation"]
    return [{"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [16.0, 4.0, 12.0, 8.0],
             "segmentation": rle},
            {"image_id": 2, "category_id": 2, "score": 0.4, "bbox": [16.0, 4.0, 12.0, 8.0],
             "segmentation": dict(rle)}]


# ----------------------------------------------------------------------------- mutation
def random_value(rng: random.Random):
    """A value of a random JSON type, including the hostile ones."""
    return rng.choice([
        lambda: "", lambda: "x" * rng.randint(1, 5), lambda: rng.randint(-3, 40),
        lambda: rng.uniform(-5, 40), lambda: [], lambda: {}, lambda: None,
        lambda: rng.choice([True, False]), lambda: 2 ** 64, lambda: -(2 ** 64),
        lambda: 2 ** 63, lambda: float("nan"), lambda: float("inf"), lambda: float("-inf"),
        lambda: 1e9, lambda: -1e9, lambda: DEEP, lambda: [rng.randint(0, 30)] * 3,
        lambda: {"1": 2}, lambda: [[1, 2], [3]], lambda: 1.5,
    ])()


def _containers(node, path=()):
    """Every (path, container) in a JSON tree, the root included."""
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _containers(v, path + (k,))
    elif isinstance(node, list):
        yield path, node
        for i, v in enumerate(node):
            yield from _containers(v, path + (i,))


def _swap(value):
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    if isinstance(value, dict):
        return list(value.values())
    return [value]


def mutate_tree(data, rng: random.Random):
    """One structural mutation in place (or a new root): delete, retype, swap, grow."""
    containers = list(_containers(data))
    _, node = rng.choice(containers)
    keys = list(node.keys()) if isinstance(node, dict) else list(range(len(node)))
    op = rng.choice(["delete", "retype", "retype", "retype", "swap", "add", "numbers"])
    if not keys:
        op = "add"
    if op == "add":
        value = random_value(rng)
        if isinstance(node, dict):
            node[rng.choice(["id", "size", "name", "x", "regions", "extra"])] = value
        else:
            node.append(value)
        return data
    key = rng.choice(keys)
    if op == "delete":
        del node[key]
    elif op == "retype":
        node[key] = random_value(rng)
    elif op == "swap":
        node[key] = _swap(node[key])
    else:  # every number of this container scaled to a huge / odd value
        factor = rng.choice([1e9, -1e9, 2 ** 64, 0.5, float("inf")])
        for k in keys:
            if isinstance(node[k], (int, float)) and not isinstance(node[k], bool):
                node[k] = node[k] * factor if not isinstance(factor, int) else factor
    return data


def mutant_text(base, rng: random.Random) -> str:
    """Text of one mutant: 1-3 structural mutations, sometimes a truncation or top-level
    swap, serialised with NaN / Infinity as Python's json writes them by default."""
    data = copy.deepcopy(base)
    kind = rng.random()
    if kind < 0.06:
        data = _swap(data)
    elif kind < 0.1:
        data = rng.choice([None, 3, "text", [], {}])
    else:
        for _ in range(rng.randint(1, 3)):
            data = mutate_tree(data, rng)
    text = json.dumps(data)
    text = text.replace(f'"{DEEP}"', "[" * 1000 + "]" * 1000)
    if rng.random() < 0.08:
        text = text[: rng.randint(0, max(len(text) - 1, 0))]
    return text


# ----------------------------------------------------------------------------- harness
class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang


def _load_convert_main():
    spec = importlib.util.spec_from_file_location("convert_tool_fuzz",
                                                  REPO / "tools" / "convert.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def run_in_process(main, argv: list[str]) -> tuple[str, str]:
    """(``ok`` | ``user_error`` | ``traceback`` | ``hang``, detail) of one CLI call."""
    stderr = io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(PER_CALL_TIMEOUT_S)
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            main(argv)
        return "ok", ""
    except SystemExit as e:
        if e.code in (0, None):
            return "ok", ""
        if e.code == 1 and stderr.getvalue().count("error:") <= 1:
            # validate exits 1 with a report; other user errors print one ``error:`` line
            return "user_error", stderr.getvalue().strip()[-300:]
        return "traceback", f"exit {e.code}: {stderr.getvalue()[-300:]}"
    except Hang:
        return "hang", ""
    except Exception as e:  # noqa: BLE001 - exactly what the fuzz test is looking for
        frame = traceback.extract_tb(e.__traceback__)[-1]
        return "traceback", (f"{type(e).__name__}: {str(e)[:200]} at "
                             f"{Path(frame.filename).name}:{frame.lineno}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def digest(paths) -> dict[str, str]:
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


def _strict_json(path: Path):
    def refuse(name):
        raise ValueError(f"{path}: non-standard JSON constant {name}")
    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def check_outputs(out_dir: Path, coco_outputs: bool, decode: bool) -> list[str]:
    """Problems with what a run wrote: non-standard JSON, COCO that pycocotools refuses,
    masks it cannot decode (``decode``: converters write their own RLE; merge and split
    pass segmentations through, after the checks of validate), or leftover temporary
    files."""
    from pycocotools.coco import COCO

    problems = []
    for f in sorted(out_dir.rglob("*")):
        if f.name.startswith("."):
            problems.append(f"temporary file left: {f.name}")
        elif f.suffix == ".json":
            try:
                data = _strict_json(f)
                if coco_outputs and isinstance(data, dict) and "annotations" in data:
                    with contextlib.redirect_stdout(io.StringIO()):
                        coco = COCO(str(f))
                        for ann in coco.dataset["annotations"] if decode else []:
                            if ann.get("segmentation"):  # none: a box annotation
                                coco.annToMask(ann)
            except Exception as e:  # noqa: BLE001
                problems.append(f"{f.name}: {type(e).__name__}: {str(e)[:150]}")
    return problems


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp("fuzz")
    images = ws / "images"
    images.mkdir()
    h, w = IMAGE_SIZE
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / name)
    return ws


def subcommands(fmt: str, src: Path, ws: Path, out: Path, rng: random.Random
                ) -> list[tuple[str, list[str], list[Path]]]:
    """(name, argv, extra inputs) of every subcommand that reads a file of this format."""
    images = str(ws / "images")
    base_coco = ws / "base_coco.json"
    if fmt.startswith("via"):
        extra = ["--label-attr", "class"] if rng.random() < 0.5 else []
        extra += ["--polygons"] if rng.random() < 0.3 else []
        return [("via", ["via", "--via", str(src), "--images", images,
                         "--out", str(out / "via.json"), *extra], [])]
    if fmt == "labelme":
        return [("labelme", ["labelme", "--input", str(src), "--root", images,
                             "--out", str(out / "labelme.json")], [])]
    if fmt == "coco":
        return [
            ("validate", ["validate", "--json", str(src), "--images", images], []),
            ("merge", ["merge", str(src), str(ws / "other_coco.json"), "--out",
                       str(out / "merged.json")], [ws / "other_coco.json"]),
            ("split", ["split", "--json", str(src), "--out-dir", str(out / "split"),
                       "--val", "0.5"], []),
            ("from-predictions", ["from-predictions", "--results", str(ws / "base_results.json"),
                                  "--coco", str(src), "--images", images,
                                  "--via-out", str(out / "pred_via.json")],
             [ws / "base_results.json"]),
        ]
    assert fmt == "results"
    return [("from-predictions", ["from-predictions", "--results", str(src), "--coco",
                                  str(base_coco), "--images", images,
                                  "--via-out", str(out / "pred_via.json"),
                                  "--labelme-out", str(out / "pred_labelme")], [base_coco])]


def make_bases(ws: Path) -> dict:
    sizes = {n: (ws / "images" / n).stat().st_size for n in ("a.png", "b.png")}
    bases = {"via1": via1_export(sizes), "via2": via2_records(sizes),
             "via2_project": via2_project(sizes), "via3": via3_project(),
             "labelme": labelme_file(), "coco": coco_file(), "results": results_file()}
    (ws / "base_coco.json").write_text(json.dumps(bases["coco"]))
    other = copy.deepcopy(bases["coco"])  # merged with each COCO mutant: other file names
    for img in other["images"]:
        img["file_name"] = f"other/{img['file_name']}"
    (ws / "other_coco.json").write_text(json.dumps(other))
    (ws / "base_results.json").write_text(json.dumps(bases["results"]))
    return bases


def run_fuzz(ws: Path, main) -> tuple[Counter, list[str]]:
    """Every mutant through its subcommands; counts per (format, subcommand, outcome) and
    the failures (tracebacks, hangs, changed inputs, bad outputs)."""
    from detectron2.utils.logger import setup_logger

    setup_logger(name="grape_instances")  # cached: convert.main's own call changes nothing
    package_logger = logging.getLogger("grape_instances")
    level = package_logger.level
    package_logger.setLevel(logging.ERROR)  # thousands of expected warnings; restored below
    try:
        return _run_mutants(ws, main)
    finally:
        package_logger.setLevel(level)


def _run_mutants(ws: Path, main) -> tuple[Counter, list[str]]:
    bases = make_bases(ws)
    rng = random.Random(SEED)
    counts: Counter = Counter()
    failures: list[str] = []
    for fmt, n in MUTANTS.items():
        for i in range(n):
            case = ws / f"{fmt}_{i:03d}"
            out = case / "out"
            out.mkdir(parents=True)
            src = (ws / "images" / f"{fmt}_{i:03d}.json" if fmt == "labelme"
                   else case / f"{fmt}.json")  # labelme's imagePath is relative to the JSON
            src.write_text(mutant_text(bases[fmt], rng), encoding="utf-8")
            for name, argv, extra in subcommands(fmt, src, ws, out, rng):
                before = digest([src, *extra])
                outcome, detail = run_in_process(main, argv)
                counts[(fmt, name, outcome)] += 1
                where = f"{fmt} #{i} {name} ({src.name})"
                if outcome in ("traceback", "hang"):
                    failures.append(f"{where}: {outcome} {detail}")
                if digest([src, *extra]) != before:
                    failures.append(f"{where}: input changed")
                problems = check_outputs(out, coco_outputs=name != "from-predictions",
                                         decode=name in ("via", "labelme", "merge", "split"))
                if outcome == "user_error" and name != "validate" and any(out.rglob("*.json")):
                    problems.append("a failed run left output files")
                failures += [f"{where}: {p}" for p in problems]
                for f in sorted(out.rglob("*"), reverse=True):  # next subcommand starts clean
                    f.unlink() if f.is_file() else f.rmdir()
            if fmt == "labelme":
                src.unlink()
    return counts, failures


def test_fuzzed_files_give_success_or_one_line_errors(workspace, capsys):
    main = _load_convert_main()
    counts, failures = run_fuzz(workspace, main)
    table = Counter()
    for (fmt, name, _), n in counts.items():
        table[(fmt, name)] += n
    with capsys.disabled():  # the numbers the report quotes
        for (fmt, name), n in sorted(table.items()):
            outcomes = {o: counts[(fmt, name, o)] for o in ("ok", "user_error", "traceback",
                                                            "hang") if counts[(fmt, name, o)]}
            print(f"\nfuzz {fmt:13s} {name:17s} {n:4d} runs {outcomes}", end="")
        print(f"\nfuzz failures: {len(failures)}")
    assert sum(table.values()) >= 400
    # every format reaches both outcomes: the mutants are neither all fatal nor all harmless
    for fmt in MUTANTS:
        assert {o for (f, _, o) in counts if f == fmt} >= {"ok", "user_error"}, fmt
    assert not failures, "\n".join(failures[:40])


SUBPROCESS_CASES = ["deep", "huge_int", "infinity_size", "list_category"]


def _subprocess_case(workspace: Path, mutation: str, folder: Path) -> tuple[list[str], Path]:
    coco = make_bases(workspace)["coco"]
    folder.mkdir()
    if mutation == "infinity_size":  # the OverflowError of the fuzz report
        data = via2_records({"a.png": 1, "b.png": 1})
        next(iter(data.values()))["size"] = math.inf
        src = folder / "via.json"
        src.write_text(json.dumps(data))
        return ["via", "--via", str(src), "--images", str(workspace / "images"),
                "--out", str(folder / "out.json")], src
    text = {
        "deep": json.dumps(coco).replace('"fuzz"', "[" * 1000 + "]" * 1000, 1),
        "huge_int": json.dumps(coco).replace('"id": 1,', f'"id": {2 ** 64},', 1),
        "list_category": json.dumps({**coco, "categories": [["bunch", 1]]}),
    }[mutation]
    src = folder / "coco.json"
    src.write_text(text)
    return ["merge", str(src), str(workspace / "other_coco.json"),
            "--out", str(folder / "out.json")], src


@pytest.mark.slow
def test_fuzz_exit_path_through_subprocesses(workspace, tmp_path):
    """A handful through the real interpreter exit path (two at a time: each pays the torch
    import): exit 1, one ``error:`` line, no traceback, no output, input untouched."""
    cases = {m: _subprocess_case(workspace, m, tmp_path / m) for m in SUBPROCESS_CASES}
    before = {m: digest([src]) for m, (_, src) in cases.items()}
    with ThreadPoolExecutor(2) as pool:
        procs = dict(zip(cases, pool.map(lambda c: run_tool("convert.py", *c[0], timeout=120),
                                         cases.values()), strict=True))
    for mutation, proc in procs.items():
        assert proc.returncode == 1, (mutation, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr, (mutation, proc.stderr[-2000:])
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1, (mutation, proc.stderr[-2000:])
        assert not (tmp_path / mutation / "out.json").exists(), mutation
        assert digest([cases[mutation][1]]) == before[mutation], mutation


# ----------------------------------------------------------------------------- issue 18 probes
def _counts():
    return coco_file()["annotations"][1]["segmentation"]["counts"]


#: Masks and boxes the probe saw merge / split pass on and validate refuse (and pycocotools
#: raise on, or crash the process on: the RLE of size [24, 99999999]).
BAD_ANNOTATIONS = {
    "doubled counts": {"segmentation": {"size": [24, 32], "counts": _counts() * 2}},
    "cut counts": {"segmentation": {"size": [24, 32], "counts": _counts()[:-3]}},
    "junk counts": {"segmentation": {"size": [24, 32], "counts": "not an RLE ~~~"}},
    "non-ASCII counts": {"segmentation": {"size": [24, 32], "counts": _counts() + "é"}},
    "giant RLE size": {"segmentation": {"size": [24, 99999999], "counts": "0"}},
    "nested polygon": {"segmentation": [[[2, 2], [14, 2], [14, 12], [2, 12]]]},
    "bbox of 3": {"bbox": [1.0, 2.0, 3.0]},
    "negative bbox": {"bbox": [16.0, 4.0, -12.0, 8.0]},
}


@pytest.mark.parametrize("case", BAD_ANNOTATIONS)
def test_merge_split_and_validate_refuse_the_same_masks(workspace, case):
    """One line from merge and split (nothing written), an error from validate: a file
    that validate refuses never comes out of merge or split (issue 18)."""
    main = _load_convert_main()
    make_bases(workspace)
    folder = workspace / f"bad_{case.replace(' ', '_').replace('-', '_')}"
    folder.mkdir()
    data = coco_file()
    data["annotations"][1].update(BAD_ANNOTATIONS[case])
    src = folder / "coco.json"
    src.write_text(json.dumps(data))
    before = digest([src])
    outcomes = {}
    for name, argv in [
        ("merge", ["merge", str(src), str(workspace / "other_coco.json"), "--out",
                   str(folder / "merged.json")]),
        ("split", ["split", "--json", str(src), "--out-dir", str(folder / "split")]),
        ("validate", ["validate", "--json", str(src), "--images", str(workspace / "images")]),
    ]:
        outcomes[name] = run_in_process(main, argv)
    assert {n: o for n, (o, _) in outcomes.items()} == {
        "merge": "user_error", "split": "user_error", "validate": "user_error"}, outcomes
    assert "annotation 2" in outcomes["merge"][1] and "validate" in outcomes["merge"][1]
    assert sorted(p.name for p in folder.iterdir()) == ["coco.json"]
    assert digest([src]) == before


@pytest.mark.parametrize("case", [c for c in BAD_ANNOTATIONS if "counts" in c or "giant" in c])
def test_from_predictions_refuses_malformed_rle_in_one_line(workspace, case):
    """Results whose RLE pycocotools cannot decode (ValueError, UnicodeEncodeError, or a
    crash of the process) are refused before any mask is decoded."""
    main = _load_convert_main()
    make_bases(workspace)
    folder = workspace / f"pred_{case.replace(' ', '_').replace('-', '_')}"
    folder.mkdir()
    results = results_file()
    results[0]["segmentation"] = BAD_ANNOTATIONS[case]["segmentation"]
    src = folder / "results.json"
    src.write_text(json.dumps(results))
    outcome, detail = run_in_process(main, [
        "from-predictions", "--results", str(src), "--coco", str(workspace / "base_coco.json"),
        "--images", str(workspace / "images"), "--via-out", str(folder / "via.json")])
    assert outcome == "user_error", detail
    assert "prediction #0" in detail
    assert not (folder / "via.json").exists()


def test_names_too_long_for_the_file_system_are_one_line(workspace):
    """An image name / imagePath of 300 characters (OSError: File name too long)."""
    main = _load_convert_main()
    sizes = {n: (workspace / "images" / n).stat().st_size for n in ("a.png", "b.png")}
    folder = workspace / "long_names"
    folder.mkdir()
    via = via2_records(sizes)
    next(iter(via.values()))["filename"] = "x" * 300 + ".png"
    (folder / "via.json").write_text(json.dumps(via))
    labelme = labelme_file()
    labelme["imagePath"] = "y" * 300 + ".png"
    (workspace / "images" / "long.json").write_text(json.dumps(labelme))
    try:
        for argv in (["via", "--via", str(folder / "via.json"), "--images",
                      str(workspace / "images"), "--out", str(folder / "v.json")],
                     ["labelme", "--input", str(workspace / "images" / "long.json"), "--out",
                      str(folder / "l.json")]):
            outcome, detail = run_in_process(main, argv)
            assert outcome in ("ok", "user_error"), detail
            assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    finally:
        (workspace / "images" / "long.json").unlink()


def test_a_labelme_file_with_millions_of_points_is_refused(workspace):
    """The probe's MemoryError at 3.4 GB: refused in one line before numpy sees the list."""
    from grape_instances.convert.labelme import MAX_POINTS

    main = _load_convert_main()
    data = labelme_file()
    data["shapes"][0]["points"] = [[i % 30, i % 20] for i in range(MAX_POINTS + 1)]
    src = workspace / "images" / "huge.json"
    src.write_text(json.dumps(data))
    try:
        outcome, detail = run_in_process(main, ["labelme", "--input", str(src), "--out",
                                                str(workspace / "huge_out.json")])
    finally:
        src.unlink()
    assert outcome == "user_error" and f"more than {MAX_POINTS} points" in detail, detail
    assert not (workspace / "huge_out.json").exists()


def test_from_predictions_on_100k_records_is_bounded(workspace):
    """The probe's hang (over 60 s at ~2 GB on 200,000 records): 100,000 detections of two
    images. Each keeps its MAX_DETECTIONS_PER_IMAGE best; the rest is one counted warning,
    and only the kept masks are checked and decoded. CPU time and peak memory are the tool
    process's own (a subprocess): the test session's peak is whatever ran before it."""
    from grape_instances.convert.predictions import MAX_DETECTIONS_PER_IMAGE

    make_bases(workspace)
    base = results_file()
    src = workspace / "many_results.json"
    src.write_text(json.dumps([dict(base[i % 2], score=0.5 + (i % 1000) / 2000)
                               for i in range(100_000)]))
    out = workspace / "many_via.json"
    proc, cpu_s, peak_kb = run_tool_with_usage(
        "convert.py", "from-predictions", "--results", str(src),
        "--coco", str(workspace / "base_coco.json"), "--images", str(workspace / "images"),
        "--via-out", str(out), timeout=10 * PER_CALL_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    project = json.loads(out.read_text())
    regions = [len(img["regions"]) for img in project["_via_img_metadata"].values()]
    assert regions == [MAX_DETECTIONS_PER_IMAGE, MAX_DETECTIONS_PER_IMAGE]
    assert cpu_s < PER_CALL_TIMEOUT_S, cpu_s
    assert 0 < peak_kb < 1_500_000, peak_kb  # kB: under 1.5 GB (measured: 0.69 GB)


def test_a_via_project_whose_only_image_is_undecodable_is_refused(workspace):
    """It used to write an empty COCO file and exit 0."""
    main = _load_convert_main()
    folder = workspace / "undecodable"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a PNG")
    data = via2_records({"a.png": 0, "b.png": 0})
    data = {k: v for k, v in data.items() if v["filename"] == "a.png"}
    (folder / "via.json").write_text(json.dumps(data))
    outcome, detail = run_in_process(main, ["via", "--via", str(folder / "via.json"), "--images",
                                            str(folder / "images"), "--out",
                                            str(folder / "out.json")])
    assert outcome == "user_error" and "no image could be converted" in detail, detail
    assert not (folder / "out.json").exists()
