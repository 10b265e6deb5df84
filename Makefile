# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo
LAB_PASSWORD ?= scaleguard-demo-lab

.PHONY: venv demo test lint typecheck check bench clean

$(BIN)/scaleguard: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(BIN)/scaleguard

# The demo audit exits 1 on purpose (it finds the planted defects), hence the leading '-'.
demo: venv
	rm -rf $(DEMO_DIR)
	$(BIN)/scaleguard lab create $(DEMO_DIR)/CONTOSO-SSIS
	-$(BIN)/scaleguard audit --evidence $(DEMO_DIR)/CONTOSO-SSIS --out $(DEMO_DIR)/report
	@echo "report: $(abspath $(DEMO_DIR)/report/report.html)"
	@# Live: the same nodes served as WinRM hosts by the lab (background), audited over WinRM, lab stopped.
	@export SCALEGUARD_LAB_PASSWORD='$(LAB_PASSWORD)'; \
	$(BIN)/scaleguard lab serve --evidence $(DEMO_DIR)/CONTOSO-SSIS --inventory-out $(DEMO_DIR)/lab/inventory.yaml \
		--latency-ms 20 --exec-ms 300 & lab=$$!; trap 'kill $$lab 2>/dev/null; wait $$lab' EXIT; \
	for i in $$(seq 200); do [ -f $(DEMO_DIR)/lab/inventory.yaml ] && break; sleep 0.1; done; \
	$(BIN)/scaleguard audit --inventory $(DEMO_DIR)/lab/inventory.yaml --out $(DEMO_DIR)/live-report; \
	echo "live report (collected over WinRM from the lab): $(abspath $(DEMO_DIR)/live-report/report.html)"

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
