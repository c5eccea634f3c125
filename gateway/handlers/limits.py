"""Rate limits per identity and per source address, shared by the socket path and REST.

Every limit is a token bucket keyed by what it protects, never by the socket: a device's frame
budget survives its reconnects, a user's send budget is shared by all its sockets, a user's
REST writes by all its devices. One ``Limits`` per gateway process holds them all, each family
in a ``KeyedBuckets`` with bounded memory (idle buckets dropped, at most
``limits.max_keys`` keys).

Scope: one gateway process. A device's socket is pinned to one gateway while it is open, so
its frame and connection budgets are exact; a user whose devices (or REST calls) spread over
N gateways gets at most N times a per-user limit. Deployments that need a cluster-wide ceiling
divide the per-user limits by the number of gateways, or have the load balancer route a user
to one gateway (hashing the token's user). A shared counter (NATS KV) would cost a round trip
per frame, more than the protection is worth for limits meant to stop floods.

A refused request spends nothing (``take_all``) and raises ``rate_limited`` with
``retry_after_s``: the socket answers an ``error`` frame, REST a 429 with ``Retry-After``.
"""

import ipaddress
import time
from collections.abc import Callable, Mapping
from typing import Literal

from prometheus_client import Counter, Gauge

from gateway.auth import Identity
from gateway.handlers.ratelimit import KeyedBuckets, TokenBucket, take_all
from runtime.config import GatewayConfig, LimitsConfig
from schemas.errors import ErrorCode, ProtocolError
from schemas.frames import Callback, ClientFrame, Send

REFUSED = Counter("courier_gateway_rate_limited_total", "Requests refused by a rate limit",
                  ["limit"])
KEYS = Gauge("courier_gateway_rate_limit_keys", "Keys with a bucket, per bucket family",
             ["family"])

#: What a REST write is, for the buckets it spends besides the user's write bucket.
WriteKind = Literal["write", "group_create", "contact_request"]
_Key = tuple[str, str]  # (app, user or device)


class Limits:
    """Every bucket family of one gateway process."""

    def __init__(self, gateway: GatewayConfig, config: LimitsConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._address_header = config.client_address_header

        def family(name: str, rate: float | None = None,
                   burst: int | None = None) -> KeyedBuckets[_Key]:
            """The buckets of ``limits.<name>_per_s`` and ``limits.<name>_burst``."""
            buckets: KeyedBuckets[_Key] = KeyedBuckets(
                getattr(config, f"{name}_per_s") if rate is None else rate,
                getattr(config, f"{name}_burst") if burst is None else burst,
                config.max_keys, clock)
            KEYS.labels(name).set_function(buckets.__len__)
            return buckets

        self._device_frames = family("device_frames", gateway.rate_per_s, gateway.rate_burst)
        self._user_sends = family("user_sends")
        self._device_connects = family("device_connects")
        self._user_connects = family("user_connects")
        self._address_upgrades = family("address_upgrades")
        self._address_registrations = family("address_registrations")
        self._user_reads = family("user_reads")
        self._user_writes = family("user_writes")
        self._user_groups = family("user_groups")
        self._user_contact_requests = family("user_contact_requests")

    def check_frame(self, identity: Identity, frame: ClientFrame) -> None:
        """Every frame spends from its device's bucket; sends and callbacks also from the
        user's."""
        buckets = [self._device_frames.get((identity.app, identity.device))]
        if isinstance(frame, Send | Callback):
            buckets.append(self._user_sends.get((identity.app, identity.user)))
            _spend("sends", buckets, "too many frames from this user or device; slow down")
        else:
            _spend("frames", buckets, "too many frames from this device; slow down")

    def check_upgrade(self, address: str) -> None:
        """An upgrade attempt from ``address`` (``address()``), before its token is read."""
        _spend("upgrades", [self._address_upgrades.get(("", address))],
               "too many connection attempts from this address")

    def check_connect(self, identity: Identity) -> None:
        """A new socket of an authenticated device."""
        _spend("connects", [self._device_connects.get((identity.app, identity.device)),
                            self._user_connects.get((identity.app, identity.user))],
               "too many new connections of this user or device")

    def check_registration(self, address: str) -> None:
        """``POST /v1/dev/devices`` from ``address`` (``address()``)."""
        _spend("registrations", [self._address_registrations.get(("", address))],
               "too many device registrations from this address")

    def check_read(self, identity: Identity) -> None:
        """A REST read (``GET``) by a device token."""
        _spend("read", [self._user_reads.get((identity.app, identity.user))],
               "too many reads by this user")

    def check_write(self, identity: Identity, kind: WriteKind = "write") -> None:
        """A REST write by a device token; group creations and contact requests also spend
        from their own, slower bucket."""
        key = (identity.app, identity.user)
        buckets = [self._user_writes.get(key)]
        if kind == "group_create":
            buckets.append(self._user_groups.get(key))
        elif kind == "contact_request":
            buckets.append(self._user_contact_requests.get(key))
        _spend(kind, buckets, f"too many {kind.replace('_', ' ')}s by this user")

    def address(self, headers: Mapping[str, str], remote: str | None) -> str:
        """A request's client address, from its ``headers`` and TCP peer (``remote``): the
        configured proxy header's last entry, else the TCP peer; IPv6 addresses count per /64
        (one host usually holds the whole prefix)."""
        raw = ""
        if self._address_header:
            raw = headers.get(self._address_header, "").rsplit(",", 1)[-1].strip()
        return address_key(raw or remote or "")


def address_key(raw: str) -> str:
    """The bucket key of an address: IPv4 as is, IPv6 as its /64, anything else as given."""
    try:
        ip = ipaddress.ip_address(raw)
    except ValueError:
        return raw[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _spend(limit: str, buckets: list[TokenBucket], message: str) -> None:
    wait_s = take_all(buckets)
    if wait_s > 0.0:
        REFUSED.labels(limit).inc()
        raise ProtocolError(ErrorCode.RATE_LIMITED, f"{message}; retry in {wait_s:.2f} s",
                            retry_after_s=wait_s)
