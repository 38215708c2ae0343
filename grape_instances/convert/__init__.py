"""Offline annotation I/O: one module per format (reader and writer), COCO tools, helpers."""
