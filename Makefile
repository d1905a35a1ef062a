# The two commands a user needs: `make run` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DATA ?= ./data
JS := tests/js
JS_STAMP := $(JS)/node_modules/.installed-stamp

.PHONY: run test check lint typecheck imports pytest soak bench lock diagrams clean cluster cluster-stop

$(STAMP): pyproject.toml requirements.lock scripts/check-setup.sh
	@scripts/check-setup.sh $(PYTHON)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	@# trio-typing (a libp2p dependency) ships stubs for old trio releases that shadow trio's own
	@# inline types in mypy; only the stubs go, its runtime module stays.
	@rm -rf $(VENV)/lib/python*/site-packages/trio-stubs
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/indexer daemon --data-dir $(DATA)

test: $(STAMP) lint typecheck imports pytest

lint: $(STAMP)
	$(BIN)/ruff check --no-cache .
	$(BIN)/ruff format --no-cache --check .

typecheck: $(STAMP)
	$(BIN)/mypy

imports: $(STAMP)
	$(BIN)/lint-imports

# The real JS clients the interop tests drive (delegated routing, IPNI content routing).
$(JS_STAMP): $(JS)/package.json $(JS)/package-lock.json
	@command -v npm >/dev/null || { echo "setup: node and npm are needed for the JS interop tests. Debian: apt-get install nodejs npm" >&2; exit 1; }
	cd $(JS) && npm ci --no-audit --no-fund
	@touch $@

# Three pytest-xdist workers, a test file each at a time (its module fixtures set up once); the
# tests are written to pass under load (events, not sleeps), and half of them wait on processes.
PYTEST_WORKERS ?= 3
pytest: $(STAMP) $(JS_STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile

# The long variants (an announce flood of 60,000 in a subprocess, ...): minutes, not in `make test`.
soak: $(STAMP)
	$(BIN)/pytest -m soak

# A local cluster on loopback for trying scale-out: 3+3 Valkey, 3 etcd, 3 daemons (docs/scale-out.md).
cluster: $(STAMP)
	$(BIN)/python -m tests.cluster.local up --dir cluster

cluster-stop: $(STAMP)
	$(BIN)/python -m tests.cluster.local down --dir cluster

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH)

# Regenerate requirements.lock from a fresh resolve of pyproject.toml (needs the registry).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --disable-pip-version-check '.[dev]'
	.lock-venv/bin/python -m pip freeze --exclude ipni-indexer > requirements.lock
	rm -rf .lock-venv

# Regenerate the diagrams in assets/ from their sources (needs graphviz: apt-get install graphviz).
diagrams: $(STAMP)
	$(BIN)/python assets/packages.py
	$(BIN)/python assets/render.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis $(JS)/node_modules
