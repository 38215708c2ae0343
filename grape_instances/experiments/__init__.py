"""Drivers that use everything else, each training through ``engine.run_training``: the CPU
demo (``demo``), real photos (``real``), synthetic pretraining against scratch (``pretrain``),
the model comparison (``compare``), the depth ablation (``rgbd``), false positives by kind
under the containment rule (``fragments``), row counting against rendered ground truth
(``row_count``), and the benchmarks (``benchmark``: models; ``convert_benchmark``: converters
and polygon simplification; ``edge_benchmark``: edge auto-annotation against exact masks;
``predict_benchmark``: prediction speed per runtime; ``runtime_accuracy``: exported models
against eager on annotated photos)."""
