# Two entry points (see README): `make run` regenerates everything with DVC on the
# built-in default world; `make test` runs the test suite. Both create .venv if missing.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU-only torch by default (small, no GPU needed); researchers with CUDA can create
# .venv themselves with their own torch build before running make.
TORCH ?= torch==2.13.0

.PHONY: run test bench env

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

env: $(VENV)/.installed

run: $(VENV)/.installed
	PATH="$(abspath $(VENV))/bin:$$PATH" dvc repro

test: $(VENV)/.installed
	$(PY) -m pytest tests

bench: $(VENV)/.installed
	for b in benchmarks/*.py; do PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) $$b || exit 1; done
