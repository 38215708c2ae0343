"""The inference model of a config: a built model with the config's inference-time rules
around it (tiles for ``TEST.TILE_SIZE``, then ``TEST.CONTAINMENT_THRESH``'s rule).

The Predictor, evaluation (``Trainer.test``) and the exported runtimes all build their model
here, so that prediction, the scores and an exported model apply the same rules, and a new
post-processing rule is added once.
"""

from __future__ import annotations

from detectron2.config import CfgNode
from torch import nn

from ..core.config import is_semantic_model
from .containment import ContainmentFilter
from .tiling import TiledModel


def inference_model(cfg: CfgNode, model: nn.Module) -> nn.Module:
    """``model`` wrapped as ``cfg`` asks: an instance model run on tiles when
    ``TEST.TILE_SIZE`` > 0 (a bad size is one line), its merged outputs then filtered by the
    containment rule when ``TEST.CONTAINMENT_THRESH`` > 0; a semantic model, or an instance
    model with neither rule, is returned as is."""
    if is_semantic_model(cfg):
        return model
    if TiledModel.enabled(cfg):
        model = TiledModel.from_config(cfg, model)
    return ContainmentFilter.wrap(cfg, model)
