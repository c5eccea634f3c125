"""The last hop, router side: where each device is, and one publish per gateway per batch.

``EdgeRoutes`` knows which gateway holds a device's socket, per partition, from the
``AttachEnvelope`` markers a gateway publishes into every partition when a socket opens. A
router handles a partition in stream order, so the partition's messages after a marker go to
the marker's gateway and those before it are in the backlog the socket's first sync reads
(its barrier is the markers' sequences): no window in which a live message goes to the
wrong gateway. Two sockets of one device are ordered by the revision of the device's
presence key (``presence_rev``), not by the order their markers reached a partition in.
A device with no marker seen (the router started or took the partition after it, the entry
was evicted) falls back to the presence view (device -> gateway); a device in neither is
offline: no live frame (it syncs its backlog when it connects; push jobs do not depend on
this).

``EdgeOutbox`` collects the frames of one batch per gateway, in envelope order, each frame
encoded once with the gateway's devices that get it, and publishes one ``EdgeBatch`` per
gateway on ``edge.<gateway>`` (split where one would exceed the byte bound).
"""

from collections.abc import Callable
from typing import Final

from nats.aio.client import Client
from prometheus_client import Counter

from runtime.cache import LruCache
from schemas.edge import BATCH_OVERHEAD, EdgeBatch, EdgeItem, encode_edge_batch, item_size
from schemas.envelopes import AttachEnvelope
from schemas.subjects import edge_subject

EDGE_PUBLISHES = Counter("courier_router_edge_publishes_total",
                         "Edge batches published to gateways (one or more per gateway per "
                         "handled batch)")
EDGE_ITEMS = Counter("courier_router_edge_items_total",
                     "Items (one frame each, for one or more devices) in edge batches")
ROUTES = Counter("courier_router_routes_total",
                 "Device lookups of the last hop, by source: marker, presence, offline",
                 ["source"])
MARKERS = Counter("courier_router_attach_markers_total",
                  "Attach markers read, by result: applied, stale (an older socket's)",
                  ["result"])
_FROM_MARKER: Final = ROUTES.labels("marker")
_FROM_PRESENCE: Final = ROUTES.labels("presence")
_OFFLINE: Final = ROUTES.labels("offline")

#: (app, device) -> gateway of its socket, or None: the presence view.
GatewayOf = Callable[[str, str], str | None]


class EdgeRoutes:
    """(app, device) -> gateway, one bounded map per partition."""

    def __init__(self, partitions: int, max_devices: int, presence: GatewayOf) -> None:
        self._routes: list[LruCache[tuple[str, str], tuple[str, int]]] = [
            LruCache(max_devices) for _ in range(partitions)]
        self._presence = presence

    def reset(self, partition: int) -> None:
        """Forget the partition's routes: it was taken (again), and the markers another router
        handled meanwhile were never seen here."""
        self._routes[partition] = LruCache(self._routes[partition].max_entries)

    def attached(self, partition: int, marker: AttachEnvelope) -> None:
        """A socket opened: the partition's next messages for its device go to its gateway,
        unless a newer socket of the device was seen already."""
        routes = self._routes[partition]
        key = (marker.app, marker.device)
        current = routes.get(key)
        if current is not None and current[1] > marker.presence_rev:
            MARKERS.labels("stale").inc()
            return
        routes.put(key, (marker.gateway, marker.presence_rev))
        MARKERS.labels("applied").inc()

    def gateway_of(self, partition: int, app: str, device: str) -> str | None:
        """Where the partition's next message for the device goes; None: offline."""
        return next(iter(self.route(partition, app, [device])), None)

    def route(self, partition: int, app: str, devices: list[str]) -> dict[str, list[str]]:
        """The devices online by the gateway the partition's next message for each goes to
        (offline devices are left out). Counted once per call, not per device: a counter
        increment per member device was a tenth of a group fan-out's cost."""
        routes, presence = self._routes[partition], self._presence
        by_gateway: dict[str, list[str]] = {}
        from_marker = offline = 0
        for device in devices:
            route = routes.get((app, device))
            if route is not None:
                from_marker += 1
                by_gateway.setdefault(route[0], []).append(device)
            elif (gateway := presence(app, device)) is not None:
                by_gateway.setdefault(gateway, []).append(device)
            else:
                offline += 1
        from_presence = len(devices) - from_marker - offline
        for counter, count in ((_FROM_MARKER, from_marker), (_FROM_PRESENCE, from_presence),
                               (_OFFLINE, offline)):
            if count:
                counter.inc(count)
        return by_gateway


class EdgeOutbox:
    """The frames of one batch, per gateway, in order; ``flush`` publishes them."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        #: gateway -> chunks of items, each chunk (items, their size) within the bound
        self._chunks: dict[str, list[tuple[list[EdgeItem], int]]] = {}

    def add(self, gateway: str, app: str, devices: list[str], frame: bytes) -> None:
        """``frame`` for ``devices`` of ``app`` on ``gateway``, after what was added before.
        An item too big for one chunk is split by devices (a frame alone over the bound
        goes alone)."""
        size = item_size(app, devices, frame)
        if size + BATCH_OVERHEAD > self._max_bytes and len(devices) > 1:
            half = len(devices) // 2
            self.add(gateway, app, devices[:half], frame)
            self.add(gateway, app, devices[half:], frame)
            return
        chunks = self._chunks.setdefault(gateway, [])
        if not chunks or chunks[-1][1] + size > self._max_bytes:
            chunks.append(([], BATCH_OVERHEAD))
        items, used = chunks[-1]
        items.append(EdgeItem(app=app, devices=devices, frame=frame))
        chunks[-1] = (items, used + size)

    def take(self) -> list[tuple[str, EdgeBatch]]:
        """What was added since the last ``take``: (gateway, batch) pairs, each gateway's
        batches in order."""
        chunks, self._chunks = self._chunks, {}
        return [(gateway, EdgeBatch(items=items))
                for gateway, batches in chunks.items() for items, _ in batches]

    async def flush(self, nc: Client) -> None:
        """Publish what was added (core NATS: no wait for a gateway)."""
        for gateway, batch in self.take():
            await nc.publish(edge_subject(gateway), encode_edge_batch(batch))
            EDGE_PUBLISHES.inc()
            EDGE_ITEMS.inc(len(batch.items))
