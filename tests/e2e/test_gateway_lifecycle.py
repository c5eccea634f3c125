"""Gateway behaviour around its sockets: slow consumers, shutdown, health and metrics."""

import asyncio
from pathlib import Path

import aiohttp
import pytest

from client.sdk import CourierClient
from schemas.errors import CloseCode
from tests.conftest import store_env
from tests.harness import System


async def wait_closed(client: CourierClient, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not client.closed:
            await asyncio.sleep(0.05)


async def test_slow_reader_is_closed_and_its_messages_wait(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    with System(tmp_path, {**store_env(request), "COURIER_GATEWAY_SEND_QUEUE": "8",
                           "COURIER_GATEWAY_MAX_FRAME_BYTES": "200000"}) as system:
        bob_creds = await system.device("bob", "bob-phone")
        alice = await system.connect(await system.device("alice"))
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"{system.url}/v1/ws",
                                          headers={"Authorization": f"Bearer {bob_creds.token}"},
                                          max_msg_size=0)
            await ws.send_str('{"type": "sync"}')
            while b'"synced"' not in (await ws.receive()).data.encode():
                pass
            body = b"x" * 60_000
            for i in range(150):  # ~12 MB: more than the socket buffers hold
                await alice.send("bob", body + str(i).encode())
            async with asyncio.timeout(30):  # read nothing until the gateway gives up on us
                while "courier_gateway_closes_total{code=\"4008\"} 1.0" not in (
                        await _metrics(session, system.url)):
                    await asyncio.sleep(0.1)
            async with asyncio.timeout(30):  # then read what was buffered, up to the close
                while (await ws.receive()).type not in (aiohttp.WSMsgType.CLOSE,
                                                        aiohttp.WSMsgType.CLOSED):
                    pass
            assert ws.close_code == CloseCode.SLOW_CONSUMER
        bob = await system.connect(bob_creds, sync=False)
        await bob.sync()
        got = [await bob.next_message() for _ in range(150)]
        assert [m.body[60_000:].decode() for m in got] == [str(i) for i in range(150)]
        await bob.close()
        await alice.close()


async def _metrics(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(f"{url}/metrics") as response:
        return await response.text()


async def test_shutdown_drains_sockets_with_moved(system: System) -> None:
    alice = await system.connect(await system.device("alice"))
    gateway, _ = system.gateways[0]
    gateway.stop()  # SIGTERM: drain
    await wait_closed(alice)
    assert alice.close_code == CloseCode.MOVED
    assert gateway.returncode() == 0
    await alice.close()


async def test_health_and_metrics(system: System) -> None:
    alice = await system.connect(await system.device("alice"))
    await system.device("bob")
    await alice.send("bob", b"counted")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{system.url}/healthz") as response:
            health = await response.json()
            assert response.status == 200 and health["nats"] is True
            assert health["connections"] == 1
        async with session.get(f"{system.url}/metrics") as response:
            text = await response.text()
            assert "courier_gateway_accepted_total 1.0" in text
            assert "courier_gateway_connections 1.0" in text
    await alice.close()


async def test_live_messages_wait_for_the_first_sync(tmp_path: Path,
                                                     request: pytest.FixtureRequest) -> None:
    with System(tmp_path, {**store_env(request), "COURIER_GATEWAY_SEND_QUEUE": "8"}) as system:
        bob_creds = await system.device("bob", "bob-phone")
        alice = await system.connect(await system.device("alice"))
        bob = await system.connect(bob_creds, sync=False)
        await alice.send("bob", b"before sync")
        await asyncio.sleep(0.3)
        assert bob.pending_messages() == 0  # held until bob syncs
        await bob.sync()
        assert (await bob.next_message()).body == b"before sync"
        await bob.close()
        idle = await system.connect(bob_creds, sync=False)  # never syncs: held frames are
        for i in range(40):                                # bounded (4 x send queue)
            await alice.send("bob", f"m{i}".encode())
        await wait_closed(idle)
        assert idle.close_code == CloseCode.SLOW_CONSUMER
        await idle.close()
        await alice.close()
