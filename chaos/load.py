"""The traffic of one fault, through the client library (``client.sdk.CourierClient``).

Each sender user streams messages to one recipient user at a fixed rate, one send in flight,
and keeps a message it has no ``accepted`` for in its outbox: it resends it with the same
``client_id`` (after reconnecting if the socket closed) until the gateway acknowledges it, as
protocol.md 5.1 asks of a client. Each recipient user has two devices: an online one,
connected throughout, and an offline one that connects only when the system settles. A
device whose socket closes reconnects (its home gateway first, then the others) and syncs
after every connect, as an app does; the client library keeps its seen ids and cursor across
reconnects.

Every message body carries its key (sender user, counter); the ``EventLog`` records what was
sent and accepted and what each device's client library showed, for ``chaos.accounting``.
"""

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Final

import aiohttp
import msgspec

from bench.pacing import wait_until
from chaos.accounting import Key, Sent, Shown
from client.sdk import BalancerError, ClientError, CourierClient, Credentials

SEND_TIMEOUT_S: Final = 5.0
SYNC_TIMEOUT_S: Final = 15.0
CONNECT_BACKOFF_S: Final = (0.1, 0.2, 0.5, 1.0)
RETRY_BACKOFF_S: Final = 0.5
POLL_S: Final = 0.1

#: Registers a device (user, device id) and returns its credentials.
Register = Callable[[str, str], Awaitable[Credentials]]

#: What a failed connect, send or sync on a dropped connection raises (a balancer that has no
#: gateway to offer, too).
CONNECTION_ERRORS: Final = (OSError, TimeoutError, aiohttp.ClientError, BalancerError)


class EventLog:
    """Sends (by key, updated when accepted) and shows (in the order each device showed them)."""

    def __init__(self) -> None:
        self.sent: dict[Key, Sent] = {}
        self.shown: list[Shown] = []
        #: Error codes the gateway answered sends with, and exceptions of failed attempts.
        self.errors: Counter[str] = Counter()

    def tried(self, key: Key, recipients: tuple[str, ...]) -> None:
        self.sent[key] = Sent(key=key, first_try=time.monotonic(), recipients=recipients)

    def accepted(self, key: Key, message_id: str, seq: int) -> None:
        self.sent[key] = replace(self.sent[key], message_id=message_id, seq=seq,
                                 accepted_at=time.monotonic())

    def show(self, event: Shown) -> None:
        self.shown.append(event)


def encode_key(key: Key) -> bytes:
    return msgspec.json.encode(key)


def decode_key(body: bytes) -> Key | None:
    """The key of a load message body; None for any other body."""
    try:
        user, counter = msgspec.json.decode(body, type=tuple[str, int])
    except (msgspec.DecodeError, ValueError):
        return None
    return user, counter


class Device:
    """One client-library connection that comes back: ``connected`` reconnects with back-off,
    trying ``urls`` in turn from the first (the device's home gateway), or, given a
    ``balancer``, on the gateway the balancer chooses each time."""

    def __init__(self, credentials: Credentials, urls: list[str],
                 balancer: str | None = None) -> None:
        self.urls = urls
        self.client = CourierClient(urls[0], credentials, balancer=balancer, reconnect=False)
        #: Successful connects, the first included.
        self.connects = 0
        #: The gateway of each connect, in order; the close code of each socket that ended.
        self.gateways: list[str | None] = []
        self.ended: Counter[int | None] = Counter()

    @property
    def name(self) -> str:
        return self.client.credentials.device

    async def connected(self, deadline: float = math.inf) -> None:
        """Return once the socket is open; ``TimeoutError`` at ``deadline``."""
        attempt = 0
        if self.client.closed and len(self.gateways) > sum(self.ended.values()):
            self.ended[self.client.close_code] += 1
        while self.client.closed:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.name}: no gateway answered")
            url = self.urls[attempt % len(self.urls)]
            await self.client.close()  # the previous connection's session, if any
            self.client.base_url = url
            try:
                await self.client.connect()
                self.connects += 1
                self.gateways.append(self.client.gateway)
                return
            except CONNECTION_ERRORS:
                await self.client.close()
                await asyncio.sleep(CONNECT_BACKOFF_S[min(attempt, len(CONNECT_BACKOFF_S) - 1)])
                attempt += 1

    async def close(self) -> None:
        await self.client.close()


class Receiver(Device):
    """A recipient device: shows every message its client library hands over, and keeps a
    synced connection while ``run`` runs."""

    def __init__(self, credentials: Credentials, urls: list[str], log: EventLog,
                 balancer: str | None = None) -> None:
        super().__init__(credentials, urls, balancer)
        self._log = log
        #: Start time of the last sync that completed.
        self.synced_from = -1.0
        self._synced_connection = 0
        self._sync_wanted = asyncio.Event()

    async def run(self) -> None:
        """Show messages and keep the connection synced, until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._show_forever())
            await self._keep_synced()

    async def synced_after(self, since: float, deadline: float) -> bool:
        """Ask for a sync and wait until one that started after ``since`` completed."""
        self._sync_wanted.set()
        return await wait_until(lambda: self.synced_from >= since,
                                max(deadline - time.monotonic(), 0.0))

    async def _keep_synced(self) -> None:
        while True:
            await self.connected()
            if self._synced_connection == self.connects and not self._sync_wanted.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_S):
                        await self._sync_wanted.wait()
                continue
            self._sync_wanted.clear()
            started = time.monotonic()
            try:
                await self.client.sync(timeout=SYNC_TIMEOUT_S)
            except ClientError:  # e.g. unavailable while the store is down: try again
                self._sync_wanted.set()
                await asyncio.sleep(RETRY_BACKOFF_S)
                continue
            except CONNECTION_ERRORS:
                self._sync_wanted.set()
                continue  # reconnect on the next turn
            self._synced_connection = self.connects
            self.synced_from = started

    async def _show_forever(self) -> None:
        while True:
            try:
                message = await self.client.next_message(timeout=SYNC_TIMEOUT_S)
            except TimeoutError:
                continue  # nothing to show for a while
            key = decode_key(message.body)
            if key is not None:
                self._log.show(Shown(device=self.name, key=key, message_id=message.message_id,
                                     conversation=message.conversation, seq=message.seq,
                                     at=time.monotonic()))


class Sender(Device):
    """A sender device: ``run`` sends to ``to`` at ``rate_per_s`` until ``stop`` is set."""

    def __init__(self, credentials: Credentials, urls: list[str], log: EventLog, to: str,
                 recipients: tuple[str, ...], balancer: str | None = None) -> None:
        super().__init__(credentials, urls, balancer)
        self._log = log
        self._to = to
        self._recipients = recipients

    @property
    def user(self) -> str:
        return self.client.credentials.user

    async def run(self, rate_per_s: float, stop: asyncio.Event, give_up_s: float) -> None:
        """Send one message every ``1 / rate_per_s`` seconds (not catching up after a stall)
        until ``stop``; each message is retried until accepted, refused or ``give_up_s`` after
        its first try."""
        interval = 1.0 / rate_per_s
        next_at = time.monotonic()
        counter = 0
        while not stop.is_set():
            await asyncio.sleep(max(next_at - time.monotonic(), 0.0))
            next_at = max(next_at + interval, time.monotonic())
            await self._send_until_accepted((self.user, counter), time.monotonic() + give_up_s)
            counter += 1

    async def _send_until_accepted(self, key: Key, give_up_at: float) -> None:
        self._log.tried(key, self._recipients)
        client_id = f"{key[0]}-{key[1]}"
        while time.monotonic() < give_up_at:
            try:
                await self.connected(give_up_at)
                reply = await self.client.send(self._to, encode_key(key), client_id=client_id,
                                               timeout=SEND_TIMEOUT_S)
            except ClientError as exc:
                self._log.errors[exc.code] += 1
                if not exc.retry:
                    return
                await asyncio.sleep(RETRY_BACKOFF_S)
            except CONNECTION_ERRORS as exc:
                self._log.errors[type(exc).__name__] += 1
                await asyncio.sleep(POLL_S)  # reconnect (or give up) on the next turn
            else:
                self._log.accepted(key, reply.message_id, reply.seq)
                return
