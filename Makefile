# Two commands on a fresh machine: `make run` and `make test`. Every set-up step lives here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PORT   ?= 8000
HOST   ?= 127.0.0.1
SIM_PORT ?= 8081

.PHONY: setup run simulator check test test-fast audit wheel-smoke screenshots bench clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "twofa needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

setup: $(STAMP)

# The embedded demo: SQLite under var/, the gateway on PORT, the Duo simulator on PORT+1, demo users.
run: setup
	$(BIN)/twofa demo --port $(PORT) --database var/demo.db

# The Duo simulator on its own.
simulator: setup
	$(BIN)/twofa simulator serve --host $(HOST) --port $(SIM_PORT)

check: setup
	$(BIN)/ruff format --check src tests bench .ci
	$(BIN)/ruff check src tests bench .ci
	$(BIN)/mypy
	$(BIN)/lint-imports

# Two processes: most tests wait on servers, pages and sockets, so two halve the wall time.
test: check
	$(BIN)/pytest -q -n 2 --durations=15

test-fast: setup
	$(BIN)/pytest -q -x -m "not integration"

# The pinned set (constraints.txt) against known vulnerabilities: live when PyPI's or OSV's service
# answers (refreshing .ci/known-vulnerabilities.json), else against that snapshot; never hangs.
audit: setup
	$(BIN)/python .ci/audit_dependencies.py

# The wheel as users get it: built, installed with the pins in a fresh venv outside the checkout,
# and `twofa demo` started from it and asked for /healthz, /login and a static file.
wheel-smoke: setup
	$(BIN)/python .ci/wheel_smoke.py

# The README's screenshots, taken again by the end-to-end tests that show those pages.
screenshots: setup
	TWOFA_UPDATE_SCREENSHOTS=1 $(BIN)/pytest -q tests/e2e/test_admin_console_e2e.py \
		tests/e2e/test_backup_method_e2e.py tests/e2e/test_webauthn_e2e.py

bench: setup
	$(BIN)/python bench/duo_push_capacity.py
	$(BIN)/python bench/forward_auth.py
	$(BIN)/python bench/totp_verify.py
	$(BIN)/python bench/totp_floor.py
	$(BIN)/python bench/change_feed.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis src/*.egg-info
