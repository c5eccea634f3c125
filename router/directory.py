"""Cached view of the device registry: user -> devices.

Filled from the storage worker's ``get_user`` RPC on first use; an entry is dropped when the
storage worker announces a change of that user's devices on ``dir.changed``, and after a TTL
as a safety net, so the router does not read the store per message.
"""

import time

from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client import Counter

from runtime.rpc import RpcClient
from schemas.rpc import DeviceInfo, GetUser, UserDevices
from schemas.subjects import DIRECTORY_CHANGED

LOOKUPS = Counter("courier_directory_lookups_total", "Device lookups", ["result"])


class DeviceDirectory:
    """user -> devices, cached with invalidation."""

    def __init__(self, nc: Client, rpc: RpcClient, ttl_s: float = 60.0) -> None:
        self._nc = nc
        self._rpc = rpc
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[float, list[DeviceInfo]]] = {}

    async def start(self) -> None:
        await self._nc.subscribe(DIRECTORY_CHANGED, cb=self._on_change)

    async def _on_change(self, msg: Msg) -> None:
        self._cache.pop(msg.data.decode(), None)

    async def devices(self, user: str) -> list[DeviceInfo]:
        """The user's enabled devices (empty for an unknown user)."""
        entry = self._cache.get(user)
        now = time.monotonic()
        if entry is not None and entry[0] > now:
            LOOKUPS.labels("hit").inc()
            return entry[1]
        LOOKUPS.labels("miss").inc()
        reply = await self._rpc.call("get_user", GetUser(user=user), UserDevices)
        devices = [d for d in reply.devices if not d.disabled]
        self._cache[user] = (now + self._ttl_s, devices)
        return devices
