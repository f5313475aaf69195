# Two entry points: `make run` installs nosink and encodes a sample; `make test` installs and tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL ?= ../shared/models/stories260k

.PHONY: install run test lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch is pinned to the CPU wheel first so that nothing pulls the multi-GB CUDA build.
install: $(PY)
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -c ci/cpu-constraints.txt -e ".[dev]"

run: install
	printf 'Once upon a time there was a little girl.\nThe dog ran to the park.\n' \
	  | $(VENV)/bin/nosink encode --model $(MODEL) --plan "mask0&bidir:k=4,k0=1" - -o sample.npy
	$(PY) -c "import numpy as np; a = np.load('sample.npy'); print('sample.npy', a.shape, a.dtype)"

test: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache sample.npy
