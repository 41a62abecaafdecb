# Everything a fresh machine needs: `make demo` and `make test` create .venv and install into it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test bench lint clean audiobooks

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m pipeline convert samples/the-lantern-keeper.md -o demo-output --config configs/local.toml

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) bench/run.py

lint: $(STAMP)
	$(PY) -m ruff check pipeline tests bench
	$(PY) -m ruff format --check pipeline tests bench
	$(PY) -m mypy

clean:
	rm -rf demo-output bench-output .pytest_cache .mypy_cache .ruff_cache .hypothesis

# --- Convert a folder of books; make's own timestamps decide what is out of date. Safe with `make -j`:
# every book has its own output folder and the shared parts cache is written atomically.
#   make audiobooks BOOKS=~/books OUT=~/audiobooks [CONFIG=configs/whatai.toml]
BOOKS  ?= books
OUT    ?= audiobooks
CONFIG ?= configs/default.toml
BOOK_FILES := $(wildcard $(BOOKS)/*.txt $(BOOKS)/*.md $(BOOKS)/*.epub $(BOOKS)/*.html $(BOOKS)/*.htm)
REPORTS    := $(foreach b,$(BOOK_FILES),$(OUT)/$(basename $(notdir $(b)))/report.json)
CONVERT     = $(PY) -m pipeline --quiet convert $< -o $(@D) --config $(CONFIG)

# A failed conversion must not leave a report that make would take as up to date.
.DELETE_ON_ERROR:

audiobooks: $(STAMP) $(REPORTS)

$(OUT)/%/report.json: $(BOOKS)/%.txt $(CONFIG) | $(STAMP)
	$(CONVERT)
$(OUT)/%/report.json: $(BOOKS)/%.md $(CONFIG) | $(STAMP)
	$(CONVERT)
$(OUT)/%/report.json: $(BOOKS)/%.epub $(CONFIG) | $(STAMP)
	$(CONVERT)
$(OUT)/%/report.json: $(BOOKS)/%.html $(CONFIG) | $(STAMP)
	$(CONVERT)
$(OUT)/%/report.json: $(BOOKS)/%.htm $(CONFIG) | $(STAMP)
	$(CONVERT)
