# Finds Python 3.10 (PATH, then pyenv's install directory) and builds .venv.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTHON310 := $(shell for p in python3.10 $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.10.*/bin/python3.10 2>/dev/null); do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1 && { echo $$p; break; }; done)

.PHONY: install test test-all train imitate clean

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

test-all: install
	$(PY) -m pytest -q tests

train: install
	$(PY) experiments/train.py $(ARGS)

imitate: install
	$(PY) launchpad_programs/imitate.py --lp_launch_type=local_mp $(ARGS)

clean:
	rm -rf $(VENV)
