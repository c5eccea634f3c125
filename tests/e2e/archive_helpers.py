"""A system with the archive worker on a SeaweedFS bucket, and what the archive tests read:
history pages over REST, archive runs over NATS (as an operator's tool), the bucket, the
store."""

import asyncio
import base64
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from archive_worker.chunks import ArchiveIndex, conversation_prefix, index_key
from infra.seaweedfs import SeaweedFs
from runtime.config import load_config
from schemas.archive import ARCHIVE_RUN, MAX_TS
from storage_worker.store.base import ArchivedMessage, ArchiveMark, ArchivingStore
from storage_worker.store.factory import create_store
from tests.blob_helpers import s3_client
from tests.harness import System

APP = "default"


@contextmanager
def archive_system(root: Path, server: SeaweedFs, store_env: dict[str, str],
                   **archive_env: str) -> Iterator[tuple[System, str]]:
    """A system whose blob store is a fresh bucket of ``server``, with an archive worker
    that runs on request only; yields it and the bucket."""
    bucket = f"archive-{secrets.token_hex(6)}"
    env = {**store_env, "COURIER_MEDIA_BACKEND": "s3", "COURIER_MEDIA_S3_BUCKET": bucket,
           "COURIER_MEDIA_S3_ENDPOINT_URL": server.endpoint_url,
           "COURIER_MEDIA_S3_ACCESS_KEY": server.access_key,
           "COURIER_MEDIA_S3_SECRET_KEY": server.secret_key,
           "COURIER_MEDIA_S3_CREATE_BUCKET": "true", "COURIER_ARCHIVE_ENABLED": "false",
           **archive_env}
    with System(root, extra_env=env) as system:
        system.add_archive_worker()
        yield system, bucket
        assert not system.permission_violations(), "a service was refused by NATS"


async def run_archive(system: System, request: dict[str, Any] | bytes,
                      timeout: float = 300.0) -> dict[str, Any]:
    """An ``archive.run`` request as an operator's tool sends it; the decoded reply."""
    nc = await system.nats_client("admin")
    try:
        data = request if isinstance(request, bytes) else msgspec.json.encode(request)
        reply = await nc.request(ARCHIVE_RUN, data, timeout=timeout)
        decoded: dict[str, Any] = msgspec.json.decode(reply.data)
        return decoded
    finally:
        await nc.close()


async def get_json(url: str, token: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
            return response.status, await response.json(content_type=None)


async def page_all(system: System, conversation: str, token: str, *, forward: bool,
                   limit: int) -> list[tuple[int, str]]:
    """Every message of the conversation as (seq, body), paging with the cursors the API
    returns, in the order the pages come (oldest first when ``forward``)."""
    url = f"{system.url}/v1/conversations/{conversation}/messages?limit={limit}"
    cursor = "after=0" if forward else ""
    seen: list[tuple[int, str]] = []
    while True:
        status, page = await get_json(f"{url}&{cursor}", token)
        assert status == 200, page
        items = [(item["message"]["seq"], base64.b64decode(item["message"]["body"]).decode())
                 for item in page["items"]]
        assert [seq for seq, _ in items] == sorted(seq for seq, _ in items)
        seen.extend(items if forward else reversed(items))
        following = page["next_after"] if forward else page["next_before"]
        if following is None:
            return seen
        cursor = f"after={following}" if forward else f"before={following}"


def bucket_keys(server: SeaweedFs, bucket: str, conversation: str) -> set[str]:
    """The objects of the conversation's archive in the bucket."""
    s3 = s3_client(server)
    prefix = conversation_prefix(APP, conversation) + "/"
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.update(item["Key"] for item in page.get("Contents", []))
    return keys


def read_index(server: SeaweedFs, bucket: str, conversation: str) -> ArchiveIndex:
    body = s3_client(server).get_object(Bucket=bucket, Key=index_key(APP, conversation))["Body"]
    return msgspec.json.decode(body.read(), type=ArchiveIndex)


@asynccontextmanager
async def store_of(system: System) -> AsyncIterator[ArchivingStore]:
    """The system's store, opened beside its services (what is left in it)."""
    config = load_config(system.env("storage_worker"))
    store = create_store(config.store, default_app=config.app,
                         partitions=config.partitions.count)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def stored(system: System, conversation: str) -> tuple[list[ArchivedMessage], ArchiveMark]:
    """The conversation's messages still in the store, and its archive mark."""
    async with store_of(system) as store:
        return (await store.archive_rows(APP, conversation, 0, MAX_TS, 100_000),
                await store.archive_mark(APP, conversation))


async def send_all(client: Any, to: str, bodies: list[str], parallel: int = 50) -> None:
    """Send every body, ``parallel`` at a time, each accepted (stored) before this returns."""
    for start in range(0, len(bodies), parallel):
        await asyncio.gather(*(client.send(to, body.encode())
                               for body in bodies[start:start + parallel]))
