# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo
LAB_PASSWORD ?= scaleguard-demo-lab

.PHONY: venv demo test lint typecheck check bench clean

# python-gssapi and pykrb5 (Kerberos over WinRM, through pyspnego) compile against MIT krb5's headers;
# as root with apt they are installed here, otherwise the message says what to install.
$(BIN)/scaleguard: pyproject.toml
	@command -v krb5-config >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libkrb5-dev >/dev/null; \
	  else echo "scaleguard builds python-gssapi: install MIT Kerberos headers first (Debian/Ubuntu: libkrb5-dev, RHEL: krb5-devel)" >&2; exit 2; fi; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(BIN)/scaleguard

# The demo audit exits 1 on purpose (it finds the planted defects), hence the leading '-'.
# Live part: the same nodes served as WinRM hosts by the lab (background); audited over WinRM (finds the
# planted defects, exit 1 expected), fixed over WinRM, audited again (must exit 0: every planted defect
# fixed), fixed again (must find nothing to do); the lab is stopped on the way out. The fix journal stays
# in the demo folder, not in the user's data folder.
DEMO_INVENTORY := $(DEMO_DIR)/lab/inventory.yaml
DEMO_FIX := $(BIN)/scaleguard fix --inventory $(DEMO_INVENTORY) --journal $(DEMO_DIR)/fix/journal.sqlite --apply --yes

demo: venv
	rm -rf $(DEMO_DIR)
	$(BIN)/scaleguard lab create $(DEMO_DIR)/CONTOSO-SSIS
	-$(BIN)/scaleguard audit --evidence $(DEMO_DIR)/CONTOSO-SSIS --out $(DEMO_DIR)/report
	@echo "report: $(abspath $(DEMO_DIR)/report/report.html)"
	@export SCALEGUARD_LAB_PASSWORD='$(LAB_PASSWORD)'; \
	$(BIN)/scaleguard lab serve --evidence $(DEMO_DIR)/CONTOSO-SSIS --inventory-out $(DEMO_INVENTORY) \
		--latency-ms 20 --exec-ms 300 & lab=$$!; trap 'kill $$lab 2>/dev/null; wait $$lab' EXIT; \
	for i in $$(seq 200); do [ -f $(DEMO_INVENTORY) ] && break; sleep 0.1; done; \
	echo "== live audit over WinRM (the planted defects fail)"; \
	$(BIN)/scaleguard audit --inventory $(DEMO_INVENTORY) --out $(DEMO_DIR)/live-report; \
	echo "== fix --apply over WinRM"; \
	$(DEMO_FIX) --out $(DEMO_DIR)/fix || { echo "demo: the fix did not fix everything"; exit 1; }; \
	echo "== audit after the fix (must be clean)"; \
	$(BIN)/scaleguard audit --inventory $(DEMO_INVENTORY) --out $(DEMO_DIR)/after-fix \
		|| { echo "demo: the audit after the fix is not clean"; exit 1; }; \
	echo "== fix --apply again (must find nothing to do)"; \
	again=$$($(DEMO_FIX) 2>&1) || { echo "$$again"; echo "demo: the second fix failed"; exit 1; }; \
	echo "$$again"; \
	case "$$again" in *"nothing to do"*) ;; *) echo "demo: the second fix changed something"; exit 1;; esac; \
	echo "live report (collected over WinRM from the lab): $(abspath $(DEMO_DIR)/live-report/report.html)"; \
	echo "fix (plan and what it did):                      $(abspath $(DEMO_DIR)/fix/plan.json) $(abspath $(DEMO_DIR)/fix/apply.json)"; \
	echo "report after the fix (clean):                    $(abspath $(DEMO_DIR)/after-fix/report.html)"

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
