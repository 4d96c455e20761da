# MobileSD: `make run` starts it, `make test` tests it. Both set themselves up.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PORT ?= 8000
PY := $(VENV)/bin/python
BIN := $(abspath $(VENV))/bin
# Python 3.13: pyenv's (selected by .python-version), else one on the PATH.
PYTHON ?= $(shell pyenv which python 2>/dev/null || command -v python3.13 || command -v python3)

# The test suite runs on PostgreSQL and Redis (started by scripts/services if down).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/mobilesd
TEST_BROKER_URL ?= redis://127.0.0.1:6379/9
# It runs in TEST_WORKERS processes (pytest-xdist), each module's tests in one of them, the
# longest modules first (tests/xdist_scheduling.py); worker n has its own test database
# (test_<name>_gw<n>) and Redis database (TEST_BROKER_URL's number plus n). 0: one process.
TEST_WORKERS ?= 2

# Every package at one version with its hashes, from pyproject.toml (`make lock` remakes it).
LOCK := requirements.lock

.PHONY: help install lock run test lint pytest services browser bench clean

help:
	@echo "make run    install, migrate and start MobileSD (web, worker, beat) on PORT=$(PORT)"
	@echo "make test   install and run the whole test suite (lint, types, tests)"
	@echo "make lint   ruff and mypy only"
	@echo "make lock   regenerate $(LOCK) from pyproject.toml (after changing a dependency)"

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 13) else "MobileSD needs Python 3.13 (found " + sys.version.split()[0] + "); install it, e.g. pyenv install 3.13")'
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the lock file changed since the last install. Exactly the locked
# versions, each checked against its hash; then MobileSD itself, without resolving anything
# (its build backend, setuptools, is locked too).
install: $(PY)
	@cmp -s $(LOCK) $(VENV)/.installed-requirements.lock || { \
		$(PY) -m pip install --quiet --require-hashes --no-deps -r $(LOCK) && \
		$(PY) -m pip install --quiet --no-deps --no-build-isolation -e . && \
		cp $(LOCK) $(VENV)/.installed-requirements.lock; }

# The dev and sentry extras are locked too: the suite tests both.
lock: install
	$(PY) -m piptools compile --quiet --generate-hashes --allow-unsafe --all-build-deps \
		--extra dev --extra sentry --strip-extras --no-emit-index-url --no-emit-find-links \
		--output-file $(LOCK) pyproject.toml

run: install
	$(PY) manage.py migrate --noinput
	@echo ""
	@echo "MobileSD is starting on the embedded default (SQLite and broker under data/):"
	@echo "  API         http://localhost:$(PORT)/api/v1/"
	@echo "  API docs    http://localhost:$(PORT)/api/v1/docs"
	@echo "  Admin       http://localhost:$(PORT)/admin/   (login: $(PY) manage.py createsuperuser)"
	@echo "  API key     $(PY) manage.py create_api_key --name my-phone --user me --scope admin"
	@echo "  No GPU?     $(PY) manage.py forge_simulator --port 7860, then add http://127.0.0.1:7860"
	@echo ""
	@# One web process unless WEB_CONCURRENCY says otherwise (here or in .env): without a
	@# shared cache (CACHE_URL), each process would keep its own rate-limit counts.
	PATH="$(BIN):$$PATH" WEB_CONCURRENCY="$${WEB_CONCURRENCY:-1}" honcho start --procfile Procfile --port $(PORT)

services:
	@scripts/services

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

# The browser tests drive Debian's chromium (Playwright never downloads a browser).
browser:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

pytest: install services browser
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) \
		$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test: lint pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
