"""The column-strip RLE encoder and the COCO results built with it are exactly pycocotools'
and Detectron2's (issue 17: the same results file, less work per photo)."""

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from grape_instances.core.masks import mask_to_rle


def pycocotools_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def edge_masks() -> list[np.ndarray]:
    """Empty, full, and masks that touch the first / last pixel, row or column."""
    masks = [np.zeros((6, 9), bool), np.ones((6, 9), bool), np.zeros((1, 1), bool),
             np.ones((1, 1), bool)]
    for y, x in ((0, 0), (5, 8), (0, 8), (5, 0), (3, 4)):
        m = np.zeros((6, 9), bool)
        m[y, x] = True
        masks.append(m)
    for sl in (np.s_[:, :1], np.s_[:, -1:], np.s_[:1, :], np.s_[-1:, :], np.s_[:, 2:5]):
        m = np.zeros((6, 9), bool)
        m[sl] = True
        masks.append(m)
    return masks


def random_masks(n: int = 400) -> list[np.ndarray]:
    """Rectangles of random density at random places, holes and several pieces included."""
    rng = np.random.default_rng(0)
    masks = []
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        m = np.zeros((h, w), bool)
        y0, y1 = sorted(rng.integers(0, h + 1, 2))
        x0, x1 = sorted(rng.integers(0, w + 1, 2))
        m[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < rng.random()
        masks.append(m)
    return masks


@pytest.mark.parametrize("dtype", [bool, np.uint8])
def test_mask_to_rle_is_pycocotools_encode(dtype):
    for mask in edge_masks() + random_masks():
        assert mask_to_rle(mask.astype(dtype)) == pycocotools_rle(mask), mask.astype(int)


def test_instances_to_coco_results_is_detectron2s():
    from detectron2.evaluation.coco_evaluation import instances_to_coco_json
    from detectron2.structures import Boxes, Instances

    from grape_instances.inference.coco_results import instances_to_coco_results

    rng = np.random.default_rng(1)
    masks = np.zeros((5, 60, 80), bool)
    for k, (y, x) in enumerate(rng.integers(0, 50, (5, 2))):
        masks[k, y:y + 10 + k, x:x + 7] = rng.random((10 + k, 7)) < 0.8
    masks[4] = False  # an empty mask encodes too
    inst = Instances((60, 80), pred_boxes=Boxes(torch.rand(5, 4) * 50),
                     scores=torch.rand(5), pred_classes=torch.tensor([0, 1, 0, 2, 0]),
                     pred_masks=torch.from_numpy(masks))
    ours = instances_to_coco_results(inst, 7)
    assert ours == instances_to_coco_json(inst, 7)
    assert [list(r) for r in ours] == [list(r) for r in instances_to_coco_json(inst, 7)]
    assert inst.has("pred_masks")  # the caller's Instances are left as they were
    boxes_only = Instances((60, 80), pred_boxes=inst.pred_boxes, scores=inst.scores,
                           pred_classes=inst.pred_classes)
    assert instances_to_coco_results(boxes_only, 7) == instances_to_coco_json(boxes_only, 7)
    assert instances_to_coco_results(inst[:0], 7) == []
