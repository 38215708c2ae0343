"""Annotation converters, the synthetic dataset and Detectron2 dataset registration."""
