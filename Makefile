# The two commands of the README: `make run` and `make test`.
# Each creates .venv with python3 when it is missing and (re)installs the
# project when its sources change.  A normal install, not the default
# editable one, so that twistd finds the plugin in twisted/plugins/.

PYTHON ?= python3
PORT ?= 12000
VENV := .venv
BIN := $(VENV)/bin
SOURCES := $(shell find udpupper twisted -name '*.py' -o -name '*.c') setup.py setup.cfg pyproject.toml

.PHONY: run test clean

run: $(VENV)/installed
	$(BIN)/twistd -n --pidfile= udpupper --port $(PORT)

test: $(VENV)/installed-test
	$(BIN)/python -m twisted.trial tests
	$(BIN)/python -m pytest tests

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/installed: $(BIN)/python $(SOURCES)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check .
	touch $@

$(VENV)/installed-test: $(BIN)/python $(SOURCES)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check ".[test]" setuptools
	# The tests import udpupper from this tree: build its C helper here too.
	$(BIN)/python setup.py --quiet build_ext --inplace
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp .pytest_cache .hypothesis udpupper/*.so
