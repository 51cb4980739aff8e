# The two quick-start commands: `make run` (the service, embedded mode, no Redis needed) and
# `make test` (the test suite; needs a Redis on 127.0.0.1:6379). Both install what they need
# into .venv from the pinned requirements files first.

PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run worker test lint bench docs

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# The client's own distribution (client/), which the tests use as a user installs it: editable,
# so they test this checkout's code; its dependencies are pinned in requirements-dev.txt. Its
# metadata (the version, the jobcache command) is installed again when it changes.
$(VENV)/.client: client/pyproject.toml client/jobcache_client/version.py $(VENV)/.dev
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --editable ./client
	touch $@

run: $(VENV)/.runtime
	$(VENV)/bin/uvicorn api.main:app --host $(HOST) --port $(PORT)

worker: $(VENV)/.runtime
	$(VENV)/bin/python -m worker

test: $(VENV)/.client lint
	$(VENV)/bin/pytest

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The documentation site (docs/, mkdocs.yml) into site/, as tests/test_docs.py builds it: strict,
# so a broken link fails it. (Material's banner about MkDocs 2.0 is not about this site.)
docs: $(VENV)/.dev
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict
