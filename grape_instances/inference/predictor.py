"""The one predictor: a trained model (checkpoint, test-time resize, tiles, depth) on one image.

Every checkpoint is loaded through :class:`Predictor`. Photos run through the loader of
``batch.py`` (``predict_photos``, the Predictor's model as a ``runtime.Runtime``); video
frames and RGB-D photos (with their depth images) call the Predictor one image at a time.
Drawing is in ``draw.py``, the folder and video writers in ``writers.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultPredictor

from ..checkpoint import GrapeCheckpointer, ensure_weights_available
from ..core.config import is_semantic_model
from ..core.errors import GrapeInputError
from ..data.build import build_config
from ..data.datasets import THING_CLASSES, register_from_config
from ..data.depth import check_depth_config, stack_depth, transform_depth
from ..data.semantic import stuff_classes_for, stuff_colors_for
from .tiling import TiledModel
from .tta import check_tta_config
from .wrap import inference_model

logger = logging.getLogger(__name__)


def prediction_metadata(cfg: CfgNode):
    """Metadata that names (and can draw) the model's outputs even when the test dataset is
    not registered in this process: the test dataset's when its classes fit the model, else
    generic names; stuff_classes for semantic models. Shared by every runtime."""
    name = cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else "__grapes_unregistered"
    metadata = MetadataCatalog.get(name)
    semantic = is_semantic_model(cfg)
    classes = metadata.get("thing_classes")
    if not semantic and classes and len(classes) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
        classes = None  # another dataset's names would mislabel (or overrun) the classes
    if not classes:
        n = len(THING_CLASSES) if semantic else cfg.MODEL.ROI_HEADS.NUM_CLASSES
        names = list(THING_CLASSES) if n == len(THING_CLASSES) else [
            f"class {i}" for i in range(n)
        ]
        metadata = MetadataCatalog.get(f"__grapes_predict_{n}").set(thing_classes=names)
    if semantic:
        # Semantic outputs are drawn by class name: stuff_classes as in the semantic view.
        stuff = stuff_classes_for(
            metadata.thing_classes, cfg.DATASETS.SEMANTIC_MERGE_CLASSES
        )
        if len(stuff) != cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES:
            stuff = [f"class {i}" for i in range(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)]
        metadata = MetadataCatalog.get(
            "__grapes_predict_semantic_" + "|".join(stuff)
        ).set(stuff_classes=stuff, stuff_colors=stuff_colors_for(len(stuff)))
    return metadata


class Predictor(DefaultPredictor):
    """Detectron2's DefaultPredictor (checkpoint, test-time resize, one BGR image in) with a
    one-line error for a missing checkpoint, the config's inference rules around the model
    (``inference.wrap``: tiles for ``TEST.TILE_SIZE`` > 0 or test-time augmentation for
    ``TEST.AUG.ENABLED``, the containment rule), and metadata that can draw our outputs even when
    the test dataset is not registered in this process (stuff_classes for semantic models).
    With ``INPUT.DEPTH.ENABLED`` each call also takes the photo's aligned depth image.
    """

    def __init__(self, cfg: CfgNode, allow_random_weights: bool = False) -> None:
        check_depth_config(cfg)
        TiledModel.enabled(cfg)  # a bad TEST.TILE_SIZE is one line before the model is built
        check_tta_config(cfg)  # so is test-time augmentation with depth
        self.max_depth_mm = cfg.INPUT.DEPTH.MAX_MM if cfg.INPUT.DEPTH.ENABLED else None
        weights = cfg.MODEL.WEIGHTS
        if not weights and not allow_random_weights:
            raise GrapeInputError(
                "MODEL.WEIGHTS is empty: the model would predict with random weights; pass a "
                "trained checkpoint, e.g. --opts MODEL.WEIGHTS output/real/model_final.pth"
            )
        ensure_weights_available(weights)
        # DefaultPredictor loads MODEL.WEIGHTS with Detectron2's checkpointer, which drops an
        # RGB checkpoint's 3-channel stem conv in an RGB-D model (a shape mismatch) and leaves
        # it random; it builds the model here without weights, and the project's checkpointer
        # loads them, widening RGB filters to the depth channel (modeling.rgbd).
        blank = cfg.clone()
        blank.defrost()
        blank.MODEL.WEIGHTS = ""
        super().__init__(blank)
        self.cfg = cfg.clone()
        GrapeCheckpointer(self.model).load(weights)
        self.model = inference_model(cfg, self.model)
        self.metadata = prediction_metadata(cfg)

    @property
    def needs_depth(self) -> bool:
        return self.max_depth_mm is not None

    def __call__(self, original_image: np.ndarray, depth: np.ndarray | None = None) -> dict:
        """DefaultPredictor's call; an RGB-D model also gets ``depth`` (H x W mm, aligned to
        the photo), resized with the photo's test-time transform (nearest, data.depth)."""
        if not self.needs_depth:
            if depth is not None:
                raise GrapeInputError("a depth image was given but the config's "
                                      "INPUT.DEPTH.ENABLED is False (an RGB model)")
            return super().__call__(original_image)
        if depth is None:
            raise GrapeInputError("INPUT.DEPTH.ENABLED: this RGB-D model needs the depth image "
                                  "of each photo (visualize.py --depth DIR)")
        with torch.no_grad():
            if self.input_format == "RGB":
                original_image = original_image[:, :, ::-1]
            height, width = original_image.shape[:2]
            transform = self.aug.get_transform(original_image)
            image = torch.as_tensor(
                transform.apply_image(original_image).astype("float32").transpose(2, 0, 1)
            )
            image = stack_depth(image, transform_depth(transform, depth), self.max_depth_mm)
            return self.model([{"image": image, "height": height, "width": width}])[0]


def config_with(cfg: CfgNode, overrides: Sequence[str], what: str) -> CfgNode:
    """A frozen copy of ``cfg`` with ``KEY VALUE`` ``overrides`` (an inference variant such as
    ``TEST.AUG.ENABLED True``); a bad key or value is one line that starts with ``what``."""
    out = cfg.clone()
    out.defrost()
    try:
        out.merge_from_list(list(overrides))
    except (KeyError, ValueError, AssertionError) as e:
        raise GrapeInputError(f"{what}: bad override ({e})") from None
    out.freeze()
    return out


def prediction_config(config_file: str, opts: Sequence[str] = (), *,
                      confidence_threshold: float | None = 0.5, tile: int = 0,
                      tile_overlap: float | None = None) -> CfgNode:
    """The config of a prediction run (``visualize.py``, ``measure.py``): the model's config
    with the user's overrides, the score threshold of what is drawn, saved or measured
    (``MODEL.ROI_HEADS.SCORE_THRESH_TEST``; None keeps the config's, as count_row.py does,
    whose tracker has its own threshold) and, with ``tile`` > 0, tiled inference
    (``TEST.TILE_SIZE`` / ``TEST.TILE_OVERLAP``); its datasets registered, so that the
    predictor can name the classes."""
    extra = ([] if confidence_threshold is None
             else ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(confidence_threshold)])
    if tile:
        extra += ["TEST.TILE_SIZE", str(tile)]
    if tile_overlap is not None:
        extra += ["TEST.TILE_OVERLAP", str(tile_overlap)]
    cfg = build_config(config_file, [*opts, *extra])
    register_from_config(cfg)
    return cfg
