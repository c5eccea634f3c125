"""The shared device presence registry: online on connect, offline on close or gateway death."""

import asyncio
from collections.abc import Callable

from presence.registry import PresenceView
from tests.harness import System


async def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_devices_online_offline_and_gateway_death(system: System) -> None:
    nc = await system.nats_client("admin")  # an operator's read-only view
    view = PresenceView(nc.jetstream(), gateway_ttl_s=3.0, replicas=1)
    changes: list[tuple[str, str, bool]] = []
    view.add_listener(lambda user, device, online: changes.append((user, device, online)))
    second_url = system.add_gateway()
    try:
        await view.start()
        alice = await system.connect(await system.device("alice", "a1"))
        bob = await system.connect(await system.device("bob", "b1"), url=second_url)
        await wait_for(lambda: view.is_online("a1") and view.is_online("b1"), 5)
        assert view.user_online("alice")
        await alice.close()
        await wait_for(lambda: not view.is_online("a1"), 5)
        assert await view.last_seen("alice") is not None
        system.gateways[1][0].kill()  # SIGKILL: no goodbye
        await wait_for(lambda: not view.is_online("b1"), 12)
        assert ("bob", "b1", False) in changes
        await bob.abort()
    finally:
        await view.stop()
        await nc.close()
