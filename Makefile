# grape_instances: every target installs what it needs first (idempotent).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DETECTRON2 := sal-detectron2==0.7.2
STAMP := $(VENV)/.installed
# Threads used by demo / bench (2 cores on CI machines).
THREADS ?= 2
DEMO_OUT ?= output/demo
COMPARE_OUT ?= output/compare

.PHONY: install test test-fast demo real pretrain-ablation bench compare lint clean synth clean-synth convert-via convert-labelme \
        count-demo row-eval install-peers peer-real \
        auto-annotate convert-grapesnet convert-wgisd synth-rgbd rgbd-ablation weigh help

install: $(STAMP)

# One line per target (tests/test_own_data.py checks that every target is listed).
define HELP_TEXT
Targets (each installs what it needs first; variables in CAPITALS):
  install            .venv with torch, Detectron2 and the package (idempotent)
  test               the test suite (what CI runs)
  test-fast          the tests not marked slow (no training, no driver run)
  lint               ruff over the package, tools and tests
  demo               synthesize, train Mask R-CNN on CPU, evaluate, draw (~7 min)
  real               the CPU recipe on the shared WGISD photos (~45 min)
  install-peers      the optional Ultralytics extra (AGPL-3.0) for peer-real
  peer-real          the recipe against YOLO11n/s-seg at equal CPU time (after real)
  pretrain-ablation  synthetic vineyard rows first vs random weights, same CPU time
  weigh              sizes and weights from masks and depth on the Dataset-4 twin
  bench              speed and memory of models and converters -> bench/benchmark.json
  compare            Mask R-CNN and the four semantic baselines on one split
  count-demo         render a row video, train or reuse the row model, count bunches
  row-eval           tune the row tracker on val videos, score it on the test videos
  synth              render the synthetic dataset (SYNTH_DIR)
  synth-rgbd         render the RGB-D scenes (RGBD_DIR)
  rgbd-ablation      Mask R-CNN with and without the depth channel
  convert-via        VIA -> COCO + validate (VIA= IMAGES= OUT=; none: synthetic data)
  convert-labelme    labelme -> COCO + validate (INPUT= ROOT= OUT=)
  auto-annotate      edge-detect one-bunch images -> COCO + VIA (IMAGES= BACKGROUND=)
  convert-grapesnet  GrapesNet folders -> COCO (ROOT= OUT_DIR=)
  convert-wgisd      WGISD -> COCO (ROOT= OUT_DIR=)
  clean              remove output/ and bench/
  clean-synth        remove the synthetic dataset
  help               this list
endef
export HELP_TEXT

help:
	@echo "$$HELP_TEXT"

$(STAMP): requirements.txt requirements.lock.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip<26"
	$(PIP) install -q -r requirements.txt -c requirements.lock.txt
	# Detectron2: the cp310 wheel's Python code, installed without its (CUDA 12.1) deps.
	$(PIP) install -q --no-deps --only-binary=:all: --python-version 3.10 \
	    --target "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
	    --upgrade $(DETECTRON2)
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PY) -c "import detectron2, grape_instances; print('detectron2', detectron2.__version__)"
	touch $(STAMP)

# pytest exits 5 when it collects no tests: treat that as a failure, not a pass.
define run_pytest
$(PY) -m pytest -q $(1); rc=$$?; \
if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc
endef

test: install
	$(call run_pytest,$(PYTEST_ARGS))

# The quick subset while developing: the tests not marked slow (no training, no driver run
# end to end). CI runs the full `make test`.
test-fast: install
	$(call run_pytest,-m "not slow" $(PYTEST_ARGS))

lint: install
	$(VENV)/bin/ruff check grape_instances tools tests

# The synthetic dataset is generated once: its stamp appears only after a complete run
# (--overwrite replaces a half-written one). `make clean-synth` forces a new one.
SYNTH_DIR ?= datasets/grapes_synth
SYNTH_STAMP := $(SYNTH_DIR)/.complete

synth: $(SYNTH_STAMP)

$(SYNTH_STAMP): | $(STAMP)
	$(PY) tools/make_synthetic.py --out $(SYNTH_DIR) --overwrite
	touch $@

clean-synth:
	rm -rf $(SYNTH_DIR)

# Multi-bunch RGB-D scenes (GrapesNet Dataset-3 style: 200 train / 50 val, 320x240, seed 0),
# what configs/mask_rcnn_grapes_rgbd_cpu_demo.yaml registers; generated once, like synth.
RGBD_DIR ?= datasets/grapes_rgbd
RGBD_STAMP := $(RGBD_DIR)/.complete

synth-rgbd: $(RGBD_STAMP)

$(RGBD_STAMP): | $(STAMP)
	$(PY) tools/make_synthetic.py --rgbd-scenes --out $(RGBD_DIR) --overwrite
	touch $@

# Mask R-CNN with and without the depth channel on those scenes, same seed and budget:
# output/rgbd_ablation/rgbd_ablation.md. RGBD_ARGS e.g. "--iters 300 --seeds 0 1".
RGBD_ABLATION_OUT ?= output/rgbd_ablation
rgbd-ablation: $(RGBD_STAMP)
	OMP_NUM_THREADS=$(THREADS) $(PY) tools/rgbd_ablation.py --data $(RGBD_DIR) \
	    --output-dir $(RGBD_ABLATION_OUT) $(RGBD_ARGS)

# Measure and weigh on the twin of GrapesNet Dataset 4 (weighed single bunches, RGB-D):
# measure the ground-truth masks with depth, then fit the weight model with and without
# depth. Results: $(WEIGH_OUT)/model*/report.json and pred_vs_measured.png.
D4_DIR ?= datasets/grapes_d4
D4_COUNT ?= 200
WEIGH_OUT ?= output/weigh
$(D4_DIR)/.complete: | $(STAMP)
	$(PY) tools/make_synthetic.py --dataset4 --count $(D4_COUNT) --out $(D4_DIR) --overwrite
	touch $@

weigh: $(D4_DIR)/.complete
	$(PY) tools/measure.py --coco $(D4_DIR)/annotations/instances.json --images $(D4_DIR) \
	    --camera $(D4_DIR)/camera.json --out $(WEIGH_OUT)/table.csv --overlays $(WEIGH_OUT)/overlays \
	    --overwrite
	$(PY) tools/fit_weight.py --measurements $(WEIGH_OUT)/table.csv \
	    --weights $(D4_DIR)/weights.csv --out $(WEIGH_OUT)/model --overwrite
	$(PY) tools/fit_weight.py --measurements $(WEIGH_OUT)/table.csv \
	    --weights $(D4_DIR)/weights.csv --out $(WEIGH_OUT)/model_rgb_only --no-depth --overwrite

# Converters. With no variables they convert the synthetic dataset's own VIA / labelme
# files; point VIA= IMAGES= OUT= (or INPUT= ROOT= OUT=) at your data. The Makefile
# replaces its outputs (--overwrite); the tool alone refuses to.
# What the user passed (command line or environment), before the targets' defaults apply:
# user data needs neither the synthetic dataset nor its --group-attr.
USER_VIA := $(VIA)
USER_INPUT := $(INPUT)
convert-via: VIA ?= $(SYNTH_DIR)/via/via_project_train.json
convert-via: IMAGES ?= $(SYNTH_DIR)/images/train
convert-via: OUT ?= $(SYNTH_DIR)/converted/via_train.json
convert-via: VIA_ARGS ?= $(if $(USER_VIA),,--group-attr instance)
convert-via: $(if $(USER_VIA),$(STAMP),$(SYNTH_STAMP))
	$(PY) tools/convert.py via --via "$(VIA)" --images "$(IMAGES)" --out "$(OUT)" --overwrite $(VIA_ARGS)
	$(PY) tools/convert.py validate --json "$(OUT)" --images "$(IMAGES)"

convert-labelme: INPUT ?= $(SYNTH_DIR)/labelme/train
convert-labelme: ROOT ?= $(if $(USER_INPUT),$(INPUT),$(SYNTH_DIR))
convert-labelme: OUT ?= $(if $(USER_INPUT),datasets/converted,$(SYNTH_DIR)/converted)/labelme_train.json
convert-labelme: $(if $(USER_INPUT),$(STAMP),$(SYNTH_STAMP))
	$(PY) tools/convert.py labelme --input "$(INPUT)" --root "$(ROOT)" --out "$(OUT)" --overwrite \
	    $(LABELME_ARGS)
	$(PY) tools/convert.py validate --json "$(OUT)" --images "$(ROOT)"

# Edge-detection auto-annotation of one-bunch images (GrapesNet Dataset-1 style). Without
# IMAGES= it first renders 8 synthetic one-bunch black-background images, so it runs on a
# fresh checkout. BACKGROUND=black|natural|auto; the VIA project beside OUT is for correcting.
EDGES_SAMPLE ?= datasets/edges_sample
auto-annotate: IMAGES ?= $(EDGES_SAMPLE)/images
auto-annotate: OUT ?= $(if $(filter $(EDGES_SAMPLE)/images,$(IMAGES)),$(EDGES_SAMPLE),datasets/converted)/edges.json
auto-annotate: BACKGROUND ?= auto
auto-annotate: VIA_OUT ?= $(basename $(OUT))_via.json
auto-annotate: $(if $(IMAGES),$(STAMP),$(EDGES_SAMPLE)/.complete)
	$(PY) tools/convert.py edges --images "$(IMAGES)" --out "$(OUT)" --background $(BACKGROUND) \
	    --via-out "$(VIA_OUT)" --overwrite $(EDGES_ARGS)
	$(PY) tools/convert.py validate --json "$(OUT)" --images "$(IMAGES)"

$(EDGES_SAMPLE)/.complete: | $(STAMP)
	$(PY) tools/make_synthetic.py --edges-sample --count 8 --size 384 --background black \
	    --out "$(EDGES_SAMPLE)/images" --overwrite
	touch $@

# GrapesNet / WGISD folders -> one COCO JSON per sub-dataset / split in OUT_DIR (see
# datasets/README.md for the layouts). GrapesNet extras: ANNOTATIONS=dir WEIGHTS=table.csv.
convert-grapesnet: ROOT ?= datasets/GrapesNet
convert-grapesnet: OUT_DIR ?= datasets/converted/grapesnet
convert-grapesnet: $(STAMP)
	$(PY) tools/convert.py grapesnet --root "$(ROOT)" --out-dir "$(OUT_DIR)" --overwrite \
	    $(if $(ANNOTATIONS),--annotations "$(ANNOTATIONS)") $(if $(WEIGHTS),--weights "$(WEIGHTS)") \
	    $(GRAPESNET_ARGS)
	for f in "$(OUT_DIR)"/grapesnet_*.json; do \
	    $(PY) tools/convert.py validate --json "$$f" --images "$(ROOT)" || exit 1; done

convert-wgisd: ROOT ?= datasets/wgisd
convert-wgisd: OUT_DIR ?= datasets/converted/wgisd
convert-wgisd: $(STAMP)
	$(PY) tools/convert.py wgisd --root "$(ROOT)" --out-dir "$(OUT_DIR)" --overwrite $(WGISD_ARGS)
	for f in "$(OUT_DIR)"/wgisd_*.json; do case "$$f" in *_boxes.json) continue;; esac; \
	    $(PY) tools/convert.py validate --json "$$f" --images "$(ROOT)" || exit 1; done

demo: install
	OMP_NUM_THREADS=$(THREADS) $(PY) tools/demo.py --output-dir $(DEMO_OUT)

# Prediction rows (eager / TorchScript / ONNX Runtime / OpenVINO f32 and int8, 1x2 vs 2x1
# processes): need the plain-head real-photo model in PLAIN_OUT (skipped without it; exported
# runtimes do not take the recipe's PointRend head): make real REAL_CONFIG=$(PLAIN_CONFIG)
# REAL_OUT=$(PLAIN_OUT).
bench: install
	OMP_NUM_THREADS=$(THREADS) $(PY) tools/benchmark.py --threads $(THREADS) --out bench/benchmark.json \
	    --predict-weights "$(PLAIN_OUT)/model_final.pth" --predict-photos "$(REAL_ROOT)/data"

# The CPU recipe on real vineyard photos (WGISD, read in place): convert, split with every
# variety in both parts, train configs/mask_rcnn_grapes_cpu_real.yaml (~45 min on 2 cores; a
# finished run in REAL_OUT is reused), score whole photos and tiles, draw overlays.
REAL_ROOT ?= ../shared/real-data/wgisd-train
# REAL_CONFIG=$(PLAIN_CONFIG) trains Mask R-CNN's plain mask head instead of PointRend's: the
# model that export_model.py, predict.py --runtime and make bench's prediction rows take.
REAL_OUT ?= output/real
REAL_CONFIG ?= configs/mask_rcnn_grapes_cpu_real.yaml
PLAIN_CONFIG := configs/mask_rcnn_grapes_cpu_real_plain.yaml
PLAIN_OUT ?= output/real_plain
real: install
	OMP_NUM_THREADS=$(THREADS) $(PY) tools/real.py --root "$(REAL_ROOT)" --output-dir "$(REAL_OUT)" \
	    --config-file "$(REAL_CONFIG)" $(REAL_ARGS)

# The optional peer of `make peer-real`: Ultralytics (AGPL-3.0), installed without its
# dependencies (they would replace numpy 1.26 and opencv-python-headless); its few missing
# ones are pinned in requirements-peers.txt. The package and its tests never import it.
PEERS_STAMP := $(VENV)/.peers-installed
install-peers: $(PEERS_STAMP)

$(PEERS_STAMP): requirements-peers.txt | $(STAMP)
	$(PIP) install -q --no-deps -r requirements-peers.txt
	$(PY) -c "import ultralytics, polars, thop; print('ultralytics', ultralytics.__version__)"
	touch $@

# The recipe of `make real` (its weights and training time in REAL_OUT, its split in
# REAL_DATA) against YOLO11n-seg and YOLO11s-seg trained from their YAML for the same time;
# both scored by the project's evaluators on the validation part and timed at 1024 px.
# PEER_ARGS e.g. "--budget-minutes 40" (2 trainings of that length, plus ~5 min).
REAL_DATA ?= datasets/real
PEER_OUT ?= output/peer_real
peer-real: $(PEERS_STAMP)
	OMP_NUM_THREADS=$(THREADS) $(PY) tools/peer_real.py --root "$(REAL_ROOT)" \
	    --data-dir "$(REAL_DATA)" --recipe-dir "$(REAL_OUT)" --output-dir "$(PEER_OUT)" \
	    --threads $(THREADS) $(PEER_ARGS)

# Pretrain on synthetic photo-like vineyard rows, then fine-tune, against the scratch run of
# `make real` at the same total CPU time (trains that first when REAL_OUT has none; ~50 min).
PRETRAIN_OUT ?= output/pretrain
pretrain-ablation: install
	OMP_NUM_THREADS=$(THREADS) $(PY) tools/pretrain_ablation.py --root "$(REAL_ROOT)" --scratch-dir "$(REAL_OUT)" --output-dir "$(PRETRAIN_OUT)" $(PRETRAIN_ARGS)

# Mask R-CNN + the four semantic baselines, same split and budget (a CPU smoke comparison).
compare: install
	OMP_NUM_THREADS=$(THREADS) $(PY) tools/compare.py --output-dir $(COMPARE_OUT) $(COMPARE_ARGS)

# Counting bunches along a row video (issue 16): render the row videos once (train frames for
# the detector, val videos to tune the tracker, test videos), train the row model once (a
# finished OUTPUT_DIR is reused), render a short demo video, count it with tools/count_row.py
# and print its count per vine, MOTA and IDF1 against the video's ground truth.
ROW_DIR ?= datasets/row_videos
ROW_MODEL ?= output/row_model
COUNT_DEMO_OUT ?= output/count_demo
$(ROW_DIR)/.complete: | $(STAMP)
	$(PY) tools/make_synthetic.py --row-videos --train 6 --val 3 --test 4 --frame-step 6 \
	    --out $(ROW_DIR) --overwrite
	touch $@

$(ROW_MODEL)/model_final.pth: | $(ROW_DIR)/.complete
	OMP_NUM_THREADS=$(THREADS) $(PY) tools/train_net.py \
	    --config-file configs/mask_rcnn_grapes_row_cpu.yaml OUTPUT_DIR $(ROW_MODEL)

# count-demo's own smaller row model (2,000 iterations, ~7 min): the demo fits ~10 minutes.
COUNT_DEMO_MODEL ?= output/row_model_demo
$(COUNT_DEMO_MODEL)/model_final.pth: | $(ROW_DIR)/.complete
	OMP_NUM_THREADS=$(THREADS) $(PY) tools/train_net.py \
	    --config-file configs/mask_rcnn_grapes_row_cpu.yaml OUTPUT_DIR $(COUNT_DEMO_MODEL) \
	    SOLVER.MAX_ITER 2000 SOLVER.STEPS "(1500, 1800)"

count-demo: $(COUNT_DEMO_MODEL)/model_final.pth
	$(PY) tools/make_synthetic.py --row-videos --test 1 --train 0 --val 0 --frames 120 \
	    --seed 7 --out $(COUNT_DEMO_OUT)/video --overwrite
	OMP_NUM_THREADS=$(THREADS) $(PY) tools/count_row.py \
	    --config-file configs/mask_rcnn_grapes_row_cpu.yaml \
	    --video-input $(COUNT_DEMO_OUT)/video/test/test_00/video.mp4 \
	    --segments $(COUNT_DEMO_OUT)/video/test/test_00/segments.csv \
	    --output $(COUNT_DEMO_OUT)/count MODEL.WEIGHTS $(COUNT_DEMO_MODEL)/model_final.pth
	$(PY) tools/row_count_eval.py --score-run $(COUNT_DEMO_OUT)/count \
	    --video-dir $(COUNT_DEMO_OUT)/video/test/test_00

# Tune the tracker on the val videos and score it on the test videos (README numbers).
ROW_EVAL_OUT ?= output/row_eval
row-eval: $(ROW_MODEL)/model_final.pth
	OMP_NUM_THREADS=$(THREADS) $(PY) tools/row_count_eval.py --root $(ROW_DIR) \
	    --output $(ROW_EVAL_OUT) --frame-step 2 --config-file configs/mask_rcnn_grapes_row_cpu.yaml \
	    MODEL.WEIGHTS $(ROW_MODEL)/model_final.pth

clean:
	rm -rf output bench .pytest_cache
