"""One CocoBuilder with a pluggable store, and format readers that compose in memory."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from grape_instances.convert.coco import CocoBuilder, MemoryStore, SpoolStore
from grape_instances.convert.via import convert_via, read_via
from grape_instances.core.errors import GrapeInputError
from grape_instances.core.fileio import atomic_outputs
from grape_instances.core.warning_counter import WarningCounter


def _fill(builder: CocoBuilder) -> None:
    first = builder.add_image("a.jpg", 20, 30, subset="x")
    builder.add_image("b.jpg", 10, 10)
    mask = np.zeros((20, 30), np.uint8)
    mask[2:8, 3:12] = 1
    builder.add_annotation(first, mask=mask)
    builder.add_annotation(2, polygons=[[1, 1, 8, 1, 8, 8, 1, 8]], keep_polygons=True,
                           category="other")
    assert builder.add_annotation(2, polygons=[[1, 1, 1, 1, 1, 1]]) is None  # no pixel


def test_memory_and_spool_stores_write_the_same_dataset(tmp_path):
    written = {}
    for name, store in (("memory", MemoryStore()), ("spool", SpoolStore())):
        with CocoBuilder(source="t", store=store) as b:
            _fill(b)
            assert (b.num_images, b.num_annotations) == (2, 2)
            assert b.image_size(1) == (20, 30)
            b.info["date_created"] = "fixed"
            b.write(tmp_path / f"{name}.json")
            written[name] = json.loads((tmp_path / f"{name}.json").read_text())
            assert b.to_dict() == written[name]  # the spool reads its records back
            assert b.summary(WarningCounter())["annotations"] == 2
    assert written["memory"] == written["spool"]
    d = written["spool"]
    assert [a["id"] for a in d["annotations"]] == [1, 2]
    assert d["annotations"][0]["area"] == 54 and d["annotations"][0]["bbox"] == [3, 2, 9, 6]
    assert isinstance(d["annotations"][1]["segmentation"], list)
    assert [c["name"] for c in d["categories"]] == ["bunch", "other"]
    assert d["images"][0]["subset"] == "x"


@pytest.mark.parametrize("store", [MemoryStore, SpoolStore])
def test_write_is_atomic_alone_and_in_an_output_set(tmp_path, store):
    with CocoBuilder(["bunch"], store=store()) as b:
        _fill_one(b)
        b.write(tmp_path / "one.json")
        with pytest.raises(GrapeInputError, match="already exists"):
            b.write(tmp_path / "one.json")
        with pytest.raises(RuntimeError):  # a failure later in the set writes nothing
            with atomic_outputs([tmp_path / "two.json", tmp_path / "side.txt"]) as out:
                b.write(tmp_path / "two.json", outputs=out)
                raise RuntimeError("later output failed")
        assert not (tmp_path / "two.json").exists()
        with atomic_outputs([tmp_path / "two.json", tmp_path / "side.txt"]) as out:
            b.write(tmp_path / "two.json", outputs=out)
            out.write_json(tmp_path / "side.txt", {})
    assert json.loads((tmp_path / "two.json").read_text())["images"][0]["file_name"] == "a.jpg"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.json", "side.txt", "two.json"]


def _fill_one(builder: CocoBuilder) -> None:
    builder.add_image("a.jpg", 4, 4)


@pytest.mark.parametrize("store", [MemoryStore, SpoolStore])
def test_nan_is_refused_in_one_line_and_nothing_is_written(tmp_path, store):
    with CocoBuilder(["bunch"], store=store()) as b:
        with pytest.raises(GrapeInputError, match="NaN"):
            b.add_image("a.jpg", 4, 4, weight_g=math.nan)
            b.write(tmp_path / "out.json")
    assert not list(tmp_path.iterdir())


def test_spool_files_are_closed_when_a_conversion_fails():
    store = SpoolStore()
    with pytest.raises(RuntimeError), CocoBuilder(["bunch"], store=store) as b:
        _fill_one(b)
        raise RuntimeError("halfway")
    assert store._images.file.closed and store._annotations.file.closed


def test_via_reader_returns_records_in_memory_and_convert_via_writes_them(tmp_path):
    images = tmp_path / "img"
    images.mkdir()
    assert cv2.imwrite(str(images / "p.png"), np.zeros((40, 50, 3), np.uint8))
    region = {"shape_attributes": {"name": "polygon", "all_points_x": [5, 30, 30, 5],
                                   "all_points_y": [5, 5, 20, 20]},
              "region_attributes": {"kind": "bunch"}}
    line = {"shape_attributes": {"name": "polyline", "all_points_x": [1, 2],
                                 "all_points_y": [1, 2]}, "region_attributes": {}}
    via = tmp_path / "via.json"
    via.write_text(json.dumps({"p.png-1": {"filename": "p.png", "size": -1,
                                           "regions": [region, line]}}))
    records = read_via(via, images, label_attr="kind")
    assert records.categories == ["bunch"]
    [rec] = list(records.images)
    assert (rec.file_name, rec.height, rec.width) == ("p.png", 40, 50)
    [inst] = rec.instances
    assert inst.category == "bunch" and inst.mask is None
    assert inst.polygons == [[5.0, 5.0, 30.0, 5.0, 30.0, 20.0, 5.0, 20.0]]
    assert records.warnings.as_dict()  # the polyline was counted while reading
    summary = convert_via(via, images, tmp_path / "out.json", label_attr="kind",
                          keep_polygons=True)
    coco = json.loads((tmp_path / "out.json").read_text())
    assert summary["annotations"] == 1 and coco["annotations"][0]["segmentation"] == \
        inst.polygons
