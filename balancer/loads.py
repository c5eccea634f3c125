"""The gateways' load, as their beats report it, and the choice of the least loaded one."""

import asyncio
import functools
import time
from collections.abc import Callable, Iterable
from typing import Final

import msgspec
import structlog
from nats.aio.client import Client
from nats.js.kv import KeyValue
from prometheus_client import Gauge

from presence.registry import WATCH_BACKOFF, open_gateways_bucket
from runtime.kv import BucketFollower, follow_until_loaded
from runtime.tasks import TaskGroup
from schemas.presence import GatewayBeat
from schemas.rest import GatewayLoad

log = structlog.get_logger(__name__)

_decoder: Final = msgspec.msgpack.Decoder(GatewayBeat)
GATEWAYS = Gauge("courier_balancer_gateways",
                 "Gateways the balancer knows of, by state (healthy: may be chosen; draining; "
                 "stale: beat older than the presence TTL, or no public URL)", ["state"])


def healthy(beat: GatewayBeat, now_ms: int, ttl_ms: int) -> bool:
    """Whether a gateway may get a new socket: its beat is fresh, it has a URL, and it is
    not draining."""
    return bool(beat.url) and not beat.draining and now_ms - beat.ts <= ttl_ms


def least_loaded(beats: Iterable[GatewayBeat], handed: dict[str, int], now_ms: int,
                 ttl_ms: int) -> GatewayBeat | None:
    """The healthy gateway with the fewest sockets (counting the tickets ``handed`` out for
    it since its last beat), then the least CPU, then the smallest id (a stable order); None
    when no gateway is healthy."""
    candidates = [beat for beat in beats if healthy(beat, now_ms, ttl_ms)]
    if not candidates:
        return None
    return min(candidates, key=lambda beat: (beat.sockets + handed.get(beat.gateway, 0),
                                             beat.cpu, beat.gateway))


class GatewayLoads:
    """A watcher-fed copy of the gateways bucket (``runtime.kv.BucketFollower``), restarted
    by its task group when it fails or NATS reconnects."""

    def __init__(self, nc: Client, *, gateway_ttl_s: float, replicas: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._nc = nc
        self._ttl_s = gateway_ttl_s
        self._replicas = replicas
        self._clock = clock
        self._beats: dict[str, GatewayBeat] = {}
        #: Tickets handed out per gateway since its last beat (the beat's ``sockets`` does
        #: not count them yet): spreads a burst of connects between two beats.
        self._handed: dict[str, int] = {}
        self._tasks = TaskGroup("gateway-loads")
        self._ready = asyncio.Event()
        for state in ("healthy", "draining", "stale"):
            GATEWAYS.labels(state).set_function(functools.partial(self._count, state))

    async def start(self) -> None:
        """Follow the bucket; return once its current state is loaded."""
        follower = BucketFollower(self._nc, self._open, self._on_beat,
                                  lambda: list(self._beats), self._ready.set)
        await follow_until_loaded(self._tasks, {"gateways": follower}, (self._ready,),
                                  backoff=WATCH_BACKOFF)

    async def stop(self) -> None:
        await self._tasks.stop()

    async def _open(self) -> KeyValue:
        return await open_gateways_bucket(self._nc.jetstream(), self._ttl_s, self._replicas)

    def _on_beat(self, gateway: str, value: bytes | None) -> None:
        self._handed.pop(gateway, None)
        if value is None:
            self._beats.pop(gateway, None)
            log.info("gateway_gone", gateway=gateway)
            return
        try:
            beat = _decoder.decode(value)
        except msgspec.DecodeError as exc:
            log.warning("gateway_beat_undecodable", gateway=gateway, error=str(exc))
            self._beats.pop(gateway, None)
            return
        if gateway not in self._beats:
            log.info("gateway_seen", gateway=gateway, url=beat.url)
        self._beats[gateway] = beat

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def choose(self) -> GatewayBeat | None:
        """The least-loaded healthy gateway (counted as one socket more from now on)."""
        beat = least_loaded(self._beats.values(), self._handed, self._now_ms(),
                            int(self._ttl_s * 1000))
        if beat is not None:
            self._handed[beat.gateway] = self._handed.get(beat.gateway, 0) + 1
        return beat

    def healthy_count(self) -> int:
        return self._count("healthy")

    def snapshot(self) -> list[GatewayLoad]:
        """Every gateway known, by id."""
        now, ttl = self._now_ms(), int(self._ttl_s * 1000)
        return [GatewayLoad(gateway=beat.gateway, url=beat.url,
                            sockets=beat.sockets + self._handed.get(beat.gateway, 0),
                            cpu=beat.cpu, draining=beat.draining,
                            healthy=healthy(beat, now, ttl), beat_age_ms=now - beat.ts)
                for _, beat in sorted(self._beats.items())]

    def _count(self, state: str) -> int:
        now, ttl = self._now_ms(), int(self._ttl_s * 1000)
        states = ["healthy" if healthy(beat, now, ttl)
                  else "draining" if beat.draining and now - beat.ts <= ttl else "stale"
                  for beat in self._beats.values()]
        return states.count(state)
