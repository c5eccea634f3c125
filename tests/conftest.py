"""Fixtures that start real servers (nats-server, the services, Cassandra) in a temp directory.

``STORE=cassandra`` runs the system fixtures on the Cassandra store (one node per session,
a fresh keyspace per system); the default is SQLite.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.cassandra_node import CassandraNode, fetch
from infra.seaweedfs import SeaweedFs
from tests.harness import System, cassandra_env

#: Schema changes without flushing the schema tables each time: a keyspace with all its
#: tables in ~0.3 s instead of ~3 s. Safe for a node that is stopped gracefully.
CASSANDRA_TEST_JVM_OPTIONS = ("-Dcassandra.test.flush_local_schema_changes=false",)
STORES = ("sqlite", "cassandra")


@pytest.fixture(scope="session")
def cassandra_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CassandraNode]:
    """One Cassandra node for the whole session, started on first use; tests isolate
    themselves with a keyspace each."""
    node = CassandraNode(tmp_path_factory.mktemp("cassandra"), lib_dir=fetch(),
                         jvm_options=CASSANDRA_TEST_JVM_OPTIONS)
    with node:
        yield node


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFs]:
    """One real SeaweedFS (S3 with a static identity) for the session, started on first use;
    tests isolate themselves with a bucket each."""
    with SeaweedFs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


def store_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Environment choosing the store named by ``$STORE`` for a new system."""
    store = os.environ.get("STORE", "sqlite")
    if store not in STORES:
        raise pytest.UsageError(f"STORE must be one of {', '.join(STORES)}, got {store!r}")
    if store == "sqlite":
        return {}
    node: CassandraNode = request.getfixturevalue("cassandra_node")
    return cassandra_env(node.contact_point)


@pytest.fixture
def system(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[System]:
    """nats-server + storage worker + one router + one gateway, stopped after the test."""
    with System(tmp_path, extra_env=store_env(request)) as system:
        yield system
    assert not system.permission_violations(), "a service was refused by NATS permissions"


@pytest.fixture(scope="module")
def shared_system(tmp_path_factory: pytest.TempPathFactory,
                  request: pytest.FixtureRequest) -> Iterator[System]:
    """One system for a whole module of tests that do not disturb each other."""
    with System(tmp_path_factory.mktemp("system"), extra_env=store_env(request)) as system:
        yield system
    assert not system.permission_violations(), "a service was refused by NATS permissions"
