# Two entry points for a fresh machine (see README): `make reproduce` and `make test`.
# Both create .venv with the pinned dependencies on first use (a CUDA build of torch: ~7 GB, ~3 minutes).
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
PYTHON ?= python3

.PHONY: setup reproduce test bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

# The main job: the whole workflow on the embedded corpus, through DVC (which calls Snakemake).
reproduce: setup
	PATH="$(BIN):$$PATH" dvc repro

test: setup
	PATH="$(BIN):$$PATH" python -m pytest

bench: setup
	PATH="$(BIN):$$PATH" python bench/bench_training.py
	PATH="$(BIN):$$PATH" python bench/bench_methods.py
	PATH="$(BIN):$$PATH" python bench/bench_extraction.py
	PATH="$(BIN):$$PATH" python bench/bench_orchestration.py
