# Courier: `make run` starts the system on its embedded defaults, `make test` runs every test.
# Everything (virtual env, wheels, nats-server, Cassandra jars) is installed by these targets.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
RUN_ARGS ?=
SCENARIOS ?=
CHAOS_ARGS ?=

.PHONY: run test test-cassandra lint schemas bench chaos clean cassandra-fetch

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m infra.embedded $(RUN_ARGS)

test: $(STAMP) cassandra-fetch
	$(PY) -m pytest $(PYTEST_ARGS)

# The end-to-end suite again with the Cassandra store behind every system (about 4 minutes).
test-cassandra: $(STAMP) cassandra-fetch
	STORE=cassandra $(PY) -m pytest tests/e2e $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

schemas: $(STAMP)
	$(PY) -m schemas.export docs/schema

cassandra-fetch: $(STAMP)
	$(PY) -m infra.cassandra_node fetch

bench: $(STAMP)
	$(PY) -m bench $(if $(SCENARIOS),--scenarios "$(SCENARIOS)",) $(if $(STORE),--store $(STORE),)

# The fault-injection suite (about 10 minutes, not part of `make test`): rewrites the results
# block of docs/reliability.md. CHAOS_ARGS="--faults router-kill,nats-kill --duration 20".
chaos: $(STAMP)
	$(PY) -m chaos $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .data .pytest_cache
