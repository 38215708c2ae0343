"""The procedural grape-bunch renderers (``render``, ``rgbd``, ``dataset4``: scenes in memory)
and ``export``, which writes them as datasets."""
