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
from storage_worker.store.keys import KeyStore
from storage_worker.store.keys_factory import create_key_store
from storage_worker.store.social import SocialStore
from storage_worker.store.social_sqlite import SqliteSocialStore
from storage_worker.store.sqlite import SqliteStore
from tests.harness import fresh_keyspace

BACKENDS = ["sqlite", pytest.param("cassandra", marks=pytest.mark.cassandra)]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MessageStore]:
    backend: MessageStore
    if request.param == "cassandra":
        node: CassandraNode = request.getfixturevalue("cassandra_node")
        backend = CassandraStore(StoreConfig(
            backend="cassandra", cassandra_contact_points=[node.contact_point],
            cassandra_keyspace=fresh_keyspace()))
    else:
        backend = SqliteStore(tmp_path / "store.db")
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


#: Groups and contacts backends (``SocialStore``); a Cassandra one joins this list when written.
SOCIAL_BACKENDS = ["sqlite"]


@pytest.fixture(params=SOCIAL_BACKENDS)
async def social(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SocialStore]:
    backend = SqliteSocialStore(SqliteStore(tmp_path / "social.db"), owned=True)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
async def keys(store: MessageStore) -> AsyncIterator[KeyStore]:
    """The key directory of each backend, in the database of that backend's ``store``."""
    backend = create_key_store(store)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()
