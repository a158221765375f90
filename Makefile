# Two entry points (see README): `make run` regenerates everything with DVC on the
# built-in default world, then the results page; `make test` runs the test suite. Both
# create .venv if missing. `make quick`, `make report`, `make docs`, `make spread` and `make bench` help.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch and torchvision pinned together: torchvision's compiled ops must match torch's build
# (torchvision 0.28 fails to import its ops against the CPU-only torch 2.13.0 wheel). These two
# wheels are about 5.5 GB and install in about 2 minutes; they run on CPU and on CUDA 13 GPUs.
# Researchers with another CUDA can create .venv with a matching pair before running make.
TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: run test bench env test-tools quick report docs spread

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch, torchvision.ops" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test]"
	touch $@

env: $(VENV)/.installed

run: $(VENV)/.installed
	PATH="$(abspath $(VENV))/bin:$$PATH" dvc repro
	$(PY) tools/results_page.py

# The small `quick` world (tests/params_quick.yaml) in QUICK, a scratch copy of the pipeline
# that git and DVC ignore, so the tracked params.yaml and reports stay as they are.
QUICK ?= .quick
quick: $(VENV)/.installed
	mkdir -p $(QUICK)
	cp -R stages linkstyle masks dvc.yaml .dvcignore $(QUICK)/
	cp tests/params_quick.yaml $(QUICK)/params.yaml
	cd $(QUICK) && export PATH="$(abspath $(VENV))/bin:$$PATH" && \
	  { test -d .dvc || { dvc init -q --no-scm && dvc config core.analytics false; }; } && dvc repro
	@echo "quick report: $(QUICK)/reports/index.html (python3 tools/open_report.py --page $(QUICK)/reports/index.html)"

# The headline numbers under training seeds 0, 1 and 2: each seed retrains the built-in models
# in its own scratch copy (.spread/seed-<s>/, ignored by git and DVC) and runs the stages
# behind the README's numbers; writes reports/spread.json (tools/spread.py says more) and
# the results page's spread section.
spread: $(VENV)/.installed
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) tools/spread.py
	$(PY) tools/results_page.py

# Open reports/index.html in a browser, or print its path where there is none.
report:
	python3 tools/open_report.py

# The generated pages: docs/results.md (+ the README figure) from reports/, docs/errors.md
# from tests/test_errors.py. tests/test_docs.py fails when either is out of date.
docs: $(VENV)/.installed
	$(PY) tools/results_page.py
	$(PY) tools/errors_page.py

# The report's browser test needs Debian's chromium and chromedriver, the SSH remote test an
# OpenSSH server; installed here where apt-get runs as root (CI), else those tests are skipped
# with the reason printed.
test-tools:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null && test -x /usr/sbin/sshd; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium, chromium-driver and openssh-server for the browser and SSH tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver openssh-server) \
	    >/dev/null || echo "apt-get failed: the browser and SSH tests will be skipped"; \
	else echo "no chromium/sshd and no root apt-get: the browser and SSH tests will be skipped"; fi

test: $(VENV)/.installed test-tools
	$(PY) -m pytest tests

bench: $(VENV)/.installed
	for b in benchmarks/*.py; do PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) $$b || exit 1; done
