# Everything runs from .venv, which `make venv` creates on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv sysdeps demo test lint format bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(BIN)/filmweaver demo --out demo_out

# System packages the tests need: Debian's chromium for the scene-browser test (root or sudo).
sysdeps:
	test -x /usr/bin/chromium || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

test: venv sysdeps
	$(BIN)/ruff check --no-cache . && $(BIN)/ruff format --no-cache --check .
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check --no-cache . && $(BIN)/ruff format --no-cache --check .

format: venv
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

bench: venv
	$(BIN)/python benchmarks/shot_accuracy.py
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
