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

# The demo is `scaleguard lab demo` (scaleguard/lab/demo.py), so Windows users run the same thing with
# Python alone: lab create, offline audit (exit 1 expected: the planted defects), the nodes served as WinRM
# hosts by the lab, live audit, fix --apply (must fix everything), audit again (must exit 0), fix again
# (must find nothing to do); the lab is stopped on the way out and the command exits 1 if a promise broke.
# The fix journal stays in the demo folder, not in the user's data folder.
demo: venv
	rm -rf $(DEMO_DIR)
	SCALEGUARD_LAB_PASSWORD='$(LAB_PASSWORD)' $(BIN)/scaleguard lab demo $(DEMO_DIR)

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
	rm -rf $(VENV) $(DEMO_DIR) .pytest-tmp .pytest_cache .mypy_cache .ruff_cache
