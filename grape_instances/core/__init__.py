"""The bottom layer, importing nothing of the project above it: errors (one-line user
errors), fileio (atomic outputs, output-path checks), config (the project's config keys,
is_semantic_model), images (the one safe image read), polygons (mask <-> polygon), masks (the
one COCO segmentation -> RLE / mask decode, RLE counts as str / bytes), depth (the one depth
image lookup and read), warning_counter, tables (Markdown tables), paths (default dataset
folders, the synthetic layout, the "dataset is ready" stamp)."""
