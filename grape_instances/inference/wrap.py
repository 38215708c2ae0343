"""The inference model of a config: a built model with the config's inference-time rules
around it (test-time augmentation for ``TEST.AUG.ENABLED`` or tiles for ``TEST.TILE_SIZE``,
then ``TEST.CONTAINMENT_THRESH``'s rule).

The Predictor, evaluation (``Trainer.test``) and the exported runtimes all build their model
here, so that prediction, the scores and an exported model apply the same rules, and a new
post-processing rule is added once.
"""

from __future__ import annotations

import logging

from detectron2.config import CfgNode
from torch import nn

from ..core.config import is_semantic_model
from ..core.errors import GrapeInputError
from .containment import ContainmentFilter
from .tiling import TiledModel
from .tta import TTAModel, check_tta_config, tta_enabled

logger = logging.getLogger(__name__)


def inference_model(cfg: CfgNode, model: nn.Module) -> nn.Module:
    """``model`` wrapped as ``cfg`` asks: an instance model run with test-time augmentation
    when ``TEST.AUG.ENABLED`` (the eager Mask R-CNN only), or on tiles when
    ``TEST.TILE_SIZE`` > 0 (tiles win over test-time augmentation, with a warning; a bad
    size is one line), its outputs then filtered by
    the containment rule when ``TEST.CONTAINMENT_THRESH`` > 0; a semantic model, or an
    instance model with none of these, is returned as is.

    Test-time augmentation sits inside the containment rule: it merges its passes into one
    set of detections per photo (box NMS over the passes, then averaged masks), and the rule
    filters that set, as it filters the plain model's, so scores and counts see what is kept.
    """
    if is_semantic_model(cfg):
        if tta_enabled(cfg):
            raise GrapeInputError(f"TEST.AUG.ENABLED: test-time augmentation runs instance "
                                  f"models (Mask R-CNN), not {cfg.MODEL.META_ARCHITECTURE}")
        return model
    tiled = TiledModel.enabled(cfg)  # a bad TEST.TILE_SIZE is one line
    check_tta_config(cfg)
    if tiled:
        if tta_enabled(cfg):
            logger.warning("TEST.TILE_SIZE %d: tiles replace the config's test-time "
                           "augmentation (TEST.AUG.ENABLED), whose sizes are whole-photo sizes",
                           cfg.TEST.TILE_SIZE)
        model = TiledModel.from_config(cfg, model)
    elif tta_enabled(cfg):
        model = TTAModel.from_config(cfg, model)
    return ContainmentFilter.wrap(cfg, model)
