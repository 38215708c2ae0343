"""The exported-vs-eager check (tools/runtime_accuracy.py): agreement and AP on hand-made
detections, where the answer is known."""

import json

import numpy as np
from pycocotools import mask as mask_utils

from grape_instances.experiments.runtime_accuracy import _quiet_coco, agreement, segm_ap


def _rle(x0, y0, x1, y1, size=(40, 60)):
    m = np.zeros(size, np.uint8)
    m[y0:y1, x0:x1] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode()
    return rle


def _det(image_id, box, score):
    return {"image_id": image_id, "category_id": 1, "segmentation": _rle(*box), "score": score}


REFERENCE = {1: [_det(1, (0, 0, 10, 10), 0.9), _det(1, (20, 0, 30, 10), 0.8)],
             2: [_det(2, (0, 20, 20, 40), 0.7)]}


def test_the_same_detections_agree_fully():
    row = agreement(REFERENCE, REFERENCE, 0.5)
    assert row == {"bunches": 3, "same_count_photos": "2/2", "unmatched": 0,
                   "iou_min": 1.0, "iou_median": 1.0}


def test_a_lost_bunch_a_shifted_mask_and_the_threshold_show():
    other = {1: [_det(1, (0, 0, 10, 10), 0.9), _det(1, (22, 0, 32, 10), 0.8)],
             2: [_det(2, (0, 20, 20, 40), 0.4)]}  # below the working threshold: lost
    row = agreement(REFERENCE, other, 0.5)
    assert row["bunches"] == 2
    assert row["same_count_photos"] == "1/2"
    assert row["unmatched"] == 1
    assert row["iou_min"] == 80 / 120  # 8 of 10 columns overlap
    assert row["iou_median"] == (1.0 + 80 / 120) / 2


def test_segm_ap_is_100_for_the_ground_truth_and_lower_for_a_miss(tmp_path):
    gt = {"images": [{"id": i, "file_name": f"{i}.jpg", "height": 40, "width": 60}
                     for i in (1, 2)],
          "categories": [{"id": 1, "name": "bunch"}],
          "annotations": [{"id": k, "image_id": d["image_id"], "category_id": 1,
                           "segmentation": d["segmentation"], "iscrowd": 0,
                           "area": float(mask_utils.area(d["segmentation"])),
                           "bbox": mask_utils.toBbox(d["segmentation"]).tolist()}
                          for k, d in enumerate([*REFERENCE[1], *REFERENCE[2]], start=1)]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    coco = _quiet_coco(path)
    perfect = [*REFERENCE[1], *REFERENCE[2]]
    assert segm_ap(coco, perfect) == (100.0, 100.0)
    ap, ap50 = segm_ap(coco, REFERENCE[1])
    assert ap50 < 100.0 and ap < 100.0
    assert segm_ap(coco, []) == (0.0, 0.0)
