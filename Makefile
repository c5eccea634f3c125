# Courier: `make run` starts the system on its embedded defaults, `make test` runs every test.
# Everything (virtual env, wheels, nats-server, Cassandra jars) is installed by these targets.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# `make test` runs in this many pytest-xdist processes (each starts its own servers; 1: serial).
TEST_WORKERS ?= 2
RUN_ARGS ?=
SCENARIOS ?=
CHAOS_ARGS ?=
CLUSTER_ARGS ?=

.PHONY: run test test-cassandra test-cluster cluster cluster-stop cluster-status lint schemas bench chaos \
	clean cassandra-fetch

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m infra.embedded $(RUN_ARGS)

test: $(STAMP) cassandra-fetch
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# The end-to-end suite again with the Cassandra store behind every system (about 4 minutes).
test-cassandra: $(STAMP) cassandra-fetch
	STORE=cassandra $(PY) -m pytest tests/e2e $(PYTEST_ARGS)

# A small deployment on loopback (about 2 minutes to start, ~5 GB of memory): 3 NATS nodes
# (JetStream, R3), 3 Cassandra nodes on 127.0.0.1-3 (RF 3, LOCAL_QUORUM), SeaweedFS, 2 gateways,
# 2 routers, 2 storage workers, the push and archive workers; a supervisor keeps them running
# in the background. Data, state and logs in .cluster/ (CLUSTER_ARGS="--data-dir DIR").
cluster: $(STAMP) cassandra-fetch
	$(PY) -m infra.cluster up $(CLUSTER_ARGS)

cluster-stop: $(STAMP)
	$(PY) -m infra.cluster down $(CLUSTER_ARGS)

# Each process and its health, partition leases, stream leaders, the Cassandra ring; exit 1 when
# anything is unhealthy.
cluster-status: $(STAMP)
	$(PY) -m infra.cluster status $(CLUSTER_ARGS)

# The failover tests (tests/cluster/, marker `cluster`, deselected from `make test`): a cluster
# of its own, faults under client traffic (about 15 minutes); rewrites the cluster results block
# of docs/reliability.md.
test-cluster: $(STAMP) cassandra-fetch
	$(PY) -m pytest tests/cluster -m cluster $(PYTEST_ARGS)

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
	rm -rf $(VENV) .data .cluster .pytest_cache
