# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgeprune-installed
DEMO_OUT ?= edgeprune-out

.PHONY: setup demo test test-fast bench clean

setup: $(STAMP)

# torch/torchvision are pinned to the releases on this machine's disk (pip, not uv/poetry).
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	time $(VENV)/bin/edgeprune deploy --target host --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) bench/bench_runtimes.py --models demo,resnet18,mobilenet_v2 --out bench/results.json

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
