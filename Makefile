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
	# The main job on the shipped choi-tiny weights: four HOI-World test pairs (examples/jobs.jsonl), two
	# candidates each, then one customized pair: the kicking example's person riding the example bicycle.
	$(CHOI) generate --jobs examples/jobs.jsonl --out outputs/demo --num-images 2
	$(CHOI) generate --human examples/kick_ball_human.png --object examples/ride_bicycle_object.png \
		--interaction "a person riding a bicycle" --seed 0 --num-images 2 --out outputs/demo/custom
	@echo "demo: images in outputs/demo/<job>/image_K.png, masks in mask_K_preview.png, settings in choi.json"

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check src tests benchmarks docs
	$(VENV)/bin/ruff format --check src tests benchmarks docs

bench: install
	$(PY) benchmarks/bench_world.py
	$(PY) benchmarks/bench_generate.py

clean:
	rm -rf outputs .pytest_cache .ruff_cache
