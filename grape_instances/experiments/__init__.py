"""Drivers that use everything else, each training through ``engine.run_training``: the CPU
demo (``demo``), real photos (``real``), synthetic pretraining against scratch (``pretrain``),
the model comparison (``compare``), the depth ablation (``rgbd``), and the benchmarks
(``benchmark``: models; ``convert_benchmark``: converters and polygon simplification;
``edge_benchmark``: edge auto-annotation against exact masks)."""
