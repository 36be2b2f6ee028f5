# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgeprune-installed
DEMO_OUT ?= edgeprune-out

.PHONY: setup system-deps demo test test-fast bench clean

# Debian packages the board targets need without a board (aarch64 cross compiler, qemu-user) and
# the tests' loopback sshd. Installed when run as root; otherwise the command is printed.
SYSTEM_PACKAGES := g++-aarch64-linux-gnu gcc-aarch64-linux-gnu qemu-user openssh-server openssh-client

setup: system-deps $(STAMP)

system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null) \
	  || echo "warning: could not install $$missing (board targets without a board need them)"; \
	else echo "note: board targets without a board need: sudo apt-get install $$missing"; fi

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
