# Every target depends on the venv; `make install` builds it from nothing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint unit demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check bulkusers tests
	$(BIN)/ruff format --check bulkusers tests
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint unit

demo: $(STAMP)
	$(BIN)/python -m bulkusers.demo

bench: $(STAMP)
	$(BIN)/python -m bulkusers.bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
