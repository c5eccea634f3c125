"""Presence state shared across gateways through NATS KV buckets.

``courier_devices``: ``<app>.<device>`` -> ``DeviceOnline`` (written by the gateway holding the
socket, deleted when it closes). ``courier_gateways``: gateway id -> ``GatewayBeat``,
refreshed by each gateway and expiring by itself (bucket max age) when a gateway dies; a
device is online only while its gateway's beat is alive. ``courier_last_seen``:
``<app>.<user>`` -> ``LastSeen`` (last time any of the user's devices was connected). Device
and user ids are per app, so the app is part of each key (``schemas.ids.scoped``).
"""

from typing import Final

import msgspec

DEVICES_BUCKET: Final = "courier_devices"
GATEWAYS_BUCKET: Final = "courier_gateways"
LAST_SEEN_BUCKET: Final = "courier_last_seen"


class DeviceOnline(msgspec.Struct):
    """A device's socket is open on ``gateway`` since ``since`` (ms); ``user`` of ``app``."""

    user: str
    gateway: str
    since: int
    app: str = ""


class GatewayBeat(msgspec.Struct):
    """A gateway is alive (written every third of ``gateway.presence_ttl_s``, and at once when
    it starts draining), and its load, which the balancer chooses by: ``url`` where clients
    reach its WebSocket, ``sockets`` open now, ``cpu`` percent of one core it used over the
    last beat interval, ``draining`` once it takes no new sockets. Beats of older gateways
    lack the load fields (the defaults: no URL, so the balancer never picks them)."""

    gateway: str
    ts: int
    url: str = ""
    sockets: int = 0
    cpu: float = 0.0
    draining: bool = False


#: ``gateway.drain.<gateway id>``: request/reply; the gateway of that id starts draining (no
#: new sockets, ``draining`` in its beat, its sockets closed with 4012 over
#: ``gateway.drain_s``) and answers ``Ok[DrainStarted]`` at once, or ``Failed`` (``conflict``)
#: when it already drains. Published by the admin REST route of any gateway and by
#: operators' tools (``admin``); no responder: no gateway of that id runs.
GATEWAY_DRAIN_PREFIX: Final = "gateway.drain"


def gateway_drain(gateway: str) -> str:
    return f"{GATEWAY_DRAIN_PREFIX}.{gateway}"


class DrainStarted(msgspec.Struct):
    """A gateway started draining: ``sockets`` open when it started, closed over
    ``drain_s`` seconds."""

    gateway: str
    sockets: int
    drain_s: float


class LastSeen(msgspec.Struct):
    """When a user was last connected (ms)."""

    ts: int
