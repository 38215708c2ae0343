"""Running a trained model on photos: ``predictor`` (Predictor and the one prediction-config
builder), ``tiling`` (tiled inference of instance models), ``draw`` (overlays, bunch ids),
``writers`` (overlay folders with their COCO results, annotated videos with per-frame counts,
atomic image writes) and ``measure`` (the measuring loop of tools/measure.py, masks from a
file or from the model); ``runtime`` (the eager model or an exported one behind Detectron2's
input/output contract), ``export`` (TorchScript / ONNX / OpenVINO export), ``batch``
(tools/predict.py: a season of photos through a data loader, in resumable shards),
``containment`` (drops a mask lying inside a higher-scoring one), ``wrap`` (the
one builder of a config's inference model: tiles, containment), ``tracking`` and
``row_count`` (one track per bunch along a row video, counted per segment:
tools/count_row.py); ``cli`` (the model flags those tools share, torch-free for a fast
--help). Every run of a model over photos goes through ``Predictor``'s model,
eager or exported."""
