"""Outputs appear whole, with the user's umask, and folders are replaced as a set."""

import errno
import importlib.util
import json
import logging
import os
import re
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from grape_instances.core import fileio
from grape_instances.core.errors import GrapeInputError
from grape_instances.core.fileio import (
    atomic_outputs,
    read_json,
    replacing_folder,
    write_json_atomic,
)
from tests.helpers import DEMO_CONFIG, REPO, assert_user_error, run_tool


def test_atomic_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644


def test_replacing_folder_keeps_the_old_one_when_the_block_fails(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.png").write_text("old")
    with pytest.raises(RuntimeError), replacing_folder(out) as tmp:
        (tmp / "new.png").write_text("new")
        raise RuntimeError("crash half way")
    assert [p.name for p in out.iterdir()] == ["old.png"]
    with replacing_folder(out) as tmp:
        (tmp / "new.png").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


# ----------------------------------------------------------------------------- reading JSON
@pytest.mark.parametrize("text, message", [
    ("[" * 1000 + "]" * 1000, "nested deeper than 100 levels"),  # RecursionError in json
    ('{"a": ' + "[" * 150 + "]" * 150 + "}", "nested deeper than 100 levels"),  # parses
    ('{"id": 18446744073709551616}', "integer 18446744073709551616 is out of range"),
    ('{"id": -9223372036854775809}', "out of range"),
    ('{"size": 9223372036854775808}', "out of range"),
    ('{"id": ' + "9" * 5000 + "}", "out of range"),  # beyond int()'s digit limit
    ('{"area": NaN}', "NaN is not standard JSON"),
    ('{"size": Infinity}', "Infinity is not standard JSON"),
    ('[-Infinity]', "-Infinity is not standard JSON"),
    ('{"x": 1e999}', "out of range (overflows to infinity)"),
])
def test_read_json_refuses_hostile_json_in_one_line(tmp_path, text, message):
    path = tmp_path / "in.json"
    path.write_text(text)
    with pytest.raises(GrapeInputError, match=re.escape(message)) as e:
        read_json(path)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)


def test_read_json_keeps_ordinary_json_and_the_int64_range(tmp_path):
    path = tmp_path / "ok.json"
    data = {"id": 2 ** 63 - 1, "low": -(2 ** 63), "deep": [[[[1.5]]]], "s": "NaN"}
    path.write_text(json.dumps(data))
    assert read_json(path) == data
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 100 + "]" * 100)  # exactly the limit
    read_json(nested)


def test_read_json_expect_names_the_top_level_type(tmp_path):
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    assert read_json(path, expect=list) == [1, 2]
    with pytest.raises(GrapeInputError, match=r"list\.json: the top level must be an object "
                                              r"\(\{\.\.\.\}\), not a list"):
        read_json(path, expect=dict)


# ----------------------------------------------------------------------------- writing JSON
def test_json_writers_never_write_nan_or_infinity(tmp_path):
    for value in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(GrapeInputError, match="refusing to write NaN / Infinity"):
            write_json_atomic(tmp_path / "m.json", {"ap": [1.0, value]})
        assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary
    write_json_atomic(tmp_path / "m.json", {"ap": [1.0, float("nan")]}, nan_as_null=True)
    assert (tmp_path / "m.json").read_text() == '{"ap": [1.0, null]}'


# ----------------------------------------------------------------------------- output sets
def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_outputs_write_all_or_none(tmp_path):
    paths = [tmp_path / "a_train.json", tmp_path / "a_val.json"]
    with pytest.raises(RuntimeError), atomic_outputs(paths) as out:
        out.write_json(paths[0], {"x": 1})
        raise RuntimeError("crash before the second file")
    assert listing(tmp_path) == []
    with atomic_outputs(paths) as out:
        out.write_json(paths[0], {"x": 1})
        out.write_json(paths[1], {"x": 2})
    assert listing(tmp_path) == ["a_train.json", "a_val.json"]
    with pytest.raises(GrapeInputError, match="a_train.json: output already exists"):
        with atomic_outputs(paths):
            pass


def test_a_failed_rename_puts_back_what_was_there(tmp_path, monkeypatch):
    """The second of three renames fails: the first output gets its old content back and
    the third (new) output does not appear."""
    paths = [tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"]
    paths[0].write_text("old a")
    paths[1].write_text("old b")
    real_replace, calls = os.replace, []

    def flaky_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.EIO, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", flaky_replace)
    with pytest.raises(GrapeInputError, match=r"b\.json: cannot write the output"):
        with atomic_outputs(paths, overwrite=True) as out:
            for p in paths:
                out.write_json(p, "new")
    monkeypatch.undo()
    assert paths[0].read_text() == "old a" and paths[1].read_text() == "old b"
    assert listing(tmp_path) == ["a.json", "b.json"]  # no temporary, no backup


def test_a_second_writer_waits_for_the_lock_then_sees_the_outputs(tmp_path):
    """Two writers of the same set without --overwrite: exactly one succeeds."""
    paths = [tmp_path / "s_train.json", tmp_path / "s_val.json"]
    second: dict = {}

    def writer():
        try:
            with atomic_outputs(paths) as out:
                for p in paths:
                    out.write_json(p, "second")
            second["result"] = "written"
        except GrapeInputError as e:
            second["result"] = str(e)

    with atomic_outputs(paths) as out:
        for p in paths:
            out.write_json(p, "first")
        thread = threading.Thread(target=writer)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive()  # blocked on the folder lock, not racing past the check
    thread.join(10)
    assert "s_train.json: output already exists" in second["result"]
    assert [json.loads(p.read_text()) for p in paths] == ["first", "first"]


# ----------------------------------------------------------------------------- bad locations
class FullDisk:
    """A file whose writes fail with ENOSPC once ``budget`` bytes are written."""

    def __init__(self, f, budget: int) -> None:
        self.f, self.budget = f, budget

    def write(self, data):
        self.budget -= len(data)
        if self.budget < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def simulate_full_disk(monkeypatch, budget: int = 200) -> None:
    """Every output opened by fileio (with open or os.fdopen) hits a full disk after
    ``budget`` bytes."""
    real_fdopen = os.fdopen
    monkeypatch.setattr(fileio, "open", lambda *a, **k: FullDisk(open(*a, **k), budget),
                        raising=False)
    monkeypatch.setattr(fileio.os, "fdopen",
                        lambda *a, **k: FullDisk(real_fdopen(*a, **k), budget))


def simulate_read_only(monkeypatch) -> None:
    """Temporaries cannot be created (as in a read-only folder: tests run as root, for whom
    chmod does not make a folder read-only)."""
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(fileio.tempfile, "mkstemp", refuse)
    monkeypatch.setattr(fileio.tempfile, "mkdtemp", refuse)


def _convert_main():
    spec = importlib.util.spec_from_file_location("convert_tool_fileio",
                                                  REPO / "tools" / "convert.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(autouse=True)
def log_streams_of_this_test():
    """Detectron2's setup_logger (cached) keeps the stream of the test that first called a
    tool's main in-process; point its handlers at this test's captured stdout."""
    for name in ("grape_instances", "detectron2", "d2", "fvcore"):
        for handler in logging.getLogger(name).handlers:
            if type(handler) is logging.StreamHandler:
                handler.stream = sys.stdout  # not setStream: it flushes the closed one


def _one_error_line(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def coco_input(tmp_path):
    src = tmp_path / "in" / "all.json"
    src.parent.mkdir()
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 8, "width": 8} for i in range(1, 11)]
    src.write_text(json.dumps({"images": images, "annotations": [], "categories": [
        {"id": 1, "name": "bunch"}]}))
    return src


@pytest.mark.parametrize("failure", ["full_disk", "read_only"])
def test_split_and_merge_on_a_full_disk_or_read_only_folder(coco_input, tmp_path, capsys,
                                                            monkeypatch, failure):
    main = _convert_main()
    out = tmp_path / "out"
    out.mkdir()
    (out / "all_train.json").write_text("previous split")
    (simulate_full_disk if failure == "full_disk" else simulate_read_only)(monkeypatch)
    reason = "No space left on device" if failure == "full_disk" else "Read-only file system"
    for argv in (["split", "--json", str(coco_input), "--out-dir", str(out), "--val", "0.3",
                  "--overwrite"],
                 ["merge", str(coco_input), "--out", str(out / "merged.json")]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 1
        _one_error_line(capsys, "cannot write the output", reason)
        # nothing partial: the old train file is intact, no val, no merged file, no temporary
        assert listing(out) == ["all_train.json"]
        assert (out / "all_train.json").read_text() == "previous split"


def test_bad_output_locations_through_convert(coco_input, tmp_path, capsys):
    """A parent that is a file, and --out / --out-dir that exist as a folder / a file: one
    line each, nothing written (the first through the real interpreter exit path)."""
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    folder = tmp_path / "folder"
    folder.mkdir()
    assert_user_error(run_tool("convert.py", "merge", str(coco_input), "--out",
                               str(blocker / "merged.json")), "file.txt is a file, not a folder")
    main = _convert_main()
    for argv, message in [
        (["merge", str(coco_input), "--out", str(folder), "--overwrite"],
         "output is an existing folder"),
        (["split", "--json", str(coco_input), "--out-dir", str(blocker)],
         "file.txt is a file, not a folder"),
        (["split", "--json", str(coco_input), "--out-dir", str(blocker / "sub")],
         "file.txt is a file, not a folder"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 1
        _one_error_line(capsys, message)
    assert listing(tmp_path) == ["file.txt", "folder", "in"]
    assert listing(folder) == [] and blocker.read_text() == "x"


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> Path:
    """An untrained checkpoint of the demo model: visualize's output handling does not
    depend on what the model learned, and building one is faster than training."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from grape_instances.data.build import build_config

    folder = tmp_path_factory.mktemp("weights")
    model = build_model(build_config(DEMO_CONFIG, ["MODEL.DEVICE", "cpu"]))
    DetectionCheckpointer(model, save_dir=str(folder)).save("random")
    return folder / "random.pth"


def _visualize_main():
    spec = importlib.util.spec_from_file_location("visualize_tool_fileio",
                                                  REPO / "tools" / "visualize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize("failure", ["parent_is_a_file", "single_file_parent_is_a_file",
                                     "full_disk", "read_only"])
def test_bad_output_locations_through_visualize(random_weights, tmp_path, capsys,
                                                monkeypatch, failure):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg"):
        cv2.imwrite(str(photos / name), np.full((64, 80, 3), 90, np.uint8))
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    output = {"parent_is_a_file": blocker / "vis",
              "single_file_parent_is_a_file": blocker / "one.png"}.get(failure, tmp_path / "vis")
    inputs = [str(photos / "a.jpg")] + ([str(photos / "b.jpg")] if failure != "single_file_"
                                        "parent_is_a_file" else [])
    if failure == "full_disk":
        simulate_full_disk(monkeypatch, budget=100)
    elif failure == "read_only":
        simulate_read_only(monkeypatch)
    with pytest.raises(SystemExit) as e:
        _visualize_main()(["--config-file", DEMO_CONFIG, "--input", *inputs, "--output",
                           str(output), "--opts", "MODEL.WEIGHTS", str(random_weights),
                           "MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "64"])
    assert e.value.code == 1
    reason = {"full_disk": "No space left on device", "read_only": "Read-only file system"}
    _one_error_line(capsys, "cannot write the output", reason.get(failure, "is a file"))
    assert listing(tmp_path) == ["file.txt", "photos"]  # no output folder, no temporary
    assert listing(photos) == ["a.jpg", "b.jpg"] and blocker.read_text() == "x"


def test_visualize_skips_bad_images_and_fails_only_when_none_is_drawn(random_weights,
                                                                      tmp_path, capsys):
    """One unreadable image is a counted warning and the rest are written (exit 0); when no
    image can be drawn it is one line, exit 1, and no output folder."""
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "good.jpg"), np.full((64, 80, 3), 90, np.uint8))
    (photos / "broken.jpg").write_bytes((photos / "good.jpg").read_bytes()[:100])
    (photos / "empty.jpg").write_bytes(b"")
    opts = ["--opts", "MODEL.WEIGHTS", str(random_weights), "MODEL.DEVICE", "cpu",
            "INPUT.MIN_SIZE_TEST", "64"]
    main = _visualize_main()
    main(["--config-file", DEMO_CONFIG, "--input", str(photos), "--output",
          str(tmp_path / "vis"), *opts])
    assert listing(tmp_path / "vis") == ["coco_results.json", "coco_results_images.json",
                                         "good.png"]
    # the images predicted (with or without a detection) and the class names, for
    # from-predictions and measure: the unreadable ones were not predicted
    listed = json.loads((tmp_path / "vis" / "coco_results_images.json").read_text())
    assert [i["file_name"] for i in listed["images"]] == [str(photos / "good.jpg")]
    assert [c["name"] for c in listed["categories"]] == ["bunch"]
    assert "skipped 2 unreadable image(s)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["--config-file", DEMO_CONFIG, "--input", str(photos / "broken.jpg"),
              str(photos / "empty.jpg"), "--output", str(tmp_path / "none"), *opts])
    assert e.value.code == 1
    _one_error_line(capsys, "no image could be drawn", "(and 1 more)")
    assert not (tmp_path / "none").exists()


# ----------------------------------------------------------------------------- issue 18 probes
LONG = "n" * 300  # longer than any file system's 255-byte name limit


@pytest.fixture
def annotation_inputs(tmp_path):
    """A VIA project, a labelme file, a COCO JSON and a results list over two tiny images."""
    from tests import test_fuzz

    images = tmp_path / "images"
    images.mkdir()
    h, w = test_fuzz.IMAGE_SIZE
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(images / name), np.full((h, w, 3), 90, np.uint8))
    sizes = {n: (images / n).stat().st_size for n in ("a.png", "b.png")}
    files = {"via": tmp_path / "via.json", "labelme": images / "a.json",
             "coco": tmp_path / "coco.json", "results": tmp_path / "results.json"}
    files["via"].write_text(json.dumps(test_fuzz.via2_project(sizes)))
    files["labelme"].write_text(json.dumps(test_fuzz.labelme_file()))
    files["coco"].write_text(json.dumps(test_fuzz.coco_file()))
    files["results"].write_text(json.dumps(test_fuzz.results_file()))
    return tmp_path, files


def _convert_argvs(root: Path, files: dict, out: dict) -> dict[str, list[str]]:
    """Each writing subcommand with its outputs from ``out`` (``via``, ``labelme``,
    ``merge``, ``split``: a folder, ``from-predictions``)."""
    images = str(root / "images")
    return {
        "via": ["via", "--via", str(files["via"]), "--images", images, "--out",
                str(out["via"])],
        "labelme": ["labelme", "--input", str(files["labelme"]), "--root", images, "--out",
                    str(out["labelme"])],
        "merge": ["merge", str(files["coco"]), "--out", str(out["merge"])],
        "split": ["split", "--json", str(files["coco"]), "--out-dir", str(out["split"]),
                  "--val", "0.5"],
        "from-predictions": ["from-predictions", "--results", str(files["results"]), "--coco",
                             str(files["coco"]), "--images", images, "--via-out",
                             str(out["from-predictions"])],
    }


@pytest.mark.parametrize("command", ["via", "labelme", "merge", "from-predictions"])
def test_an_output_that_is_an_input_is_refused_even_with_overwrite(annotation_inputs, capsys,
                                                                   command):
    root, files = annotation_inputs
    own = {"via": files["via"], "labelme": files["labelme"], "merge": files["coco"],
           "from-predictions": files["results"], "split": root / "split"}
    argv = _convert_argvs(root, files, own)[command] + ["--overwrite"]
    before = {k: p.read_bytes() for k, p in files.items()}
    with pytest.raises(SystemExit) as e:
        _convert_main()(argv)
    assert e.value.code == 1
    _one_error_line(capsys, "the output is also an input")
    assert {k: p.read_bytes() for k, p in files.items()} == before


def test_a_hard_link_to_an_input_is_the_input(annotation_inputs, capsys):
    root, files = annotation_inputs
    os.link(files["coco"], root / "alias.json")
    with pytest.raises(SystemExit):
        _convert_main()(["merge", str(files["coco"]), "--out", str(root / "alias.json"),
                         "--overwrite"])
    _one_error_line(capsys, "alias.json: the output is also an input")


@pytest.mark.parametrize("command", ["via", "labelme", "merge", "split", "from-predictions"])
def test_output_names_too_long_are_one_line_in_convert(annotation_inputs, capsys, command):
    root, files = annotation_inputs
    out = {"via": root / f"{LONG}.json", "labelme": root / LONG / "x.json",
           "merge": root / f"{LONG}.json", "split": root / LONG,
           "from-predictions": root / f"{LONG}.json"}
    with pytest.raises(SystemExit) as e:
        _convert_main()(_convert_argvs(root, files, out)[command])
    assert e.value.code == 1
    line = _one_error_line(capsys, "cannot write the output", "file name too long")
    assert len(line) < 400  # the name is shortened in the message
    assert sorted(p.name for p in root.iterdir()) == ["coco.json", "images", "results.json",
                                                      "via.json"]


def simulate_immutable(monkeypatch, target: Path) -> None:
    """``target`` cannot be replaced or linked (an immutable file, or a read-only bind mount
    over it): os.replace and os.link onto / from it fail with EPERM, as chattr +i makes
    them fail."""
    real_replace, real_link = os.replace, os.link

    def replace(src, dst):
        if Path(dst) == target or Path(src) == target:
            raise OSError(errno.EPERM, "Operation not permitted")
        return real_replace(src, dst)

    def link(src, dst):
        if Path(src) == target:
            raise OSError(errno.EPERM, "Operation not permitted")
        return real_link(src, dst)

    monkeypatch.setattr(fileio.os, "replace", replace)
    monkeypatch.setattr(fileio.os, "link", link)


@pytest.mark.parametrize("command", ["merge", "split", "via"])
def test_an_output_that_cannot_be_replaced_is_one_line(annotation_inputs, capsys, monkeypatch,
                                                       command):
    root, files = annotation_inputs
    out = {"via": root / "out.json", "merge": root / "out.json", "split": root / "split",
           "labelme": root / "out.json", "from-predictions": root / "out.json"}
    target = root / "split" / "coco_val.json" if command == "split" else root / "out.json"
    target.parent.mkdir(exist_ok=True)
    target.write_text("old")
    simulate_immutable(monkeypatch, target)
    with pytest.raises(SystemExit) as e:
        _convert_main()(_convert_argvs(root, files, out)[command] + ["--overwrite"])
    assert e.value.code == 1
    _one_error_line(capsys, "cannot write the output", "cannot be replaced")
    assert target.read_text() == "old"
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]


def test_a_folder_that_cannot_be_replaced_is_one_line(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.png").write_text("old")
    real_replace = os.replace

    def busy(src, dst):  # a mount point cannot be renamed
        if Path(src) == out:
            raise OSError(errno.EBUSY, "Device or resource busy")
        return real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", busy)
    with pytest.raises(GrapeInputError, match="out: cannot write the output .*busy"):
        with replacing_folder(out) as tmp:
            (tmp / "new.png").write_text("new")
    assert listing(tmp_path) == ["out"] and listing(out) == ["old.png"]


def test_visualize_refuses_an_output_naming_its_input_photo(random_weights, tmp_path, capsys):
    photo = tmp_path / "a.png"
    cv2.imwrite(str(photo), np.full((64, 80, 3), 90, np.uint8))
    before = photo.read_bytes()
    for output in (photo, tmp_path / "A" / ".." / "a.png"):
        with pytest.raises(SystemExit) as e:
            _visualize_main()(["--config-file", DEMO_CONFIG, "--input", str(photo), "--output",
                               str(output), "--opts", "MODEL.WEIGHTS", str(random_weights),
                               "MODEL.DEVICE", "cpu"])
        assert e.value.code == 1
        _one_error_line(capsys, "the output is also an input")
    assert photo.read_bytes() == before


@pytest.mark.parametrize("output", ["folder", "file"])
def test_visualize_output_names_too_long_are_one_line(random_weights, tmp_path, capsys,
                                                      output):
    photo = tmp_path / "a.png"
    cv2.imwrite(str(photo), np.full((64, 80, 3), 90, np.uint8))
    target = tmp_path / (LONG if output == "folder" else f"{LONG}.png")
    with pytest.raises(SystemExit) as e:
        _visualize_main()(["--config-file", DEMO_CONFIG, "--input", str(photo), "--output",
                           str(target), "--opts", "MODEL.WEIGHTS", str(random_weights),
                           "MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "64"])
    assert e.value.code == 1
    _one_error_line(capsys, "file name too long")
    assert listing(tmp_path) == ["a.png"]


def test_measure_and_fit_weight_output_names_too_long_are_one_line(annotation_inputs, capsys):
    from grape_instances.measure.weight import fit_weight_model

    root, files = annotation_inputs
    spec = importlib.util.spec_from_file_location("measure_tool_fileio",
                                                  REPO / "tools" / "measure.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    for out in ([f"--out={root / LONG}.csv"],
                ["--out", str(root / "t.csv"), "--overlays", str(root / LONG)]):
        with pytest.raises(SystemExit) as e:
            tool.main(["--coco", str(files["coco"]), "--images", str(root / "images"), *out])
        assert e.value.code == 1
        _one_error_line(capsys, "file name too long")
    (root / "t.csv").write_text("image,area_px\na.png,10\n")
    (root / "w.csv").write_text("image,weight_g\na.png,10\n")
    with pytest.raises(GrapeInputError, match="file name too long"):
        fit_weight_model(root / "t.csv", root / "w.csv", root / LONG, folds=2)
    with pytest.raises(GrapeInputError, match="the output is also an input"):
        fit_weight_model(root / "t.csv", root / "w.csv", root / "t.csv", folds=2)
