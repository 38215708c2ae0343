"""Model weights: make sure the ones a config names can be had before a run starts."""

from __future__ import annotations

import os

from detectron2.utils.file_io import PathManager

from .errors import GrapeInputError

OFFLINE_HINT = (
    'offline, pass a local checkpoint (MODEL.WEIGHTS path/to/model_final.pth) or train from '
    'scratch (MODEL.WEIGHTS "", as configs/mask_rcnn_grapes_cpu_real.yaml does)'
)


def ensure_weights_available(weights: str) -> None:
    """Check a local ``MODEL.WEIGHTS`` file, or download a URL / ``detectron2://`` one now into
    Detectron2's cache (where the checkpointer then finds it), so that a missing file or an
    unreachable model zoo is one line before the run, not a traceback inside it."""
    if not weights:
        return
    if "://" not in weights:
        if not os.path.isfile(weights):
            raise GrapeInputError(f"{weights}: checkpoint (MODEL.WEIGHTS) not found")
        return
    try:
        PathManager.get_local_path(weights)
    except Exception as e:  # URLError, HTTPError, socket and OS errors alike
        reason = getattr(e, "reason", None) or e
        raise GrapeInputError(
            f"{weights}: cannot download the weights ({reason}); {OFFLINE_HINT}"
        ) from None
