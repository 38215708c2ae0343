"""grape_instances: one mask per grape bunch, built on Detectron2.

Layers, from the bottom (imports point down; tests/test_layers.py): ``core`` (errors,
atomic outputs, config, images, polygons, masks / RLE, depth, tables, paths); ``data``,
``convert``, ``modeling``; ``synthetic``, ``evaluation``, ``measure``; ``checkpoint`` and
``inference`` (running a trained model); ``engine`` (the one guarded training path);
``experiments`` (drivers). The CLIs in ``tools/`` sit on top.
"""

__version__ = "0.1.0"
