# LSTM Lab: `make book` builds the book, `make test` runs every check CI runs.
# Both create .venv and install the pinned requirements into it the first time.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: book test unit clean

$(BIN)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

# The whole book, every notebook executed; warnings are errors.
book: $(BIN)/.installed
	$(BIN)/jupyter-book build . --all -W --keep-going

# Unit tests (pytest's exit code 5, "no tests collected", counts as a failure here too).
unit: $(BIN)/.installed
	$(BIN)/python -m pytest -q

# Everything CI checks: unit tests, then the full book build.
test: unit book

clean:
	rm -rf _build
