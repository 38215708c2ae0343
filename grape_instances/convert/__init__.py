"""Annotation formats, offline: one module per format with its reader and writer (``via``,
``labelme``, ``wgisd``, ``grapesnet``, ``edges``, ``predictions``) and the COCO tools
(``coco``: the one builder; ``split``, ``validate``). Readers return records in memory; image,
polygon and mask helpers live in ``grape_instances.core``."""
