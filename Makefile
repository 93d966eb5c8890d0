# The two set-up commands (README): `make demo` runs the main job, `make test` runs the tests.
# Each installs what it needs on first use into .venv/ at the repository root.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: help install demo test lint format docs ciao ciao-music protos bench-generate bench-pipeline clean

help:
	@echo "make demo    the main job end to end (synthetic world -> pipeline -> evaluation -> gRPC calls)"
	@echo "make test    the test suite (what CI runs, after make lint)"
	@echo "make lint    ruff (lint + format check) and mypy (audiorec/, serving/, inspector/ strict; training/, app/ checked)"
	@echo "make format  ruff format and import order, in place"
	@echo "make docs    docs/results.md from the runs' metrics.json, serving/ and inspector/ READMEs from the code"
	@echo "make ciao CIAO=DIR  the pipeline and evaluation on real data (the public Ciao files in DIR)"
	@echo "make ciao-music CIAO=DIR  the same with Ciao Music (not Books) in the audiobook role"
	@echo "make bench-pipeline  the pipeline at 50k, 250k and 1M users: time, memory, slope"
	@echo "make install the virtual environment in .venv/ (each target installs it on first use)"

install: $(STAMP)

# The stamp depends on the files that define the environment, so editing them reinstalls.
$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "audiorec needs $(PYTHON) on PATH" >&2; exit 1; }
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	HNSWLIB_NO_NATIVE=1 $(VENV)/bin/pip install --quiet --disable-pip-version-check \
	    -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/audiorec demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

docs: $(STAMP)
	$(VENV)/bin/python -m app.docs docs

format: $(STAMP)
	$(VENV)/bin/ruff check --select I --fix .
	$(VENV)/bin/ruff format .

# The outside check on real data (docs/evaluation.md, "Real data"): the public Ciao files,
# read from the folder CIAO names, never copied into the repository.
ciao: $(STAMP)
	@test -n "$(CIAO)" || { echo "make ciao needs CIAO=DIR, the folder of the public Ciao files (docs/evaluation.md, Real data, says where they come from)" >&2; exit 2; }
	$(VENV)/bin/audiorec ciao --src $(CIAO) --workdir runs/ciao

# The second real world: another sparse category (Music, 1.9 ratings per item) beside DVDs.
ciao-music: $(STAMP)
	@test -n "$(CIAO)" || { echo "make ciao-music needs CIAO=DIR, the folder of the public Ciao files (docs/evaluation.md, Real data, says where they come from)" >&2; exit 2; }
	$(VENV)/bin/audiorec ciao --src $(CIAO) --sparse Music --workdir runs/ciao-music \
	    --config docs/results/ciao-music/levers.json

# Python stubs of the Recommend API, checked in; tests/test_serving.py fails when stale.
protos: $(STAMP)
	$(VENV)/bin/python -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. \
	    --grpc_python_out=. protos/audiorec/v1/recommender.proto

bench-generate: $(STAMP)
	$(VENV)/bin/python bench/bench_generate.py --scale large

# the pipeline at 50k, 250k and 1M users, backfill and daily run (about 1.5 hours)
bench-pipeline: $(STAMP)
	$(VENV)/bin/python bench/bench_pipeline.py --scales 50000,250000,1000000 --daily \
	    --root runs/bench --chart docs/pipeline_scaling.png --config '{"preset": "large"}'

clean:
	rm -rf $(VENV) .pytest_cache
