# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo

.PHONY: venv demo test lint typecheck check bench clean

$(BIN)/scaleguard: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(BIN)/scaleguard

demo: venv
	rm -rf $(DEMO_DIR)
	$(BIN)/scaleguard lab create $(DEMO_DIR)/evidence
	-$(BIN)/scaleguard audit --evidence $(DEMO_DIR)/evidence --out $(DEMO_DIR)/report
	@echo "report: $(abspath $(DEMO_DIR)/report/report.html)"

test: venv
	$(BIN)/ruff check scaleguard tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: venv
	$(BIN)/ruff check scaleguard tests bench

typecheck: venv
	$(BIN)/mypy

bench: venv
	$(BIN)/python bench/bench_offline_audit.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
