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

.PHONY: install test demo bench lint clean synth

install: $(STAMP)

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
test: install
	$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: install
	$(VENV)/bin/ruff check grape_instances tools tests

synth: install
	$(PY) tools/make_synthetic.py --out datasets/grapes_synth

demo: install
	OMP_NUM_THREADS=$(THREADS) $(PY) tools/demo.py --output-dir $(DEMO_OUT)

bench: install
	OMP_NUM_THREADS=$(THREADS) $(PY) tools/benchmark.py --threads $(THREADS) --out bench/benchmark.json

clean:
	rm -rf output bench .pytest_cache
