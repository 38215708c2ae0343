"""Speed and memory of our Mask R-CNN beside torchvision's, measured in the same run.

Each model runs in its own spawned process, so the peak resident memory reported
(``ru_maxrss``) is that model's alone, and both see the same threads, input and batch.
"""

from __future__ import annotations

import resource
import time
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from ..core.fresh_process import in_fresh_process
from ..core.tables import markdown_table


@dataclass
class BenchSpec:
    model: str          # "detectron2:<config.yaml>" or "torchvision:maskrcnn_resnet50_fpn"
    size: int = 384     # square input side in pixels (no resizing inside the models)
    batch: int = 2
    threads: int = 2
    train_iters: int = 3
    infer_images: int = 4
    seed: int = 0
    opts: tuple[str, ...] = ()  # config overrides for detectron2 models


def _toy_batch(size: int, batch: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random images with three elliptic 'bunches' each: (image HxWx3 uint8, masks Nx H x W)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(batch):
        image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        masks = np.zeros((3, size, size), np.uint8)
        for m in masks:
            center = tuple(int(v) for v in rng.integers(size // 5, 4 * size // 5, 2))
            cv2.ellipse(m, center, (size // 10, size // 7), 0, 0, 360, 1, -1)
        out.append((image, masks))
    return out


def _detectron2_runner(spec: BenchSpec, data):
    import torch
    from detectron2.modeling import build_model
    from detectron2.structures import BitMasks, Instances

    from ..data.build import build_config

    config_file = spec.model.split(":", 1)[1]
    cfg = build_config(config_file, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *spec.opts])
    model = build_model(cfg)

    def make_inputs(with_targets: bool):
        inputs = []
        for image, masks in data:
            d = {"image": torch.as_tensor(image.transpose(2, 0, 1).copy()),
                 "height": spec.size, "width": spec.size}
            if with_targets:
                inst = Instances((spec.size, spec.size))
                bm = BitMasks(torch.as_tensor(masks).bool())
                inst.gt_masks, inst.gt_boxes = bm, bm.get_bounding_boxes()
                inst.gt_classes = torch.zeros(len(masks), dtype=torch.long)
                d["instances"] = inst
            inputs.append(d)
        return inputs

    return model, lambda: model(make_inputs(True)), lambda: model(make_inputs(False)[:1])


def _torchvision_runner(spec: BenchSpec, data):
    import torch
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    model = maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=2,
        min_size=spec.size, max_size=spec.size,
    )
    images = [torch.as_tensor(im.transpose(2, 0, 1).copy()).float() / 255 for im, _ in data]
    targets = []
    for _, masks in data:
        m = torch.as_tensor(masks)
        boxes = []
        for mk in m:
            ys, xs = torch.nonzero(mk, as_tuple=True)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32),
                        "labels": torch.ones(len(m), dtype=torch.int64), "masks": m})
    return model, lambda: model(images, targets), lambda: model(images[:1])


def _run_one(spec: BenchSpec) -> dict:
    """Child-process body: train s/iter, inference images/s, peak RSS."""
    import torch
    from detectron2.utils.events import EventStorage

    torch.set_num_threads(spec.threads)
    torch.manual_seed(spec.seed)
    data = _toy_batch(spec.size, spec.batch, spec.seed)
    runner = _detectron2_runner if spec.model.startswith("detectron2:") else _torchvision_runner
    model, train_step, infer_one = runner(spec, data)
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    model.train()
    times = []
    with EventStorage(0):
        for i in range(spec.train_iters + 1):  # first iteration is warm-up
            t = time.perf_counter()
            loss = sum(train_step().values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if i:
                times.append(time.perf_counter() - t)
    model.eval()
    with torch.no_grad():
        infer_one()  # warm-up
        t = time.perf_counter()
        for _ in range(spec.infer_images):
            infer_one()
        infer_s = time.perf_counter() - t
    return {
        **asdict(spec),
        "params_m": params / 1e6,
        "train_s_per_iter": float(np.median(times)),
        "infer_images_per_s": spec.infer_images / infer_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_in_subprocess(spec: BenchSpec) -> dict:
    """Run one benchmark row in a fresh spawned process (clean peak-memory reading)."""
    return in_fresh_process(_run_one, spec)


def format_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A Markdown table from rows; ``columns`` = (key, header, format spec); text columns
    (spec "s") are left-aligned, numbers right-aligned."""
    return markdown_table(
        [h for _, h, _ in columns],
        ([format(r[k], f) if k in r else "" for k, _, f in columns] for r in rows),
        ["left" if f == "s" else "right" for _, _, f in columns],
    )


MODEL_COLUMNS = [
    ("model", "model", "s"), ("size", "input px", "d"), ("batch", "batch", "d"),
    ("threads", "threads", "d"), ("params_m", "params (M)", ".1f"),
    ("train_s_per_iter", "train s/iter", ".2f"), ("infer_images_per_s", "infer img/s", ".2f"),
    ("peak_rss_mb", "peak RSS (MB)", ".0f"),
]
