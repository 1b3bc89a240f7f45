# The two commands of the README: `make run` and `make test`; and `make
# check`, the fast tier, for every change.
#
# Each creates .venv with python3 when it is missing and installs the
# project into it when its sources change: editable, in setuptools' compat
# mode, which builds the C helpers once, in place, for the tests and the
# programs alike, and puts the checkout on sys.path, where twistd finds the
# plugin in twisted/plugins/ (the default, strict editable mode hides it).

PYTHON ?= python3
PORT ?= 12000
VENV := .venv
BIN := $(VENV)/bin
SOURCES := $(shell find udpupper twisted -name '*.py' -o -name '*.c' -o -name '*.h') setup.py setup.cfg pyproject.toml
EDITABLE := --config-settings editable_mode=compat
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
TRIAL := $(BIN)/python -m twisted.trial

.PHONY: run test check lint typecheck sanitize dist clean

run: $(VENV)/installed
	$(BIN)/twistd -n --pidfile= udpupper --port $(PORT)

# Every test once, under trial (tests/tiers.py): the unit, loopback and
# system tiers on both cores, then the long ones alone, whose figures a
# neighbour would bend.
test: $(VENV)/installed-test
	UDPUPPER_TIERS=unit,loopback,system $(TRIAL) -j2 tests
	UDPUPPER_TIERS=long $(TRIAL) tests

# The fast tier, for every change: lint, and the unit and loopback tests.
check: lint $(VENV)/installed-test
	UDPUPPER_TIERS=unit,loopback $(TRIAL) -j2 tests

# The release artefacts in dist/: an sdist and a wheel, checked, and the
# wheel installed and run where there is no compiler (.ci/release).
dist:
	PYTHON=$(PYTHON) .ci/release dist

lint: $(VENV)/installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Types: mypy with mypy-zope reads the annotations, the C helpers' stubs
# and the zope interfaces.  CI runs it.
typecheck: $(VENV)/installed-test
	$(PIP) mypy mypy-zope
	$(BIN)/mypy -p udpupper
	$(BIN)/mypy twisted/plugins/udpupper_plugin.py

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/installed: $(BIN)/python $(SOURCES)
	$(PIP) setuptools wheel
	$(PIP) -e . $(EDITABLE)
	touch $@

$(VENV)/installed-test: $(BIN)/python $(SOURCES)
	$(PIP) setuptools wheel
	$(PIP) -e ".[test]" $(EDITABLE)
	touch $@ $(VENV)/installed

# The C helpers' tests again, with the helpers built with AddressSanitizer and
# UndefinedBehaviorSanitizer (gcc or clang), in a copy of the tree; any
# report fails the run.  CI runs it where the compiler has the sanitizers.
SANITIZE := build/sanitize
CC ?= cc
SANITIZERS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
sanitize: $(VENV)/installed-test
	rm -rf $(SANITIZE) && mkdir -p $(SANITIZE)
	cp -r udpupper tests $(SANITIZE)/
	find $(SANITIZE)/udpupper -name "*.so" -delete
	for helper in _batch _transform server/protections/_ratelimit server/protections/_sources \
	              server/protections/_loops; do \
	    $(CC) -shared -fPIC -O1 -g $(SANITIZERS) \
	        -I"$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \
	        udpupper/$$helper.c \
	        -o $(SANITIZE)/udpupper/$$helper$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))') \
	        || exit 1; \
	done
	cd $(SANITIZE) && \
	    LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	    UDPUPPER_TIERS=unit,loopback \
	    $(CURDIR)/$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_batch.py tests/test_transform.py \
	    tests/server/protections/test_destination.py tests/server/test_service.py tests/bench/test_load.py tests/server/test_port.py \
	    tests/server/protections/test_ratelimit.py tests/server/protections/test_policy.py tests/server/test_protocol.py \
	    tests/server/protections/test_loops.py

clean:
	rm -rf $(VENV) build dist *.egg-info _trial_temp* .pytest_cache .hypothesis
	find udpupper -name "*.so" -delete
