"""From masks to measurements: per-bunch shape, metric size, volume and weight.

``geometry`` measures a mask in pixels, ``depth`` turns it into centimetres with an aligned
depth image and the camera's focal lengths, ``sources`` reads the masks (COCO instances,
COCO results), ``table`` writes the per-bunch, per-image and per-folder tables, ``weight``
fits and applies the weight regression. Running a model for its masks, and drawing each
bunch's id, is ``grape_instances.inference`` (``inference.measure``, ``inference.draw``).
"""
