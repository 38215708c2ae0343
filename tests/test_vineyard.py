"""Photo-like vineyard rows: 3:2 frames, many small bunches, silhouette masks, COCO export."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from grape_instances.convert.validate import validate_coco_file
from grape_instances.core import paths as layout
from grape_instances.core.errors import GrapeInputError
from grape_instances.synthetic.export import generate_vineyard_dataset
from grape_instances.synthetic.render import _Canvas, image_rng
from grape_instances.synthetic.vineyard import (
    VineyardConfig,
    _silhouettes,
    render_vineyard_scene,
)
from tests.helpers import assert_user_error, run_tool

CFG = VineyardConfig()


@pytest.fixture(scope="module")
def scenes():
    return [render_vineyard_scene(image_rng(0, "vineyard-train", i), CFG) for i in range(6)]


def _discs(canvas: _Canvas, centres, radius: int) -> np.ndarray:
    """Flat indices of separate berries (discs) with background showing between them."""
    m = np.zeros((canvas.h, canvas.w), np.uint8)
    for x, y in centres:
        cv2.circle(m, (x, y), radius, 1, -1)
    return np.flatnonzero(m)


def test_silhouette_closes_the_gaps_between_berries_and_leaves_out_what_is_in_front():
    canvas = _Canvas(48, 72, debug=False)
    grid = [(x, y) for x in range(8, 27, 6) for y in range(8, 33, 6)]  # radius 2: 1-2 px gaps
    first = _discs(canvas, grid, 2)
    canvas.paint(first, np.ones(3, np.float32), "bunch", 1)
    columns = np.broadcast_to(np.arange(72), (48, 72))
    leaf = np.flatnonzero((columns >= 22) & (columns < 26))  # a strip over bunch 1's right
    canvas.paint(leaf, np.ones(3, np.float32), "leaf")
    second = _discs(canvas, [(x + 20, y + 4) for x, y in grid], 2)
    canvas.paint(second, np.ones(3, np.float32), "bunch", 2)
    infos = [{"berry_radius": 2.0}, {"berry_radius": 2.0}]
    m1, m2 = _silhouettes(canvas, infos, CFG)

    assert np.intersect1d(m1, m2).size == 0  # one owner per pixel
    assert np.intersect1d(m1, leaf).size == 0  # the leaf painted later hides bunch 1
    assert np.setdiff1d(second, m2).size == 0  # nothing in front of bunch 2
    # The gap pixel between two berries of bunch 1 (x = 11, between 8 and 14) is in its mask,
    # though no berry was painted there: an annotator's polygon covers it too.
    gap = 14 * 72 + 11
    assert gap not in first and gap in m1
    # Far from the leaf and bunch 2, the silhouette is the closed berry union: more than the
    # berries, but no wider than the grid (closing does not dilate).
    left = m1[m1 % 72 < 18]
    assert left.size > first[first % 72 < 18].size
    assert (left % 72).min() >= 6 and (left // 72).max() <= 34


def test_scenes_are_3_by_2_with_many_small_disjoint_bunches(scenes):
    counts = [len(s.masks) for s in scenes]
    assert all(s.image.shape == (683, 1024, 3) and s.image.dtype == np.uint8 for s in scenes)
    assert np.mean(counts) >= 8 and max(counts) <= CFG.max_bunches
    heights = []
    for s in scenes:
        stack = np.stack(s.masks).astype(np.int32)
        assert stack.sum(0).max() == 1  # disjoint
        assert all(m.sum() >= CFG.min_area for m in s.masks)
        for k, m in enumerate(s.masks, start=1):
            assert np.array_equal(s.label_map == k, m)
            ys = np.nonzero(m.any(1))[0]
            heights.append(ys.max() - ys.min() + 1)
        assert len(s.bunches) == len(s.masks) and s.background == "vineyard"
    # WGISD-like: most bunches are a small part of the frame (here 40-165 px of 683).
    assert np.median(heights) < 0.2 * 683


def test_closing_over_a_berry_width_fills_the_notches_between_berries(scenes):
    """The same scene without the closing: scalloped masks, a little smaller, longer outline."""
    tight = VineyardConfig(close_berries=0.0)
    closed, open_ = scenes[0], render_vineyard_scene(image_rng(0, "vineyard-train", 0), tight)
    assert np.array_equal(closed.image, open_.image)  # same draws, only the masks differ
    assert len(closed.masks) == len(open_.masks)

    def area(masks):
        return sum(int(m.sum()) for m in masks)

    def outline(masks):
        return sum(cv2.arcLength(c, True) for m in masks for c in cv2.findContours(
            m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0])

    # Visible berry pixels stay in some mask (a later bunch's silhouette may take them); the
    # smallest closing (3 px) can reach a few pixels the berry-wide one does not.
    lost = np.any(open_.masks, axis=0) & ~np.any(closed.masks, axis=0)
    assert lost.sum() <= 1e-3 * area(open_.masks)
    assert area(closed.masks) > 1.01 * area(open_.masks)
    assert outline(closed.masks) < 0.97 * outline(open_.masks)


def test_scenes_hold_the_vineyard_and_camera_artefacts(scenes):
    """Sky at the top, ground at the bottom, blur and JPEG: no hard synthetic edges."""
    img = scenes[0].image.astype(np.float32)
    hsv = cv2.cvtColor(scenes[0].image, cv2.COLOR_BGR2HSV)
    assert hsv[-60:, :, 0].mean() < 40  # straw, grass or soil: not blue sky at the bottom
    # Neighbouring-pixel steps stay small: the camera blurred and compressed the frame.
    assert np.abs(np.diff(img, axis=1)).mean() < 12
    same = render_vineyard_scene(image_rng(0, "vineyard-train", 0), CFG)
    assert np.array_equal(same.image, scenes[0].image)  # reproducible per seed
    other = render_vineyard_scene(image_rng(1, "vineyard-train", 0), CFG)
    assert not np.array_equal(other.image, scenes[0].image)


def test_bad_config_is_one_line():
    with pytest.raises(GrapeInputError, match="p_front_leaf=2 is not a probability"):
        VineyardConfig(p_front_leaf=2)
    with pytest.raises(GrapeInputError, match=r"jpeg_quality \(90, 10\)"):
        VineyardConfig(jpeg_quality=(90, 10))


def test_export_writes_coco_equal_to_the_rendered_masks(tmp_path):
    small = VineyardConfig(height=200, width=300, min_bunches=3, max_bunches=6)
    written = generate_vineyard_dataset(tmp_path, {"train": 2}, seed=3, cfg=small)
    coco_path = layout.coco_json(tmp_path, "train")
    assert written["train"]["coco"] == coco_path
    assert validate_coco_file(coco_path, layout.images_dir(tmp_path, "train"), deep=True).ok
    coco = COCO(str(coco_path))
    for img in coco.dataset["images"]:
        assert (img["height"], img["width"]) == (200, 300)
        photo = cv2.imread(str(layout.images_dir(tmp_path, "train") / img["file_name"]))
        assert photo.shape == (200, 300, 3)
        index = int(img["file_name"][len("train_"):-4])
        scene = render_vineyard_scene(image_rng(3, "vineyard-train", index), small)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        assert len(anns) == len(scene.masks) >= 1
        for ann, mask in zip(anns, scene.masks, strict=True):
            assert np.array_equal(coco.annToMask(ann).astype(bool), mask)
            assert ann["area"] == pytest.approx(mask_utils.area(mask_utils.encode(
                np.asfortranarray(mask.astype(np.uint8)))), abs=1)
    with pytest.raises(GrapeInputError, match="not empty"):
        generate_vineyard_dataset(tmp_path, {"train": 1}, cfg=small)
    generate_vineyard_dataset(tmp_path, {"train": 1}, cfg=small, overwrite=True)
    assert [p.name for p in layout.images_dir(tmp_path, "train").iterdir()] == ["train_00000.jpg"]


@pytest.mark.slow
def test_make_synthetic_vineyard_mode_writes_the_rows_and_refuses_a_tiny_frame(tmp_path):
    out = tmp_path / "rows"
    proc = run_tool("make_synthetic.py", "--vineyard", "--train", "2", "--val", "1",
                    "--frame", "240x160", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"synthetic vineyard rows -> {out} | train: 2 images" in proc.stdout
    for split, n in (("train", 2), ("val", 1)):
        coco = COCO(str(layout.coco_json(out, split)))
        assert len(coco.dataset["images"]) == n
        assert {(i["width"], i["height"]) for i in coco.dataset["images"]} == {(240, 160)}
    assert_user_error(run_tool("make_synthetic.py", "--vineyard", "--frame", "48x32",
                               "--out", str(tmp_path / "tiny")), "vineyard config",
                      "below 64 px")
