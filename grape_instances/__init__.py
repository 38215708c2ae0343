"""grape_instances: one mask per grape bunch, built on Detectron2.

Layers, from the bottom (imports point down; tests/test_layers.py): ``core`` (errors,
atomic outputs, config, images, polygons, masks / RLE, depth, tables, paths); ``data``,
``convert``, ``modeling``; ``synthetic``, ``evaluation``, ``measure``; ``checkpoint`` and
``inference`` (running a trained model); ``engine`` (the one guarded training path);
``experiments`` (drivers). The CLIs in ``tools/`` sit on top.
"""

__version__ = "0.1.0"

import warnings as _warnings

# torch 2.14 deprecates torch.jit.script, which Detectron2 and torchvision call at import
# time: the warning is about their code, not the user's, and came twice per tool run.
_warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated",
                         category=FutureWarning)
