# The two commands a user needs: `make train` and `make test`. Everything else is optional.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The shared datasets beside this checkout, unless the caller names a folder.
ifeq ($(origin ATTENMIXER_DATA_DIR), undefined)
  ifneq ($(wildcard ../shared/data/gowalla),)
    export ATTENMIXER_DATA_DIR := $(abspath ../shared/data)
  endif
endif

TRAIN_FLAGS ?=
PYTEST_FLAGS ?=
# Test files run on two worker processes (pytest-xdist); TEST_WORKERS=0 runs them in this one.
TEST_WORKERS ?= 2
BAZEL_TARGETS ?= //...

.PHONY: install train test bazel-test bench clean

install: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip wheel setuptools
	$(PY) -m pip install --quiet -e '.[test,beam]'
	touch $(STAMP)

train: $(STAMP)
	$(PY) -m trainer.main --dataset=gowalla $(TRAIN_FLAGS)

test: $(STAMP)
	$(PY) -m pytest tests -n $(TEST_WORKERS) --dist loadfile $(PYTEST_FLAGS)

# Offline Bazel 4.2.3; its flags are in .bazelrc, its interpreter is this checkout's .venv.
bazel-test: $(STAMP)
	command -v bazel >/dev/null || (apt-get update -qq && apt-get install -y -qq bazel-bootstrap)
	bazel test $(if $(ATTENMIXER_DATA_DIR),--test_env=ATTENMIXER_DATA_DIR=$(ATTENMIXER_DATA_DIR)) \
	  $(BAZEL_TARGETS)

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

clean:
	rm -rf $(VENV) .pytest_cache
