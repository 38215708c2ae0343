"""The procedural renderers, scenes in memory: ``render`` (RGB grape-bunch scenes), ``rgbd``
(metric camera, depth sensor, RGB-D scenes), ``dataset4`` (the twin of GrapesNet Dataset 4:
weighed single bunches), ``vineyard`` (photo-like vineyard rows); and ``export``, which writes
them as datasets (images, depth, COCO, VIA 2, labelme) stamped with what was made."""
