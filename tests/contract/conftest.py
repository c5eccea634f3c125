"""One store fixture per backend: the contract suite runs against each (message stores,
social stores, blob stores).

The Cassandra backend uses the session's node (``tests/conftest.py``) and a fresh keyspace
per test; ``-m "not cassandra"`` runs SQLite alone without starting Java.
"""

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from blobs.base import BlobStore
from blobs.local import LocalBlobStore
from blobs.s3 import S3BlobStore
from gateway.http.media_rest import LocalBlobRoutes
from gateway.http.problems import problem_middleware
from infra.cassandra_node import CassandraNode
from infra.seaweedfs import SeaweedFs
from runtime.config import StoreConfig
from storage_worker.store.base import MessageStore
from storage_worker.store.cassandra import CassandraStore
from storage_worker.store.keys import KeyStore
from storage_worker.store.keys_factory import create_key_store
from storage_worker.store.social import SocialStore
from storage_worker.store.social_factory import create_social_store
from storage_worker.store.sqlite import SqliteStore
from tests.blob_helpers import local_held, s3_held
from tests.harness import fresh_keyspace

BACKENDS = ["sqlite", pytest.param("cassandra", marks=pytest.mark.cassandra)]


def message_store(request: pytest.FixtureRequest, path: Path,
                  keyspace: str | None = None, partitions: int = 1) -> MessageStore:
    """A closed message store of the backend ``request`` is parametrized with: SQLite at
    ``path``, or Cassandra in ``keyspace`` (default: a fresh one) on the session's node."""
    if request.param == "cassandra":
        node: CassandraNode = request.getfixturevalue("cassandra_node")
        return CassandraStore(StoreConfig(
            backend="cassandra", cassandra_contact_points=[node.contact_point],
            cassandra_keyspace=keyspace or fresh_keyspace()), partitions=partitions)
    return SqliteStore(path, partitions=partitions)


async def drop_keyspace(backend: MessageStore) -> None:
    """Drop an open Cassandra store's keyspace (SQLite: nothing). The session's one node
    holds memtables of every table it has written to: a few dozen test keyspaces of this
    schema fill its 1 GB heap."""
    if isinstance(backend, CassandraStore):
        await backend._cql(f"DROP KEYSPACE IF EXISTS {backend.keyspace}", in_keyspace=False)


@pytest.fixture
def partitions() -> int:
    """The partition count of ``store``: 1, unless a test module overrides this fixture (the
    message store contract runs with 1 and 4)."""
    return 1


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path,
                partitions: int) -> AsyncIterator[MessageStore]:
    backend = message_store(request, tmp_path / "store.db", partitions=partitions)
    await backend.open()
    try:
        yield backend
        await drop_keyspace(backend)
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
        await drop_keyspace(messages)
    finally:
        await backend.close()
        await messages.close()


# ---------------------------------------------------------------------- blob stores


@dataclass
class BlobBackend:
    """A blob store under test and what fetches its URLs."""

    store: BlobStore
    http: aiohttp.ClientSession
    #: What the storage holds, read past the store: objects, open multipart uploads, parts.
    held: Callable[[], list[str]]

    async def leftovers(self) -> list[str]:
        return await asyncio.to_thread(self.held)


async def _serve_local(store: LocalBlobStore) -> web.AppRunner:
    """The gateway's local-blob routes on a port of their own."""
    routes = LocalBlobRoutes(store)
    app = web.Application(middlewares=[problem_middleware])
    app.router.add_put("/v1/media/local/{app}/{blob}", routes.put)
    app.router.add_get("/v1/media/local/{app}/{blob}", routes.get)
    app.router.add_put("/v1/media/local/{app}/{blob}/parts/{part}", routes.put_part)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    store.base_url = f"http://127.0.0.1:{port}"
    return runner


@pytest.fixture(params=["local", "s3"])
async def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobBackend]:
    """Each blob store: local files behind a real aiohttp server, S3 on a real SeaweedFS (a
    fresh bucket per test)."""
    runner: web.AppRunner | None = None
    backend: BlobStore
    if request.param == "s3":
        server: SeaweedFs = request.getfixturevalue("seaweedfs")
        bucket = f"t-{uuid.uuid4().hex[:20]}"
        backend = S3BlobStore(bucket, endpoint_url=server.endpoint_url,
                              access_key=server.access_key, secret_key=server.secret_key,
                              create_bucket=True)
        held = s3_held(server, bucket)
    else:
        local = LocalBlobStore(tmp_path / "media", secrets.token_bytes(32))
        runner = await _serve_local(local)
        backend = local
        held = local_held(local.root)
    await backend.open()
    try:
        async with aiohttp.ClientSession() as http:
            yield BlobBackend(backend, http, held)
    finally:
        await backend.close()
        if runner is not None:
            await runner.cleanup()


@pytest.fixture
async def keys(store: MessageStore) -> AsyncIterator[KeyStore]:
    """The key directory of each backend, in the database of that backend's ``store``."""
    backend = create_key_store(store)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()
