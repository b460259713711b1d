# LSTM Lab: `make book` builds the book, `make test` runs every check CI runs.
# Both create .venv and install the pinned requirements into it the first time.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# the venv's programs first on PATH: the chapters' C++ rung (chapter 3) runs the venv's ninja
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: book test unit browser clean

# The pins in requirements.txt install on Python 3.11 to 3.13 (tested on 3.11.2 and 3.13.0); say so
# before installing anything, rather than fail half-way through pip.
define CHECK_PYTHON
import sys
version = sys.version.split()[0]
if sys.version_info < (3, 11):
    sys.exit(f"make: the pinned requirements need Python 3.11 to 3.13, and $(PYTHON) is Python {version}.\n"
             "Install one of those and run, for example: make PYTHON=python3.12")
if sys.version_info >= (3, 14):
    print(f"make: note: the pins are tested on Python 3.11 to 3.13, and $(PYTHON) is Python {version}.",
          file=sys.stderr)
endef
export CHECK_PYTHON

$(BIN)/.installed: requirements.txt pyproject.toml
	@$(PYTHON) -c "$$CHECK_PYTHON"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

# The whole book, every notebook executed; warnings are errors.  The coursework page runs with its blanks filled
# by the package's solutions (LSTM_LAB_SOLUTIONS=1, lstm_lab.check.assignment).
book: $(BIN)/.installed
	LSTM_LAB_SOLUTIONS=1 $(BIN)/jupyter-book build . --all -W --keep-going

# Unit tests (pytest's exit code 5, "no tests collected", counts as a failure here too).
unit: $(BIN)/.installed
	$(BIN)/python -m pytest -q --ignore=tests/test_browser.py --ignore=tests/test_built_notebooks.py

# Checks of the built book: every cell that may raise raised what it declares (the executed notebooks), and
# every page in headless Chromium, offline: math typeset, no JavaScript error, nothing fetched from another
# host.  Needs the book built and Chromium installed (skipped, saying so, without).
browser: $(BIN)/.installed
	$(BIN)/python -m pytest -q -rs tests/test_built_notebooks.py tests/test_browser.py

# Everything CI checks: unit tests, the full book build, then the built pages in a browser.
test: unit book
	$(MAKE) --no-print-directory browser

clean:
	rm -rf _build
