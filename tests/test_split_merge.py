"""split (by image, deterministic, grouped) and merge (renumbered ids, label map, rebase)."""

import json
import re
import threading
import time

import pytest

from grape_instances.convert.split import (
    assign_splits,
    merge_coco_files,
    read_label_map,
    split_coco_file,
)
from grape_instances.core.errors import GrapeInputError


def make_coco(n_images=20, category="bunch", prefix="img", plants=5):
    images, anns = [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "file_name": f"{prefix}_{i:03d}.jpg", "height": 10,
                       "width": 10, "plant": f"p{i % plants}"})
        for k in range(i % 3 + 1):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1,
                         "bbox": [0, 0, 2 + k, 2], "area": 4.0 + k, "iscrowd": 0,
                         "segmentation": [[0, 0, 2, 0, 2, 2]]})
    return {"info": {}, "licenses": [], "images": images, "annotations": anns,
            "categories": [{"id": 1, "name": category}]}


@pytest.fixture
def coco_file(tmp_path):
    path = tmp_path / "all.json"
    path.write_text(json.dumps(make_coco()))
    return path


def load(path):
    return json.loads(path.read_text())


def test_split_by_image_fractions_and_annotations_follow(coco_file, tmp_path):
    paths = split_coco_file(coco_file, tmp_path / "out", val=0.2, test=0.1, seed=3)
    parts = {s: load(p) for s, p in paths.items()}
    sizes = {s: len(d["images"]) for s, d in parts.items()}
    assert sizes == {"train": 14, "val": 4, "test": 2}
    ids = [img["id"] for d in parts.values() for img in d["images"]]
    assert sorted(ids) == list(range(1, 21))  # disjoint and complete, ids kept
    total = load(coco_file)
    assert sum(len(d["annotations"]) for d in parts.values()) == len(total["annotations"])
    for d in parts.values():
        own = {img["id"] for img in d["images"]}
        assert all(a["image_id"] in own for a in d["annotations"])
        assert d["categories"] == total["categories"]
    assert paths["val"].name == "all_val.json"


def test_split_is_deterministic_and_seed_dependent(coco_file):
    images = load(coco_file)["images"]
    first = assign_splits(images, 0.25, seed=7)
    again = assign_splits(images, 0.25, seed=7)
    other = assign_splits(images, 0.25, seed=8)
    ids = lambda s: [i["id"] for i in s["val"]]  # noqa: E731
    assert ids(first) == ids(again)
    assert ids(first) != ids(other)


def test_group_by_keeps_images_of_a_key_together(coco_file, tmp_path):
    paths = split_coco_file(coco_file, tmp_path / "g", val=0.2, seed=1, group_by="plant")
    plants = {s: {img["plant"] for img in load(p)["images"]} for s, p in paths.items()}
    assert plants["train"].isdisjoint(plants["val"])
    assert plants["val"] and plants["train"]


def test_split_errors_and_no_partial_output(coco_file, tmp_path):
    out = tmp_path / "o"
    with pytest.raises(GrapeInputError, match="fractions"):
        split_coco_file(coco_file, out, val=0.7, test=0.4)
    with pytest.raises(GrapeInputError, match="no image record has the key 'farm'"):
        split_coco_file(coco_file, out, group_by="farm")
    out.mkdir(exist_ok=True)
    (out / "all_val.json").write_text("old")
    with pytest.raises(GrapeInputError, match="already exists"):
        split_coco_file(coco_file, out)
    assert not (out / "all_train.json").exists()  # nothing written before the refusal
    split_coco_file(coco_file, out, overwrite=True)
    assert load(out / "all_val.json")["images"]


def test_merge_renumbers_and_maps_labels(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(make_coco(3, "bunch", "a")))
    b.write_text(json.dumps(make_coco(2, "grape cluster", "b")))
    label_map = tmp_path / "map.txt"
    label_map.write_text("# unify names\ngrape cluster: bunch\n")
    merged = merge_coco_files([a, b], tmp_path / "m.json", label_map_file=label_map)
    assert merged == load(tmp_path / "m.json")
    assert [c["name"] for c in merged["categories"]] == ["bunch"]
    assert [i["id"] for i in merged["images"]] == [1, 2, 3, 4, 5]
    assert [x["id"] for x in merged["annotations"]] == list(range(1, 6 + 5 + 1))
    names = {i["id"]: i["file_name"] for i in merged["images"]}
    # annotations still belong to the image they came from (b's first image has 2)
    b_first = [x for x in merged["annotations"] if names[x["image_id"]] == "b_001.jpg"]
    assert len(b_first) == 2
    unmapped = merge_coco_files([a, b], tmp_path / "u.json")
    assert [c["name"] for c in unmapped["categories"]] == ["bunch", "grape cluster"]


def test_merge_rebases_file_names_and_refuses_duplicates(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(make_coco(2, prefix="x")))
    b.write_text(json.dumps(make_coco(2, prefix="x")))
    with pytest.raises(GrapeInputError, match="also in"):
        merge_coco_files([a, b], tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()
    merged = merge_coco_files([a, b], tmp_path / "m.json", image_dirs=[tmp_path / "A",
                              tmp_path / "B/imgs"], image_root=tmp_path)
    assert [i["file_name"] for i in merged["images"]] == [
        "A/x_001.jpg", "A/x_002.jpg", "B/imgs/x_001.jpg", "B/imgs/x_002.jpg"]
    with pytest.raises(GrapeInputError, match="2 folders for 1 input"):
        merge_coco_files([a], tmp_path / "n.json", image_dirs=["A", "B"], image_root=".")


def test_label_map_format_errors(tmp_path):
    bad = tmp_path / "map.txt"
    bad.write_text("just a name\n")
    with pytest.raises(GrapeInputError, match="line 1"):
        read_label_map(bad)
    good = tmp_path / "map.json"
    good.write_text(json.dumps({"a": "b"}))
    assert read_label_map(good) == {"a": "b"}
    (tmp_path / "x.json").write_text("[1]")
    with pytest.raises(GrapeInputError, match="must map names"):
        read_label_map(tmp_path / "x.json")


def test_two_concurrent_splits_cannot_both_succeed(coco_file, tmp_path, monkeypatch):
    """Two splits of one file into one folder with different seeds, without --overwrite:
    one writes a consistent train / val pair, the other sees "output already exists"
    (the issue measured both succeeding and train / val from different runs)."""
    import grape_instances.convert.split as split_module

    real_subset = split_module.subset

    def slow_subset(*args):  # widen the window between the existence check and the rename
        time.sleep(0.2)
        return real_subset(*args)

    monkeypatch.setattr(split_module, "subset", slow_subset)
    out = tmp_path / "o"
    results: dict[int, str] = {}

    def run(seed: int) -> None:
        try:
            split_coco_file(coco_file, out, val=0.3, seed=seed)
            results[seed] = "ok"
        except GrapeInputError as e:
            results[seed] = str(e)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r == "ok" for r in results.values()) == [False, True], results
    assert "output already exists" in [r for r in results.values() if r != "ok"][0]
    train, val = load(out / "all_train.json"), load(out / "all_val.json")
    assert train["info"]["split_seed"] == val["info"]["split_seed"]
    ids = [img["id"] for img in train["images"] + val["images"]]
    assert sorted(ids) == list(range(1, 21))  # one run's partition, nothing twice


@pytest.mark.parametrize("change, message", [
    (lambda d: d["categories"][0].update(id={"1": 1}), "category #0 has id {'1': 1}"),
    (lambda d: d.update(categories=[["bunch", 1]]), "category #0 is not an object"),
    (lambda d: d["images"][3].update(id=[4]), "image #3 has id [4]"),
    (lambda d: d["annotations"][0].update(category_id=None), "annotation #0 has category_id "
                                                              "None"),
    (lambda d: d["annotations"][1].pop("id"), "annotation #1 has no 'id'"),
    (lambda d: d["images"][0].update(id=True), "image #0 has id True"),
])
def test_split_and_merge_refuse_ids_pycocotools_cannot_index(tmp_path, change, message):
    """Dict / list ids and list categories crashed split and merge (TypeError,
    AttributeError) or gave outputs pycocotools' COCO() refuses: now one line each."""
    data = make_coco()
    change(data)
    path = tmp_path / "all.json"
    path.write_text(json.dumps(data))
    with pytest.raises(GrapeInputError, match=re.escape(f"{path}: {message}")):
        split_coco_file(path, tmp_path / "o")
    with pytest.raises(GrapeInputError, match=re.escape(f"{path}: {message}")):
        merge_coco_files([path], tmp_path / "m.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.json"]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_split_and_merge_never_pass_non_standard_json_through(tmp_path, value):
    path = tmp_path / "all.json"
    path.write_text(json.dumps(make_coco()).replace('"area": 4.0', f'"area": {value}', 1))
    with pytest.raises(GrapeInputError, match="all.json: .*(not standard JSON|out of range)"):
        split_coco_file(path, tmp_path / "o")
    with pytest.raises(GrapeInputError, match="all.json: .*(not standard JSON|out of range)"):
        merge_coco_files([path], tmp_path / "m.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.json"]

