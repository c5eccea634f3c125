"""The shared device presence registry: online on connect, offline on close or gateway death."""

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import nats

from control.view import ControlView
from infra.nats_server import NatsServer
from presence.registry import PresenceView, PresenceWriter
from runtime.config import NatsConfig
from runtime.kv import ensure_bucket
from runtime.natsconn import close, connect
from schemas.control import CONTROL, ControlState, control_key
from tests.harness import System


async def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_devices_online_offline_and_gateway_death(system: System) -> None:
    nc = await system.nats_client("admin")  # an operator's read-only view
    view = PresenceView(nc, gateway_ttl_s=3.0, replicas=1)
    changes: list[tuple[str, str, str, bool]] = []
    view.add_listener(lambda app, user, device, online: changes.append((app, user, device,
                                                                        online)))
    second_url = system.add_gateway()
    try:
        await view.start()
        alice = await system.connect(await system.device("alice", "a1"))
        bob = await system.connect(await system.device("bob", "b1"), url=second_url)
        await wait_for(lambda: view.is_online("default", "a1")
                       and view.is_online("default", "b1"), 5)
        assert view.user_online("default", "alice")
        await alice.close()
        await wait_for(lambda: not view.is_online("default", "a1"), 5)
        assert await view.last_seen("default", "alice") is not None
        system.gateways[1][0].kill()  # SIGKILL: no goodbye
        await wait_for(lambda: not view.is_online("default", "b1"), 12)
        assert ("default", "bob", "b1", False) in changes
        await bob.abort()
    finally:
        await view.stop()
        await nc.close()


async def test_presence_and_control_views_follow_across_a_nats_server_restart(
        tmp_path: Path) -> None:
    """A restarted nats-server forgets KV watchers and the in-memory gateways bucket; the
    views start new watchers, the writer re-creates the bucket, and presence works again."""
    with NatsServer(tmp_path / "nats") as server:
        viewer = await connect(NatsConfig(url=server.url), "viewer", "admin")
        writer_nc = await connect(NatsConfig(url=server.url), "writer", "gateway")
        view = PresenceView(viewer, gateway_ttl_s=3.0, replicas=1)
        control = ControlView(viewer, replicas=1)
        writer = PresenceWriter(writer_nc.jetstream(), "gw-r", gateway_ttl_s=3.0, replicas=1)
        try:
            await view.start()
            await control.start()
            await writer.start()
            await writer.device_online("default", "alice", "a1")
            await wait_for(lambda: view.is_online("default", "a1"), 5)
            server.kill()  # SIGKILL
            server.start()  # same port, same store
            # the writer's connection is coming back. A deadline, not asyncio.timeout: on 3.11
            # nats-py's wait_for can turn the timeout's cancellation into nats' TimeoutError,
            # which this loop retries, and the loop would then never end.
            deadline = time.monotonic() + 30
            while True:
                try:
                    await writer.device_online("default", "bob", "b1")
                    break
                except nats.errors.Error:
                    assert time.monotonic() < deadline, "the writer did not come back in 30 s"
                    await asyncio.sleep(0.2)
            await wait_for(lambda: view.is_online("default", "b1"), 20)  # watched again, beat back
            assert view.is_online("default", "a1")  # still held by a gateway that beats
            kv = await ensure_bucket(writer_nc.jetstream(), CONTROL, 1)
            key = control_key("user", "mallory", "default")
            await kv.put(key, msgspec.json.encode(ControlState(
                kind="user", id="mallory", app="default", disabled_at=1, by="test")))
            assert await control.reflects(key, True, within_s=20)
        finally:
            await writer.stop()
            await control.stop()
            await view.stop()
            await close(writer_nc)
            await close(viewer)
