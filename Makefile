# The two set-up commands: `make demo` and `make test`. Both build .venv from the lock first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Opt-in plugins are in the repository but not installed by default (`pip install -e plugins/<dist>`):
# ctr-suan: its many small attention ops collapse under OpenMP thread contention (on `tiny`, 2 threads
# on a loaded 2-core machine: 84 samples/s; num_threads=1: 1,732) and a `small` epoch takes ~70 s,
# which would multiply the demo's and the suite's time. Its own tests still run in `make test`
# (plugins/ctr-suan/conftest.py imports it from its folder; ~30 s), all but the entry-point check.
OPT_IN_PLUGINS := plugins/ctr-suan/pyproject.toml
# `make demo WITH_SUAN=1` (or `make ui WITH_SUAN=1`): ctr-suan is installed into $(SUAN_DIR)/, not into
# the venv (so `make test` keeps the default set), and that folder goes on PYTHONPATH, where its entry
# points are discovered: the demo ranks suan, lightsuan and distilled/lightsuan (~20 min on 2 cores)
WITH_SUAN ?=
SUAN_DIR := .suan_plugin
SUAN_STAMP := $(SUAN_DIR)/.installed
SUAN_ENV := $(if $(filter 1,$(WITH_SUAN)),PYTHONPATH=$(CURDIR)/$(SUAN_DIR)$(if $(PYTHONPATH),:$(PYTHONPATH)))
SUAN_DEP := $(if $(filter 1,$(WITH_SUAN)),$(SUAN_STAMP))
PLUGINS := $(filter-out $(OPT_IN_PLUGINS),$(wildcard plugins/*/pyproject.toml))
# PROFILE=tiny|small|large picks the synthetic profile (default: ctr_dagster.settings, i.e. small)
PROFILE ?=
export CTR_HOME ?= $(CURDIR)/.ctr_home
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: install demo test scale-test ui lint format bench clean dagster-home

$(STAMP): constraints.txt pyproject.toml $(PLUGINS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt setuptools wheel
	$(PY) -m pip install -q --no-build-isolation -c constraints.txt -e '.[dev,deploy,mlflow]' $(foreach p,$(dir $(PLUGINS)),-e ./$(p))
	$(PY) -m pip check
	touch $@

install: $(STAMP)

$(SUAN_STAMP): $(STAMP) plugins/ctr-suan/pyproject.toml $(wildcard plugins/ctr-suan/ctr_suan/*.py)
	rm -rf $(SUAN_DIR)
	$(PY) -m pip install -q --no-deps --no-build-isolation -c constraints.txt --target $(SUAN_DIR) ./plugins/ctr-suan
	touch $@

demo: install dagster-home $(SUAN_DEP)
	$(SUAN_ENV) $(VENV)/bin/ctr demo $(if $(PROFILE),--profile $(PROFILE))

# the suite in 2 processes (pytest-xdist; one test file per process, so a module's fixtures run once);
# PYTEST_WORKERS=0 runs it in one process. --no-loadscope-reorder keeps the collection order, which
# puts the slowest files first (tests/conftest.py SLOWEST_FIRST); xdist's default reorders files by
# test count, which sent the one-test browser file and the plugins' ablations to the end
PYTEST_WORKERS ?= 2
test: install dagster-home
	$(PY) -m pytest -q $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder)

# Celery workers + PostgreSQL + Redis (docs/deploy.md); also part of `make test`
scale-test: install
	$(PY) -m pytest -q -m scale

ui: install dagster-home $(SUAN_DEP)
	$(SUAN_ENV) $(if $(PROFILE),CTR_PROFILE=$(PROFILE)) $(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

dagster-home:
	@mkdir -p $(DAGSTER_HOME)
	@test -f $(DAGSTER_HOME)/dagster.yaml || printf 'telemetry:\n  enabled: false\n' > $(DAGSTER_HOME)/dagster.yaml

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .ctr_home .dagster_home $(SUAN_DIR)
