# One entry point for people and CI. Every target installs what it needs first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: setup binaries test check demo bench crds lock clean

# The runtime dependencies exactly as the image has them (requirements.lock, hash-checked), then
# the package and the development tools.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.lock
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

binaries:
	bash hack/build-kube.sh

setup: $(VENV)/.installed binaries

## The README's test command.
test: setup
	$(PY) -m pytest

## Lint, types and architecture contracts.
check: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## The README's main command: the whole story on local real clusters.
demo: setup
	$(VENV)/bin/standby demo $(DEMO_ARGS)

bench: setup
	cd benchmarks && ../$(PY) transforms.py
	cd benchmarks && ../$(PY) watcher.py
	cd benchmarks && ../$(PY) sync.py
	cd benchmarks && ../$(PY) activation.py
	cd benchmarks && ../$(PY) clients.py
	cd benchmarks && ../$(PY) history.py
	cd benchmarks && ../$(PY) rebuild.py
	cd benchmarks && ../$(PY) replication.py
	cd benchmarks && ../$(PY) scale.py

crds: $(VENV)/.installed
	$(VENV)/bin/standby crds

## requirements.lock (the image's pinned, hashed dependencies) from pyproject.toml.
LOCKER := $(HOME)/.cache/standby/pip-tools
lock:
	test -x $(LOCKER)/bin/pip-compile || ($(PYTHON) -m venv $(LOCKER) && $(LOCKER)/bin/pip install --quiet pip-tools)
	$(LOCKER)/bin/pip-compile --quiet --generate-hashes --strip-extras --no-emit-index-url --no-emit-find-links \
	  --output-file requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) .devenv .pytest_cache .mypy_cache .ruff_cache
