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
	$(PY) -m pip install --quiet -e '.[dev,distributed,web]'
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

# --- Convert a folder of books with `audiobook batch`: one shared pool, unchanged books settled without a
# request, one bad book never stops the others (the target fails at the end, naming it), and books of the same
# name (book.txt, book.md) each get a folder of their own.
#   make audiobooks BOOKS=~/books OUT=~/audiobooks [CONFIG=configs/whatai.toml]
BOOKS  ?= books
OUT    ?= audiobooks
CONFIG ?= configs/default.toml

audiobooks: $(STAMP)
	$(PY) -m pipeline batch "$(BOOKS)" --output "$(OUT)" --config "$(CONFIG)"
