"""grape_instances: one mask per grape bunch, built on Detectron2.

Layers, from the bottom (imports point down; tests/test_layers.py): ``core`` (errors,
atomic outputs, config, images, polygons, masks / RLE, depth, tables, paths); ``data``,
``convert``, ``modeling``; ``synthetic``, ``evaluation``, ``measure``; ``checkpoint`` and
``inference`` (running a trained model); ``engine`` (the one guarded training path);
``experiments`` (drivers). The CLIs in ``tools/`` sit on top.
"""

import warnings

# torch deprecates torch.jit.script, which Detectron2 applies to a few functions at import:
# a FutureWarning a user can do nothing about, printed before every one-line error. Tools
# import this package before Detectron2's models, so it is silenced here, once.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated",
                        category=FutureWarning)

__version__ = "0.1.0"
