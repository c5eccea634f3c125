"""One store fixture per backend: the contract suite runs against each.

The Cassandra backend uses the session's node (``tests/conftest.py``) and a fresh keyspace
per test; ``-m "not cassandra"`` runs SQLite alone without starting Java.
"""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from infra.cassandra_node import CassandraNode
from runtime.config import StoreConfig
from storage_worker.store.base import MessageStore
from storage_worker.store.cassandra import CassandraStore
from storage_worker.store.social import SocialStore
from storage_worker.store.social_factory import create_social_store
from storage_worker.store.sqlite import SqliteStore
from tests.harness import fresh_keyspace

BACKENDS = ["sqlite", pytest.param("cassandra", marks=pytest.mark.cassandra)]


def message_store(request: pytest.FixtureRequest, path: Path,
                  keyspace: str | None = None) -> MessageStore:
    """A closed message store of the backend ``request`` is parametrized with: SQLite at
    ``path``, or Cassandra in ``keyspace`` (default: a fresh one) on the session's node."""
    if request.param == "cassandra":
        node: CassandraNode = request.getfixturevalue("cassandra_node")
        return CassandraStore(StoreConfig(
            backend="cassandra", cassandra_contact_points=[node.contact_point],
            cassandra_keyspace=keyspace or fresh_keyspace()))
    return SqliteStore(path)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MessageStore]:
    backend = message_store(request, tmp_path / "store.db")
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture(params=BACKENDS)
async def social(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SocialStore]:
    """A ``SocialStore`` of each backend, in the database of a message store of its own."""
    messages = message_store(request, tmp_path / "social.db")
    await messages.open()
    backend = create_social_store(messages)
    try:
        await backend.open()
        yield backend
    finally:
        await backend.close()
        await messages.close()
