"""The ``register_device`` RPC: every gateway calls it once per WebSocket connect.

A connect is mostly a reconnect of a device that is registered already, and registering one
changes nothing: such a call reads the device and answers, with no write transaction (which
would queue behind the consumer's batches), no partition stream positions and no
``dir.changed`` (which would drop the routers' cached device lists of the user for nothing).

A new device needs each partition stream's last position: it starts after every message
accepted before it registered. Reading them is one JetStream API request per partition, so
concurrent registrations share one read (``SharedRound``): each waits for a read that began
after it arrived, which is all the guarantee needs.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from nats.aio.client import Client
from prometheus_client import Counter

from schemas import rpc
from schemas.ids import scoped
from schemas.partitions import position
from schemas.subjects import DIRECTORY_CHANGED
from storage_worker.store.base import MessageStore
from storage_worker.store.keys import KeyStore

T = TypeVar("T")

REGISTRATIONS = Counter("courier_storage_device_registrations_total",
                        "register_device calls, by outcome (known: registered already, no "
                        "write; new: written)", ["outcome"])
POSITION_READS = Counter("courier_storage_registration_position_reads_total",
                         "Reads of the partition stream positions for new devices (one read "
                         "serves every registration waiting for it)")


class SharedRound(Generic[T]):
    """Calls of ``get`` share calls of ``fetch``: each caller gets the result of a fetch that
    started after it called, one fetch at a time. Callers that arrive while a fetch runs wait
    for it to end and share the next one. A fetch that raises raises in each of its callers;
    if the caller that fetches is cancelled, the others start a round of their own."""

    def __init__(self, fetch: Callable[[], Awaitable[T]]) -> None:
        self._fetch = fetch
        self._lock = asyncio.Lock()
        #: The round that has not started yet: callers join it.
        self._next: asyncio.Future[T] | None = None

    async def get(self) -> T:
        joined = self._next
        if joined is not None:
            try:
                return await asyncio.shield(joined)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if joined.cancelled() and task is not None and not task.cancelling():
                    return await self.get()  # the caller that fetched was cancelled, not us
                raise
        loop = asyncio.get_running_loop()
        round_: asyncio.Future[T] = loop.create_future()
        self._next = round_
        round_.add_done_callback(_retrieve)
        try:
            async with self._lock:  # the round in progress ends first
                self._next = None  # from here on, callers wait for the round after this one
                round_.set_result(await self._fetch())
        except BaseException as exc:
            if self._next is round_:
                self._next = None
            if isinstance(exc, asyncio.CancelledError):
                round_.cancel()  # its other callers start a round of their own
            elif not round_.done():
                round_.set_exception(exc)
            raise
        return round_.result()


def _retrieve(future: "asyncio.Future[Any]") -> None:
    """Mark a round's exception as retrieved: the caller that fetched raised it already."""
    if not future.cancelled():
        future.exception()


class Registrar:
    """Registers devices in the store (``MessageStore.register_device``) for the RPC."""

    def __init__(self, store: MessageStore, keys: KeyStore, nc: Client,
                 stream_positions: Callable[[], Awaitable[list[int]]],
                 partitions: int) -> None:
        self._store = store
        self._keys = keys
        self._nc = nc
        self._stream_positions = stream_positions
        self._positions = SharedRound(self._read_positions)
        self._partitions = partitions

    async def _read_positions(self) -> list[int]:
        POSITION_READS.inc()
        return await self._stream_positions()

    async def register(self, request: rpc.RegisterDevice) -> rpc.DeviceInfo:
        info = await self._registered(request)
        if info is None:
            info = await self._register_new(request)
        info.one_time_keys_left = await self._keys.count(request.app, request.user,
                                                         request.device)
        return info

    async def _registered(self, request: rpc.RegisterDevice) -> rpc.DeviceInfo | None:
        """The device, if the user's device list holds it already (the last row a
        registration writes); else None, and ``register_device`` decides (a device of
        another user included: a conflict)."""
        _exists, devices = await self._store.user_devices(request.app, request.user)
        info = next((d for d in devices if d.device == request.device), None)
        if info is not None:
            REGISTRATIONS.labels("known").inc()
        return info

    async def _register_new(self, request: rpc.RegisterDevice) -> rpc.DeviceInfo:
        # Messages accepted before this call but not stored yet are at most each partition
        # stream's last one: a new device starts after them, so it never gets them.
        positions = await self._positions.get()
        start_after = [position(seq, partition, self._partitions) if seq else 0
                       for partition, seq in enumerate(positions)]
        info = await self._store.register_device(request.app, request.user, request.device,
                                                 int(time.time() * 1000),
                                                 start_after=start_after)
        await self._nc.publish(DIRECTORY_CHANGED, scoped(request.app, request.user).encode())
        REGISTRATIONS.labels("new").inc()
        return info

