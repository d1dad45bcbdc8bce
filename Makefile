# keras-eff: one command to set up and run the demo, one to set up and run the tests.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test test-fast lint setup data clean bench bench-quick docs

demo: setup data
	$(VENV)/bin/keras-eff demo

# The tests run in TEST_WORKERS processes (pytest-xdist), one test file to a process: most of the suite's time is
# TensorFlow tracing graphs, one Python thread, so two processes on two cores take about 16 minutes instead of 37.
# TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: setup data lint
	$(PY) -m pytest -q -ra --durations=30 $(XDIST) $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -q -m "not slow" $(XDIST) $(PYTEST_ARGS)

# ruff (lint, then the formatting check) and mypy; configured in ruff.toml and setup.cfg [mypy].
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

setup: $(STAMP)

$(STAMP): requirements.txt setup.cfg setup.py
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

# Debian's dataset-fashion-mnist: installed when its files are missing and apt can be used.
data:
	@if [ -z "$$KERAS_EFF_FASHION_MNIST_DIR" ] && [ ! -f $(FMNIST) ]; then \
	  if command -v apt-get >/dev/null; then \
	    echo "Installing Debian's dataset-fashion-mnist"; \
	    $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; \
	  else \
	    echo "Fashion-MNIST is missing: install Debian's dataset-fashion-mnist or set KERAS_EFF_FASHION_MNIST_DIR"; \
	  fi; \
	fi

# The API reference, built from the docstrings (Google style) by pdoc: open site/api/index.html.
docs: setup
	TF_CPP_MIN_LOG_LEVEL=2 $(VENV)/bin/pdoc -d google -o site/api keras_eff tflite_export

clean:
	rm -rf $(VENV) artifacts .pytest_cache site

# keras-eff vs TF-MOT side by side (benchmarks/tfmot.py). TF-MOT 0.8.1 runs only under tf_keras, so it gets its own
# environment, .venv-tfmot/, made from benchmarks/requirements-tfmot.txt when missing (about 2.7 GB).
TFMOT_VENV  := .venv-tfmot
TFMOT_STAMP := $(TFMOT_VENV)/.installed

bench: setup data $(TFMOT_STAMP)
	$(PY) -m benchmarks.tfmot $(BENCH_ARGS)

bench-quick: setup data $(TFMOT_STAMP)
	$(PY) -m benchmarks.tfmot --quick $(BENCH_ARGS)

$(TFMOT_STAMP): benchmarks/requirements-tfmot.txt
	[ -x $(TFMOT_VENV)/bin/python ] || $(PYTHON) -m venv $(TFMOT_VENV)
	$(TFMOT_VENV)/bin/python -m pip install -q --upgrade pip
	$(TFMOT_VENV)/bin/python -m pip install -q -r benchmarks/requirements-tfmot.txt
	$(TFMOT_VENV)/bin/python -m pip check
	touch $(TFMOT_STAMP)
