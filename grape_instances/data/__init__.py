"""What Detectron2 reads while training and evaluating: dataset registration (``datasets``:
COCO JSON, categories from the file), the config built for its data and the dataset lists
(``build``), mappers and augmentations (``mappers``), the semantic view of instance datasets
(``semantic``) and the depth channel's transforms (``depth``)."""
