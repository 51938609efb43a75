# Every target installs what it needs first, so a fresh machine (or CI) only ever runs `make demo` / `make test`.
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
CHOI    = $(VENV)/bin/choi
STAMP   = $(VENV)/.installed

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: install
	$(CHOI) data synth --out outputs/demo-data --n 48 --split test --seed 0 --shard-size 16
	$(CHOI) data preview outputs/demo-data --out outputs/demo-sheet.png --n 16
	@echo "demo: dataset in outputs/demo-data, contact sheet in outputs/demo-sheet.png"

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: install
	$(PY) benchmarks/bench_world.py

clean:
	rm -rf outputs .pytest_cache .ruff_cache
