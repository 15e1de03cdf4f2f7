# Two entry points for a fresh machine (see README): `make reproduce` and `make test`.
# Both create .venv with the pinned dependencies on first use (a CUDA build of torch: ~7 GB, ~3 minutes).
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
PYTHON ?= python3

.PHONY: setup reproduce test browser lint format bench docs

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

# The main job: the whole workflow on the embedded corpus, through DVC (which calls Snakemake).
reproduce: setup
	PATH="$(BIN):$$PATH" dvc repro

# the browser test needs chromium and chromedriver: installed with apt-get when missing (as root)
browser:
	.ci/install_browser.sh

test: setup browser
	PATH="$(BIN):$$PATH" python -m pytest

# Lint and format checks (pinned in pyproject's `lint` extra); `make format` applies the formatters.
$(VENV)/.lint-installed: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	touch $@

lint: $(VENV)/.lint-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow/rules
	PATH="$(BIN):$$PATH" python .ci/snakemake_lint.py

format: $(VENV)/.lint-installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	$(BIN)/snakefmt Snakefile workflow/rules

# docs/config-reference.md, generated from the schema's descriptions (tests/test_docs.py fails while it is stale)
docs: setup
	PATH="$(BIN):$$PATH" python -m mlaflow.pipeline.configref docs/config-reference.md

bench: setup
	PATH="$(BIN):$$PATH" python bench/bench_training.py
	PATH="$(BIN):$$PATH" python bench/bench_methods.py
	PATH="$(BIN):$$PATH" python bench/bench_extraction.py
	PATH="$(BIN):$$PATH" python bench/bench_orchestration.py
