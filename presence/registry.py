"""Writer (gateway side) and view (router side) of the presence buckets."""

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from runtime.backoff import Backoff
from runtime.kv import BucketFollower, follow_until_loaded
from runtime.tasks import TaskGroup
from schemas.ids import scoped, unscoped
from schemas.presence import (
    DEVICES_BUCKET,
    GATEWAYS_BUCKET,
    LAST_SEEN_BUCKET,
    DeviceOnline,
    GatewayBeat,
    LastSeen,
)

log = structlog.get_logger(__name__)

_encoder = msgspec.msgpack.Encoder()
_device_decoder = msgspec.msgpack.Decoder(DeviceOnline)
_beat_decoder = msgspec.msgpack.Decoder(GatewayBeat)
_last_seen_decoder = msgspec.msgpack.Decoder(LastSeen)

_K = TypeVar("_K")

#: Called with (app, user, device, online) whenever the view sees a device change state.
ChangeListener = Callable[[str, str, str, bool], None]
#: Watchers of the presence buckets are started again this fast at first, then slower.
WATCH_BACKOFF = (0.2, 5.0)


def now_ms() -> int:
    return int(time.time() * 1000)


async def open_gateways_bucket(js: JetStreamContext, gateway_ttl_s: float,
                               replicas: int) -> KeyValue:
    """Create (idempotently) and open the gateways bucket: in memory, a beat expires (with a
    delete marker watchers see) ``gateway_ttl_s`` after it was written."""
    return await js.create_key_value(KeyValueConfig(
        bucket=GATEWAYS_BUCKET, history=1, ttl=gateway_ttl_s, storage=StorageType.MEMORY,
        replicas=replicas, limit_marker_ttl=gateway_ttl_s))


async def open_buckets(js: JetStreamContext, gateway_ttl_s: float,
                       replicas: int) -> tuple[KeyValue, KeyValue, KeyValue]:
    """Create (idempotently) and open the devices, gateways and last-seen buckets."""
    devices = await js.create_key_value(KeyValueConfig(
        bucket=DEVICES_BUCKET, history=1, storage=StorageType.FILE, replicas=replicas))
    gateways = await open_gateways_bucket(js, gateway_ttl_s, replicas)
    last_seen = await js.create_key_value(KeyValueConfig(
        bucket=LAST_SEEN_BUCKET, history=1, storage=StorageType.FILE, replicas=replicas))
    return devices, gateways, last_seen


class CpuMeter:
    """Percent of one core this process used since the previous reading (its CPU time,
    ``time.process_time``, over the wall time between readings)."""

    def __init__(self, cpu: Callable[[], float] = time.process_time,
                 wall: Callable[[], float] = time.monotonic) -> None:
        self._cpu = cpu
        self._wall = wall
        self._last = (cpu(), wall())

    def read(self) -> float:
        now = (self._cpu(), self._wall())
        used, elapsed = now[0] - self._last[0], now[1] - self._last[1]
        self._last = now
        return round(100.0 * used / elapsed, 1) if elapsed > 0 else 0.0


class PresenceWriter:
    """Records the sockets of one gateway and keeps its beat alive.

    The beat runs as a watcher of the writer's task group: when a beat fails (NATS down, or
    a restarted nats-server that forgot the in-memory gateways bucket) the loop ends, and its
    next run opens (re-creates) the buckets and beats at once. Each beat carries the load the
    balancer chooses by: the public ``url``, ``sockets()`` open now, the CPU used since the
    previous beat, and whether the gateway is draining (``drain`` beats at once)."""

    def __init__(self, js: JetStreamContext, gateway_id: str, *, gateway_ttl_s: float,
                 replicas: int, url: str = "", sockets: Callable[[], int] = lambda: 0) -> None:
        self._js = js
        self._gateway_id = gateway_id
        self._ttl_s = gateway_ttl_s
        self._replicas = replicas
        self._url = url
        self._sockets = sockets
        self._cpu = CpuMeter()
        self.draining = False
        self._buckets: tuple[KeyValue, KeyValue, KeyValue] | None = None
        self._tasks = TaskGroup("presence-writer")
        #: ``<app>.<device>`` (the KV key) -> its user.
        self._devices: dict[str, str] = {}

    async def announce(self, url: str) -> None:
        """Beat now with the public ``url`` (known once the server listens)."""
        self._url = url
        await self._beat()

    async def drain(self) -> None:
        """Beat ``draining`` now (the balancer stops choosing this gateway at once) and in
        every later beat. A failed beat is logged: the beat loop repeats it."""
        self.draining = True
        try:
            await self._beat()
        except Exception as exc:
            log.warning("presence_drain_beat_failed", error=repr(exc))

    async def start(self) -> None:
        self._buckets = await open_buckets(self._js, self._ttl_s, self._replicas)
        await self._beat()
        await self._sweep()
        self._tasks.watch(self._beat_forever, name="beat", backoff=Backoff(*WATCH_BACKOFF))

    async def stop(self) -> None:
        """Stop beating (and wait for the beat to end), then mark every device of this
        gateway offline."""
        await self._tasks.stop()
        if self._buckets is None:
            return
        for key, user in list(self._devices.items()):
            app, device = unscoped(key)
            await self.device_offline(app, user, device)
        try:
            await self._buckets[1].delete(self._gateway_id)
        except Exception as exc:
            log.warning("presence_stop_failed", error=repr(exc))

    async def device_online(self, app: str, user: str, device: str) -> int:
        """Record the device's socket here; returns the revision of its key: of two sockets
        of one device, the later one has the higher revision, on any gateway."""
        assert self._buckets is not None
        key = scoped(app, device)
        self._devices[key] = user
        now = now_ms()
        revision = await self._buckets[0].put(key, _encoder.encode(
            DeviceOnline(user=user, gateway=self._gateway_id, since=now, app=app)))
        await self._buckets[2].put(scoped(app, user), _encoder.encode(LastSeen(ts=now)))
        return revision

    async def device_offline(self, app: str, user: str, device: str) -> None:
        assert self._buckets is not None
        key = scoped(app, device)
        if self._devices.pop(key, None) is None:
            return
        try:
            entry = await self._buckets[0].get(key)
            if entry.value and _device_decoder.decode(entry.value).gateway == self._gateway_id:
                await self._buckets[0].delete(key)
        except KeyNotFoundError:
            pass
        await self._buckets[2].put(scoped(app, user), _encoder.encode(LastSeen(ts=now_ms())))

    async def _beat(self) -> None:
        assert self._buckets is not None
        await self._buckets[1].put(self._gateway_id, _encoder.encode(GatewayBeat(
            gateway=self._gateway_id, ts=now_ms(), url=self._url, sockets=self._sockets(),
            cpu=self._cpu.read(), draining=self.draining)))

    async def _beat_forever(self) -> None:
        """(Re-)open the buckets, then beat every third of the TTL and sweep every tenth
        beat; raises when a beat fails, and the task group runs it again."""
        self._buckets = await open_buckets(self._js, self._ttl_s, self._replicas)
        beats = 0
        while True:
            await self._beat()
            beats += 1
            if beats % 10 == 0:
                await self._sweep()
            await asyncio.sleep(self._ttl_s / 3)

    async def _sweep(self) -> None:
        """Delete device keys held by gateways that no longer beat (or by a previous run of
        this gateway id), recording their users' last-seen time."""
        assert self._buckets is not None
        devices_kv, gateways_kv, last_seen_kv = self._buckets
        alive: set[str] = set()
        for entry in await _entries(gateways_kv):
            alive.add(entry[0])
        for device, value in await _entries(devices_kv):
            state = _device_decoder.decode(value)
            stale = state.gateway not in alive or (
                state.gateway == self._gateway_id and device not in self._devices)
            if stale:
                await devices_kv.delete(device)
                await last_seen_kv.put(scoped(unscoped(device)[0], state.user),
                                       _encoder.encode(LastSeen(ts=now_ms())))


async def _entries(kv: KeyValue) -> list[tuple[str, bytes]]:
    """Every live (key, value) of a bucket."""
    watcher = await kv.watchall()
    entries = []
    async for entry in watcher:
        if entry is None:
            break
        if entry.value and entry.operation is None:
            entries.append((entry.key, entry.value))
    await watcher.stop()  # type: ignore[no-untyped-call]
    return entries


class PresenceView:
    """A local, watcher-fed copy of the presence buckets; each watcher is restarted by the
    view's task group when it fails or NATS reconnects (``runtime.kv.BucketFollower``)."""

    def __init__(self, nc: Client, *, gateway_ttl_s: float, replicas: int) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._ttl_s = gateway_ttl_s
        self._replicas = replicas
        self._devices: dict[str, DeviceOnline] = {}
        self._by_gateway: dict[str, set[str]] = defaultdict(set)
        #: (app, user) -> the keys of its devices
        self._by_user: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._gateways: set[str] = set()
        self._listeners: list[ChangeListener] = []
        self._tasks = TaskGroup("presence-view")
        self._last_seen: KeyValue | None = None
        self._ready = asyncio.Event()

    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    async def start(self) -> None:
        """Follow the devices and gateways buckets; return once both are loaded."""
        self._last_seen = (await self._open())[2]
        gateways_ready = asyncio.Event()
        followers = {
            "gateways": BucketFollower(self._nc, self._bucket(1), self._on_gateway,
                                       lambda: list(self._gateways), gateways_ready.set),
            "devices": BucketFollower(self._nc, self._bucket(0), self._on_device,
                                      lambda: list(self._devices), self._ready.set),
        }
        await follow_until_loaded(self._tasks, followers, (gateways_ready, self._ready),
                                  backoff=WATCH_BACKOFF)

    async def stop(self) -> None:
        await self._tasks.stop()

    async def _open(self) -> tuple[KeyValue, KeyValue, KeyValue]:
        return await open_buckets(self._js, self._ttl_s, self._replicas)

    def _bucket(self, index: int) -> Callable[[], Awaitable[KeyValue]]:
        async def open_one() -> KeyValue:
            return (await self._open())[index]

        return open_one

    def is_online(self, app: str, device: str) -> bool:
        return self._online(scoped(app, device))

    def gateway_of(self, app: str, device: str) -> str | None:
        """The gateway holding the device's socket, if it is online."""
        state = self._devices.get(scoped(app, device))
        return state.gateway if state is not None and state.gateway in self._gateways else None

    def _online(self, key: str) -> bool:
        state = self._devices.get(key)
        return state is not None and state.gateway in self._gateways

    def user_online(self, app: str, user: str) -> bool:
        return bool(self.gateways_of_user(app, user))

    def gateways_of_user(self, app: str, user: str) -> set[str]:
        """The live gateways holding a socket of one of the user's devices."""
        gateways: set[str] = set()
        for key in self._by_user.get((app, user), ()):
            state = self._devices.get(key)
            if state is not None and state.gateway in self._gateways:
                gateways.add(state.gateway)
        return gateways

    async def last_seen(self, app: str, user: str) -> int | None:
        assert self._last_seen is not None
        try:
            entry = await self._last_seen.get(scoped(app, user))
        except KeyNotFoundError:
            return None
        return _last_seen_decoder.decode(entry.value).ts if entry.value else None

    def _on_gateway(self, gateway: str, value: bytes | None) -> None:
        """A gateway's beat appeared or expired: its devices go online or offline with it.
        Device entries are kept either way (a restarted nats-server forgets the gateways
        bucket until the next beat; the gateways' sweep deletes devices of dead gateways)."""
        alive = value is not None
        if alive == (gateway in self._gateways):
            return
        if alive:
            self._gateways.add(gateway)
        else:
            self._gateways.discard(gateway)
        for key in list(self._by_gateway.get(gateway, ())):
            state = self._devices.get(key)
            if state is not None:
                self._notify(key, state.user, alive)

    def _on_device(self, key: str, value: bytes | None) -> None:
        """A device key (``<app>.<device>``) was written or deleted; listeners hear of online
        transitions."""
        was_online = self._online(key)
        app = unscoped(key)[0]
        previous = self._devices.pop(key, None)
        if previous is not None:
            _discard(self._by_gateway, previous.gateway, key)
            _discard(self._by_user, (app, previous.user), key)
        state = None if value is None else _device_decoder.decode(value)
        if state is not None:
            self._devices[key] = state
            self._by_gateway[state.gateway].add(key)
            self._by_user[(app, state.user)].add(key)
        online = self._online(key)
        user = state.user if state is not None else previous.user if previous else None
        if online != was_online and user is not None:
            self._notify(key, user, online)

    def _notify(self, key: str, user: str, online: bool) -> None:
        app, device = unscoped(key)
        for listener in self._listeners:
            listener(app, user, device, online)


def _discard(index: dict[_K, set[str]], at: _K, key: str) -> None:
    """Take ``key`` out of ``index[at]``, and the entry with it once it is empty."""
    held = index.get(at)
    if held is not None:
        held.discard(key)
        if not held:
            del index[at]
