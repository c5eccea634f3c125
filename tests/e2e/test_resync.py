"""A gateway that was away from NATS re-reads its sockets' backlogs: live frames routed to its
devices meanwhile (core NATS drops them) still arrive, without the client asking."""

import asyncio
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import store_env
from tests.harness import System
from tests.tcpproxy import TcpProxy


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


async def wait_health(url: str, want: bool, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while await asyncio.to_thread(healthy, url) != want:
        assert asyncio.get_running_loop().time() < deadline, f"{url} healthy != {want}"
        await asyncio.sleep(0.1)


async def test_live_frames_lost_while_the_gateway_was_off_nats_arrive(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    with System(tmp_path, extra_env=store_env(request)) as system:
        proxy = TcpProxy(system.nats.port)
        await proxy.restore()
        try:
            # in a thread: the proxy runs on this event loop, which must keep going
            second = await asyncio.to_thread(system.add_gateway, COURIER_NATS_URL=proxy.url)
            bob = await system.connect(await system.device("bob"), url=second)
            alice = await system.connect(await system.device("alice"))
            try:
                await alice.send("bob", b"before")
                assert (await bob.next_message()).body == b"before"
                await proxy.cut()
                await wait_health(second, want=False)  # bob's gateway is off NATS
                for i in range(3):
                    await alice.send("bob", f"gap{i}".encode())
                await proxy.restore()
                got = [(await bob.next_message(timeout=30)).body for _ in range(3)]
                assert got == [b"gap0", b"gap1", b"gap2"]
                await alice.send("bob", b"after")  # and live delivery goes on
                assert (await bob.next_message()).body == b"after"
                assert bob.duplicates == 0
            finally:
                await alice.close()
                await bob.close()
        finally:
            await proxy.cut()
