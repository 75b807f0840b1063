# Finds Python 3.10 (PATH, then pyenv's install directory) and builds .venv (the pinned
# stack). `make test-core` builds .venv-core with the newest Python 3.11-3.14 found the
# same way and the newest JAX, Haiku, Optax and chex, and runs the portable core's tests.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYENV_VERSIONS := $${PYENV_ROOT:-$$HOME/.pyenv}/versions
PYTHON310 := $(shell for p in python3.10 $$(ls -d $(PYENV_VERSIONS)/3.10.*/bin/python3.10 2>/dev/null); do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1 && { echo $$p; break; }; done)
CORE_VENV := .venv-core
CORE_PY := $(CORE_VENV)/bin/python
CORE_PACKAGES := jax dm-haiku optax chex numpy pytest pytest-timeout
PYTHON_NEWEST := $(shell for v in 3.14 3.13 3.12 3.11; do \
	for p in python$$v $$(ls -d $(PYENV_VERSIONS)/$$v.*/bin/python$$v 2>/dev/null | sort -Vr); do \
	$$p -c "import sys; assert sys.version_info[:2] == ($${v/./, })" >/dev/null 2>&1 && { echo $$p; exit; }; done; done)

.PHONY: install test test-all test-core core-env gpu-wheels train imitate clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	@test -n "$(PYTHON310)" || { echo "error: Python 3.10 not found on PATH or under pyenv (needed by Launchpad/Reverb)"; exit 1; }
	$(PYTHON310) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

test: install
	$(PY) -m pytest -q -m "not slow" tests

# The portable core (config, rewards, networks, losses, learning) on the newest stack.
core-env: $(CORE_VENV)/.installed

$(CORE_VENV)/.installed:
	@test -n "$(PYTHON_NEWEST)" || { echo "error: no Python 3.11-3.14 on PATH or under pyenv for the core's environment"; exit 1; }
	$(PYTHON_NEWEST) -m venv $(CORE_VENV)
	$(CORE_PY) -m pip install -q --upgrade pip
	$(CORE_PY) -m pip install -q --upgrade $(CORE_PACKAGES)
	touch $@

test-core: core-env
	@$(CORE_PY) -c 'import sys, jax, haiku, optax; print(f"core on Python {sys.version.split()[0]}, jax {jax.__version__}, haiku {haiku.__version__}, optax {optax.__version__}")'
	PYTHONPATH=$(CURDIR) $(CORE_PY) -m pytest -q -m "not slow" tests/core

# What benchmarks/gpu_check.sh needs beside a GPU image's JAX: Haiku and jmp (pure
# Python), as wheels for its Python 3.12, in .whl (carried to the device machine).
GPU_WHEELS := dm-haiku==0.0.17 jmp==0.0.4

gpu-wheels:
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp -d .whl $(GPU_WHEELS)

test-all: install
	$(PY) -m pytest -q tests

train: install
	$(PY) experiments/train.py $(ARGS)

imitate: install
	$(PY) launchpad_programs/imitate.py --lp_launch_type=local_mp $(ARGS)

clean:
	rm -rf $(VENV) $(CORE_VENV)
