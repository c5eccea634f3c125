"""The storage RPC server on a real nats-server: internal errors reveal nothing but an error
id (also in the log), and at most ``concurrency`` requests are served at once."""

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
from nats.aio.client import Client

from infra.nats_server import NatsServer
from runtime.config import NatsConfig
from runtime.natsconn import close, connect
from runtime.rpc import RpcClient, RpcServer
from schemas.errors import ErrorCode, ProtocolError
from schemas.rpc import DeviceOwner, Owner
from storage_worker.store.base import StoreUnavailable


@pytest.fixture
async def nc(tmp_path: Path) -> AsyncIterator[Client]:
    with NatsServer(tmp_path / "nats") as server:
        client = await connect(NatsConfig(url=server.url), "test", "storage_worker")
        try:
            yield client
        finally:
            await close(client)


async def test_an_internal_error_gives_an_id_and_never_the_exception(nc: Client) -> None:
    async def broken(request: DeviceOwner) -> Owner:
        raise RuntimeError("password=hunter2 at /srv/secret.db")

    server = RpcServer(nc, "test", {"device_owner": broken})
    await server.start()
    try:
        with structlog.testing.capture_logs() as logs:
            with pytest.raises(ProtocolError) as info:
                await RpcClient(nc, timeout_s=5).call(
                    "device_owner", DeviceOwner(app="app", device="d"), Owner)
        assert info.value.code == ErrorCode.INTERNAL
        assert "hunter2" not in info.value.message and "RuntimeError" not in info.value.message
        match = re.fullmatch(r"internal error \(id ([0-9a-f]{12})\)", info.value.message)
        assert match, info.value.message
        [logged] = [entry for entry in logs if entry["event"] == "rpc_failed"]
        assert logged["error_id"] == match.group(1) and logged["op"] == "device_owner"
    finally:
        await server.drain()
        await server.stop()


async def test_a_store_outage_is_unavailable_not_internal(nc: Client) -> None:
    """A store that cannot be reached (``StoreUnavailable``) is the world's fault: the caller
    gets ``unavailable`` (503, retry), not ``internal`` (seen as a 500 on ``PUT /v1/keys``
    during a Cassandra timeout)."""
    async def away(request: DeviceOwner) -> Owner:
        raise StoreUnavailable("cassandra: OperationTimedOut")

    server = RpcServer(nc, "test", {"device_owner": away})
    await server.start()
    try:
        with pytest.raises(ProtocolError) as info:
            await RpcClient(nc, timeout_s=5).call(
                "device_owner", DeviceOwner(app="app", device="d"), Owner)
        assert info.value.code == ErrorCode.UNAVAILABLE
        assert "OperationTimedOut" not in info.value.message
    finally:
        await server.drain()
        await server.stop()


async def test_requests_past_the_concurrency_wait_for_a_slot(nc: Client) -> None:
    release = asyncio.Event()
    running = 0
    peak = 0

    async def slow(request: DeviceOwner) -> Owner:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await release.wait()
        finally:
            running -= 1
        return Owner(user=f"owner-of-{request.device}")

    server = RpcServer(nc, "test", {"device_owner": slow}, concurrency=2)
    await server.start()
    client = RpcClient(nc, timeout_s=20)
    try:
        calls = [asyncio.create_task(client.call(
            "device_owner", DeviceOwner(app="app", device=str(i)), Owner)) for i in range(6)]
        async with asyncio.timeout(10):
            while running < 2:
                await asyncio.sleep(0.01)
        release.set()
        owners = await asyncio.gather(*calls)
        assert [owner.user for owner in owners] == [f"owner-of-{i}" for i in range(6)]
        assert peak == 2  # six requests, never more than two at once
    finally:
        release.set()
        await server.drain()
        await server.stop()
