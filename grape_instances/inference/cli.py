"""The command-line flags of a model run, defined once for the tools that run a trained model
(count_row.py, visualize.py, predict.py, measure.py, export_model.py): the same flag means
the same thing, with the same default and help, in every tool.

Three calls, each placed where its flags belong in the tool's parser (``--config-file``
first, the prediction flags among the tool's own, the overrides last: ``opts`` swallows the
rest of the command line). A flag whose meaning differs between tools (count_row.py's
``--confidence-threshold`` is the tracker's) stays in the tool. Imports only argparse:
``--help`` answers before torch or Detectron2 is loaded.
"""

from __future__ import annotations

import argparse

# The runtimes of inference.runtime.build_runtime (defined here so --help needs no torch).
#: Each exported runtime: the export.json entry (model file) it runs. The _bf16 runtimes run
#: the same OpenVINO IR computed in bfloat16 on CPUs that have it (AVX512-BF16, AMX; elsewhere
#: OpenVINO computes in f32): 1.5 x the f32 runtime's photos/s here, scores moved in the second
#: or third digit (README "Predict a season").
RUNTIME_MODEL = {"torchscript": "torchscript", "onnx": "onnx", "openvino": "openvino",
                 "openvino_bf16": "openvino", "openvino_int8": "openvino_int8",
                 "openvino_int8_bf16": "openvino_int8"}
RUNTIMES = ("eager", *RUNTIME_MODEL)
CONFIG_HELP = "model config (YAML)"
OVERRIDES_HELP = "config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS model.pth"
Container = argparse._ActionsContainer  # a parser, or one of its (mutually exclusive) groups


def add_config_file(parser: Container, *, help: str = CONFIG_HELP, required: bool = True) -> None:
    """``--config-file``; ``parser`` may be a mutually exclusive group (measure.py: the
    config or ``--coco``), which takes no ``required``."""
    kwargs = {"required": True} if required else {}
    parser.add_argument("--config-file", help=help, **kwargs)


def add_prediction_args(parser: Container, *, tile_overlap: bool = False,
                        runtime: bool = False, only: str = "") -> None:
    """``--tile`` (tiled inference), with ``tile_overlap`` ``--tile-overlap``, with
    ``runtime`` ``--runtime`` and ``--exported`` (an exported model). ``only`` prefixes
    their help where they apply to one form of the tool (measure.py: "with --config-file")."""
    lead = f"{only}: " if only else ""
    parser.add_argument("--tile", type=int, default=0, metavar="SIZE",
                        help=f"{lead}predict on SIZE px windows of the (test-resized) image and "
                             "merge them (TEST.TILE_SIZE); 0 = whole image")
    if tile_overlap:
        parser.add_argument("--tile-overlap", type=float, default=None, metavar="FRACTION",
                            help=f"{lead}overlap of neighbouring windows as a fraction of "
                                 "--tile (TEST.TILE_OVERLAP, default 0.25)")
    if runtime:
        parser.add_argument("--runtime", default="eager", choices=list(RUNTIMES),
                            help=f"{lead}eager PyTorch on MODEL.WEIGHTS, or an exported model "
                                 "(--exported)")
        parser.add_argument("--exported", metavar="EXPORT_DIR",
                            help="folder written by tools/export_model.py")


def add_overrides(parser: Container, *, flag: bool = False) -> None:
    """The Detectron2 ``KEY VALUE`` overrides, added last (they take the rest of the command
    line): positional ``opts``, or with ``flag`` ``--opts`` (visualize.py, measure.py, whose
    usage has always spelled it so); ``args.opts`` either way."""
    name = "--opts" if flag else "opts"
    parser.add_argument(name, nargs=argparse.REMAINDER, default=[], help=OVERRIDES_HELP)


def add_launch_args(parser: Container, *, dist_url: str = "auto") -> None:
    """Detectron2's launcher flags (``default_argument_parser``'s, the same names and
    defaults but ``dist_url``): train_net.py keeps Detectron2's per-user port, predict.py
    lets ``launch`` pick a free one."""
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="processes per machine (one per GPU; on a CPU machine, processes "
                             "with gloo)")
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument("--machine-rank", type=int, default=0,
                        help="the rank of this machine (unique per machine)")
    parser.add_argument("--dist-url", default=dist_url,
                        help="initialization URL for torch.distributed (tcp://HOST:PORT; "
                             "'auto': a free local port, one machine only)")
