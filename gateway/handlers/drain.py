"""Draining a gateway: it takes no new sockets and moves the ones it holds.

A drain (SIGTERM, or ``gateway.drain.<id>`` from an administrator) beats ``draining`` at
once, so the balancer stops choosing this gateway, refuses new upgrades (503), then closes
every socket with 4012 MOVED, spread evenly over ``gateway.drain_s`` in ticks (a burst of
reconnects would land on the other gateways all at once). Nothing is lost: a closed socket's
messages wait in its device's backlog and its client syncs them on the gateway it reconnects
to; a send that got no ``accepted`` is resent by the client with the same ``client_id``.

The drain runs once, as an owned task: the first request starts it, later ones (SIGTERM
after an administrator's drain) wait for the same one.
"""

import asyncio
import math
from collections.abc import Sequence
from typing import Final, Protocol

import structlog
from prometheus_client import Counter, Gauge

from presence.registry import PresenceWriter
from runtime.tasks import TaskGroup
from schemas.errors import CloseCode

log = structlog.get_logger(__name__)

#: Sockets closed per tick: ``drain_s`` is cut into ticks of this length.
TICK_S: Final = 0.05
DRAINING = Gauge("courier_gateway_draining", "1 while this gateway drains, else 0")
MOVED = Counter("courier_gateway_moved_total", "Sockets closed with 4012 MOVED by a drain")


class Closable(Protocol):
    def close_soon(self, code: CloseCode, reason: str) -> None:
        """Close the socket with ``code`` (its handler ends once the close is done)."""


class Sockets(Protocol):
    """The socket server (``gateway.ws.sockets.SocketServer``), as the drain sees it."""

    #: False: new upgrades are refused with 503.
    accepting: bool

    def open_connections(self) -> Sequence[Closable]:
        """The sockets open now."""


class Drainer:
    """The drain of one gateway (see the module docstring)."""

    def __init__(self, presence: PresenceWriter, sockets: Sockets, drain_s: float) -> None:
        self._presence = presence
        self._sockets = sockets
        self._drain_s = drain_s
        self._tasks = TaskGroup("drain")
        self._drain: asyncio.Task[None] | None = None

    @property
    def started(self) -> bool:
        return self._drain is not None

    def start(self) -> int:
        """Start the drain (once); the sockets open now, which it will close."""
        if self._drain is None:
            self._drain = self._tasks.spawn(self._run(), name="drain")
        return len(self._sockets.open_connections())

    async def drain(self) -> None:
        """Start the drain if needed and wait until every socket it found was closed."""
        self.start()
        assert self._drain is not None
        await asyncio.shield(self._drain)

    async def stop(self) -> None:
        await self._tasks.stop()

    async def _run(self) -> None:
        DRAINING.set(1)
        self._sockets.accepting = False
        await self._presence.drain()
        connections = self._sockets.open_connections()
        ticks = max(1, math.ceil(self._drain_s / TICK_S))
        per_tick = max(1, math.ceil(len(connections) / ticks))
        log.info("gateway_draining", sockets=len(connections), drain_s=self._drain_s)
        for start in range(0, len(connections), per_tick):
            if start:
                await asyncio.sleep(TICK_S)
            for conn in connections[start:start + per_tick]:
                conn.close_soon(CloseCode.MOVED, "gateway draining: reconnect through the "
                                "balancer")
                MOVED.inc()
        log.info("gateway_drained", moved=len(connections))
