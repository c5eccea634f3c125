"""The device hub: which device is connected to this gateway, through which socket, and the
one subscription that feeds every socket here.

Routers publish to a gateway, not to a device: one ``EdgeBatch`` (``schemas.edge``) on
``edge.<gateway id>`` per batch of a partition, each item a frame encoded once with the
devices of this gateway that receive it. The hub hands an item's frame to each listed
device's socket (``Connection.deliver``) and skips, counted, the devices it does not hold (a
socket that just closed, a device the router still believes here). A batch that cannot be
decoded is logged and counted; the subscription goes on.

Where a device is, routers learn in order with the messages: once a socket is registered
here, the hub publishes an ``AttachEnvelope`` into every partition stream (in parallel, each
awaited). A router consumes a partition in stream order, so it sends every message after the
marker to this gateway, and every message before it is in the backlog the socket's first
sync reads: the markers' stream sequences are that sync's barrier (``DeviceSync.attached``).
"""

import asyncio
import time
from typing import Final, Protocol

import msgspec
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from prometheus_client import Counter, Histogram

from gateway.ws.connection import Connection
from presence.registry import PresenceWriter
from schemas.edge import decode_edge_batch
from schemas.envelopes import AttachEnvelope, encode_envelope
from schemas.errors import CloseCode
from schemas.partitions import stream_seq_of
from schemas.subjects import ATTACH, DEVICE_CONNECTED_PREFIX, device_connected, edge_subject

log = structlog.get_logger(__name__)

RESYNCS = Counter("courier_gateway_resyncs_total",
                  "Server-side backlog re-reads of sockets after a NATS reconnect")
EDGE_BATCHES = Counter("courier_gateway_edge_batches_total",
                       "Edge batches received from routers, by result (ok, malformed)",
                       ["result"])
EDGE_ITEMS = Counter("courier_gateway_edge_items_total",
                     "Items of edge batches (one frame each), by result (ok, malformed)",
                     ["result"])
EDGE_DEVICES = Counter("courier_gateway_edge_devices_total",
                       "Frames handed to local sockets from edge batches")
EDGE_MISSES = Counter("courier_gateway_edge_misses_total",
                      "Devices of edge items that hold no socket here (skipped)")
ATTACH_SECONDS = Histogram(
    "courier_gateway_attach_seconds", "Publishing a socket's attach markers (every partition)",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0))
_BATCH_OK: Final = EDGE_BATCHES.labels("ok")
_BATCH_BAD: Final = EDGE_BATCHES.labels("malformed")
_ITEM_OK: Final = EDGE_ITEMS.labels("ok")
_ITEM_BAD: Final = EDGE_ITEMS.labels("malformed")


class MarkerStreams(Protocol):
    """Where attach markers go (``runtime.partitions.PartitionStreams``)."""

    count: int

    async def publish(self, partition: int, kind: str, data: bytes, *,
                      msg_id: str | None = None, timeout: float = 5.0) -> int: ...


class DeviceHub:
    """Which device is connected here, through which socket."""

    def __init__(self, nc: Client, presence: PresenceWriter, streams: MarkerStreams,
                 gateway_id: str) -> None:
        self._nc = nc
        self._presence = presence
        self._streams = streams
        self._gateway_id = gateway_id
        #: (app, device) -> its socket here: device ids are per app.
        self._devices: dict[tuple[str, str], Connection] = {}
        self._subscriptions: list[Subscription] = []

    async def start(self) -> None:
        """Subscribe this gateway's deliveries, and the same devices connecting elsewhere."""
        self._subscriptions = [
            await self._nc.subscribe(edge_subject(self._gateway_id), cb=self._on_edge),
            await self._nc.subscribe(f"{DEVICE_CONNECTED_PREFIX}.*.*",
                                     cb=self._on_connected_elsewhere),
        ]

    async def stop(self) -> None:
        for subscription in self._subscriptions:
            await subscription.unsubscribe()
        self._subscriptions = []

    async def _on_connected_elsewhere(self, msg: Msg) -> None:
        app, device = msg.subject.split(".")[-2:]
        conn = self._devices.get((app, device))
        if conn is not None and conn.session != msg.data.decode():
            conn.close_soon(CloseCode.REPLACED, "device connected again")

    async def _on_edge(self, msg: Msg) -> None:
        self.deliver(msg.data)

    def deliver(self, data: bytes) -> None:
        """Hand each item of an encoded ``EdgeBatch`` to the listed sockets here."""
        try:
            batch = decode_edge_batch(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            _BATCH_BAD.inc()
            log.warning("edge_batch_malformed", size=len(data), error=str(exc))
            return
        _BATCH_OK.inc()
        devices = self._devices
        delivered = missed = 0
        for item in batch.items:
            try:
                item.frame.decode()  # the socket writes text frames
            except UnicodeDecodeError as exc:
                _ITEM_BAD.inc()
                log.warning("edge_item_malformed", app=item.app, error=str(exc))
                continue
            _ITEM_OK.inc()
            app = item.app
            for device in item.devices:
                conn = devices.get((app, device))
                if conn is None:
                    missed += 1
                else:
                    conn.deliver(item.frame)
                    delivered += 1
        EDGE_DEVICES.inc(delivered)
        EDGE_MISSES.inc(missed)

    def __len__(self) -> int:
        return len(self._devices)

    async def attach(self, conn: Connection) -> None:
        """Register the socket (a previous socket of the device is replaced), record it in
        presence, then publish its attach markers; their sequences are its first sync's
        barrier. A socket whose markers could not all be stored is closed with
        ``GOING_AWAY`` (routers may not know it is here): its client reconnects."""
        identity = conn.identity
        app, user, device = identity.app, identity.user, identity.device
        previous = self._devices.pop((app, device), None)
        if previous is not None:
            previous.close_soon(CloseCode.REPLACED, "device connected again")
        self._devices[(app, device)] = conn
        await self._nc.publish(device_connected(app, device), conn.session.encode())
        revision = await self._presence.device_online(app, user, device)
        marker = encode_envelope(AttachEnvelope(
            app=app, user=user, device=device, gateway=self._gateway_id,
            session=conn.session, presence_rev=revision, ts=int(time.time() * 1000)))
        started = time.perf_counter()
        results = await asyncio.gather(*(
            self._streams.publish(partition, ATTACH, marker)
            for partition in range(self._streams.count)), return_exceptions=True)
        ATTACH_SECONDS.observe(time.perf_counter() - started)
        barrier: list[int] = []
        for result in results:
            if isinstance(result, NatsError):
                conn.log.warning("attach_markers_failed", error=repr(result))
                conn.close_soon(CloseCode.GOING_AWAY, "message streams unavailable; reconnect")
                return
            if isinstance(result, BaseException):
                raise result
            barrier.append(stream_seq_of(result, self._streams.count))
        conn.attached(barrier)

    async def detach(self, conn: Connection) -> None:
        """Forget the socket and mark the device offline, unless another socket of the
        device replaced this one."""
        identity = conn.identity
        key = (identity.app, identity.device)
        if self._devices.get(key) is not conn:
            return
        del self._devices[key]
        await self._presence.device_offline(identity.app, identity.user, identity.device)

    def connections(self) -> list[Connection]:
        return list(self._devices.values())

    def resync_all(self) -> None:
        """After a NATS reconnect: every socket re-reads what it may have missed live."""
        connections = self.connections()
        RESYNCS.inc(len(connections))
        log.info("resyncing_sockets", sockets=len(connections))
        for conn in connections:
            conn.resync()
