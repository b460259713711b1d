# LSTM Lab: `make book` builds the book, `make test` runs every check CI runs.
# Both create .venv and install the pinned requirements into it the first time.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The lowest versions lstm_lab declares, tested by `make floor` in their own venv (requirements-floor.txt)
FLOOR_PYTHON ?= python3.10
FLOOR := .venv-floor
# the venv's programs first on PATH: the chapters' C++ rung (chapter 3) runs the venv's ninja
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: book test unit floor floor-checks browser clean

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

# The floors: pyproject.toml's lowest versions (Python 3.10, torch 2.4, numpy 1.22, matplotlib 3.5, tqdm 4.60,
# ninja 1.10), installed exactly from requirements-floor.txt with the tools the tests need.  The unit tests run on
# them; then chapter 1 runs on the chapters' floors (requirements-floor-chapters.txt: matplotlib 3.7, which
# today's Jupyter inline backend needs, and ipywidgets 7.7; the next run puts the package's floors back).  Without
# $(FLOOR_PYTHON) this is skipped, saying so, unless LSTM_LAB_REQUIRE_FLOOR is set (.ci/run sets it).
$(FLOOR)/.installed: requirements-floor.txt pyproject.toml
	$(FLOOR_PYTHON) -m venv $(FLOOR)
	$(FLOOR)/bin/pip install -q -r requirements-floor.txt
	$(FLOOR)/bin/pip install -q --no-deps -e .
	touch $@

floor:
	@if $(FLOOR_PYTHON) --version >/dev/null 2>&1; then $(MAKE) --no-print-directory floor-checks; \
	elif [ -n "$$LSTM_LAB_REQUIRE_FLOOR" ]; then echo "make floor: $(FLOOR_PYTHON) is missing" >&2; exit 1; \
	else echo "warning: $(FLOOR_PYTHON) is missing: the floor checks are skipped (FLOOR_PYTHON=... names another)" >&2; fi

# (the floor venv's programs first on PATH, so that its ninja builds chapter 3's C++ rung in the tests)
floor-checks: $(FLOOR)/.installed
	$(FLOOR)/bin/pip install -q -r requirements-floor.txt
	PATH=$(abspath $(FLOOR)/bin):$$PATH $(FLOOR)/bin/python -m pytest -q -p no:cacheprovider \
	    --ignore=tests/test_browser.py --ignore=tests/test_built_notebooks.py
	$(FLOOR)/bin/pip install -q -r requirements-floor-chapters.txt
	PATH=$(abspath $(FLOOR)/bin):$$PATH $(FLOOR)/bin/python tools/run_chapters.py chapters/01_lstm_cell.ipynb

# Everything CI checks, one after the other: unit tests, the full book build, the floor checks, then the built pages
# in a browser.  (Building the book beside the unit tests took 14 min instead of about 25, but twice in six runs a
# page's kernel and the book's executor then waited on each other for good: not in parallel until that is understood.)
test: unit book
	$(MAKE) --no-print-directory floor
	$(MAKE) --no-print-directory browser

clean:
	rm -rf _build
