# Two entry points (see README): `make demo` runs the MNIST exercise, `make test` runs the test suite.
# Both create .venv when missing and install the pinned CPU torch from constraints.txt.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Data directory (MNIST raw files, GPT-2 tokenizer, InceptionV1 labels): $VISION_INTERP_DATA, else
# ../shared/data when it exists, else none (MNIST is then downloaded, with checksums, into the cache).
DATA   ?= $(or $(VISION_INTERP_DATA),$(wildcard $(abspath ../shared/data)))
DATA_ARG := $(if $(DATA),--data-dir $(DATA),)
OUT    ?= out/mnist_exercise
PYTEST_ARGS ?=

.PHONY: demo test install browser-deps clean help

help:
	@echo "make demo   - set up .venv and run the MNIST exercise (report in $(OUT)/report.html)"
	@echo "make test   - set up .venv (+ headless chromium when possible) and run the full test suite"
	@echo "variables: DATA=<data dir> (now: $(or $(DATA),none: MNIST will be downloaded)), OUT=<output dir>, PYTEST_ARGS=..."

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	# A real trained third-party CNN for the conformance tests (MTCNN's ONet; weights ship in the wheel).
	# --no-deps: its package imports torchvision, which the tests never import (see tests/third_party.py).
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps facenet-pytorch==2.6.0
	touch $@

install: $(VENV)/.installed

browser-deps:
	@bash scripts/ensure-chromium.sh

demo: $(VENV)/.installed
	$(VENV)/bin/vision-interp mnist-exercise $(DATA_ARG) --out $(OUT)

test: $(VENV)/.installed browser-deps
	VISION_INTERP_DATA=$(DATA) $(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) out .pytest_cache
