# divert: `make test` and `make run` install what is missing, then do their job.
# System packages come from Debian (apt, as root); Python packages go into
# .venv, made with /usr/bin/python3: the Python that Kamailio embeds.

SYSTEM_PYTHON := /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: deps system-packages venv postgres test lint unit run cluster bench bench-sync bench-cluster bench-api soak clean

deps: system-packages venv

system-packages:
	@scripts/install-system-packages

venv: $(STAMP)

$(STAMP): pyproject.toml | system-packages
	$(SYSTEM_PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

postgres: system-packages
	@scripts/ensure-postgres

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

# Every test: unit, portal on SQLite and on the real PostgreSQL cluster.
test: deps postgres lint
	@scripts/run-pytest

# Only the fast tests that need no database server.
unit: venv
	@scripts/run-pytest -m "not postgres"

# The demo node in the foreground until Ctrl-C: embedded SQLite portal with
# demo data (made once, in var/), carrier at 127.0.0.2:5060, SIP on 127.0.0.1:5060;
# the portal API and the self-care page on http://127.0.0.1:8080 beside it.
run: deps
	@scripts/demo-portal
	@scripts/demo-api start
	$(VENV)/bin/divert --portal sqlite:///var/portal.db run --listen 127.0.0.1:5060 \
		--state-dir var --carrier 127.0.0.2:5060; status=$$?; scripts/demo-api stop; exit $$status

# Three nodes as one cluster on 127.0.2.1-3, one PostgreSQL portal (README
# "Several nodes"), until Ctrl-C
cluster: deps postgres
	$(PY) scripts/cluster-demo

# Sync worker and store figures (issue 3): 1,000,000 numbers, a few minutes.
# divert against a native kamailio.cfg, and the core's costs (issue 6): ~6 min
bench: deps
	$(PY) bench/bench.py

bench-sync: deps postgres
	$(PY) bench/sync_bench.py

# Three nodes: a portal change and a registration reaching each (issue 17)
bench-cluster: deps postgres
	$(PY) bench/cluster_bench.py

# The portal API against PostgreSQL with 100,000 numbers (issue 18): about a minute
bench-api: deps postgres
	$(PY) bench/api_bench.py

# A node under 100 calls/s for 5 minutes, its memory sampled (not in `make test`):
# figures in var/soak/soak.json.  Shorter: $(PY) bench/soak.py --seconds 20
soak: deps
	$(PY) bench/soak.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
