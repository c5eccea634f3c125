"""An asyncio client: connect with a token, send, receive (deduplicated by server id), ack,
mark read, sync the backlog.

Messages are acknowledged automatically in small batches once they are handed to the
application (``messages()`` / ``next_message()``), so the server stops re-sending them. The
client holds its resume cursor (``cursor``) and passes it to ``sync``.

Given a ``balancer`` URL, the client asks it (``POST /v1/connect``) which gateway to open its
socket on before every connect, and connects with the ticket it got. With
``reconnect=True`` (the default with a balancer) a socket closed with 4012 (moved: its gateway
drains), 1001 (going away) or lost (1006) is opened again, through the balancer when there is
one, with back-off, and the backlog is synced from the cursor; requests made meanwhile wait
for the new socket. Other close codes (4011 replaced, 41xx) are not retried.
"""

import asyncio
import itertools
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import aiohttp
import msgspec

from schemas.codec import decode_server_frame, encode_frame
from schemas.errors import CloseCode
from schemas.frames import (
    Accepted,
    Ack,
    AckItem,
    Callback,
    CallbackAccepted,
    Contact,
    Destination,
    DeviceListChanged,
    Error,
    KeysLow,
    Message,
    Ping,
    Pong,
    Presence,
    PresenceSubscribe,
    PresenceSubscribed,
    PresenceUnsubscribe,
    Read,
    Receipt,
    Send,
    ServerFrame,
    Sync,
    Synced,
    Typing,
    UserTyping,
    Welcome,
)
from schemas.rest import ConnectReply, DevDeviceRequest, DevDeviceResponse, Problem

ACK_BATCH = 200
ACK_DELAY_S = 0.02
SEEN_IDS = 100_000
#: Close codes after which the client connects again by itself (``reconnect=True``); None:
#: the connection ended without a close frame.
RECONNECT_CODES = frozenset({CloseCode.MOVED, CloseCode.GOING_AWAY, 1006, None})
#: Back-off between reconnect attempts (doubling), and how long one attempt may take.
RECONNECT_BACKOFF_S = (0.1, 5.0)
CONNECT_TIMEOUT_S = 10.0
CLOSES_KEPT = 100


class BalancerError(Exception):
    """The balancer refused ``/v1/connect`` (``problem`` says why; ``retry_after_s`` on 503)."""

    def __init__(self, status: int, problem: Problem | None) -> None:
        super().__init__(f"balancer answered {status}: "
                         f"{problem.detail if problem else 'no problem body'}")
        self.status = status
        self.problem = problem
        self.retry_after_s = problem.retry_after_s if problem else None


async def balancer_connect(balancer_url: str, token: str,
                           timeout_s: float = CONNECT_TIMEOUT_S) -> ConnectReply:
    """Ask the balancer which gateway to connect to; ``BalancerError`` if it refuses."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        async with session.post(f"{balancer_url.rstrip('/')}/v1/connect",
                                headers={"Authorization": f"Bearer {token}"}) as response:
            data = await response.read()
            if response.status != 200:
                try:
                    problem: Problem | None = msgspec.json.decode(data, type=Problem)
                except msgspec.DecodeError:
                    problem = None
                raise BalancerError(response.status, problem)
    return msgspec.json.decode(data, type=ConnectReply)


class ClientError(Exception):
    """The server answered a request with an ``error`` frame."""

    def __init__(self, error: Error) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.code = error.code
        self.retry = error.retry
        #: ``rate_limited``: seconds to wait before resending the request.
        self.retry_after_s = error.retry_after_s
        self.error = error


class Credentials(msgspec.Struct):
    """What a device needs to connect."""

    user: str
    device: str
    token: str


async def register_device(base_url: str, user: str, device: str | None = None) -> Credentials:
    """Register a device through the embedded-mode endpoint and return its credentials."""
    body = msgspec.json.encode(DevDeviceRequest(user=user, device=device))
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base_url}/v1/dev/devices", data=body,
                                headers={"Content-Type": "application/json"}) as response:
            data = await response.read()
            if response.status != 201:
                raise RuntimeError(f"registration failed ({response.status}): {data!r}")
    reply = msgspec.json.decode(data, type=DevDeviceResponse)
    return Credentials(user=reply.user, device=reply.device, token=reply.token)


class CourierClient:
    """One device's connection. Use ``async with CourierClient(url, creds) as client``."""

    def __init__(self, base_url: str, credentials: Credentials, *, auto_ack: bool = True,
                 balancer: str | None = None, reconnect: bool | None = None) -> None:
        #: The gateway's base URL: the socket's without a balancer, REST calls always.
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self.auto_ack = auto_ack
        self.balancer = balancer.rstrip("/") if balancer else None
        self.reconnect = balancer is not None if reconnect is None else reconnect
        #: Sockets opened so far (1 + reconnects), how the last ``CLOSES_KEPT`` ended (close
        #: code, None without a close frame), and the gateway of the current one.
        self.connects = 0
        self.closes: deque[int | None] = deque(maxlen=CLOSES_KEPT)
        self.gateway: str | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._closing = False
        self._up = asyncio.Event()
        #: The opaque cursor of the last ``synced`` frame (None before the first sync).
        self.cursor: str | None = None
        #: Message frames dropped because their id was seen before (at-least-once on the wire).
        self.duplicates = 0
        self.welcome: Welcome | None = None
        self.close_code: int | None = None
        self.receipts: asyncio.Queue[Receipt] = asyncio.Queue()
        self.errors: asyncio.Queue[Error] = asyncio.Queue()
        #: ``presence`` frames of watched users, ``user_typing`` and ``contact`` frames.
        self.presence: asyncio.Queue[Presence] = asyncio.Queue()
        self.typing: asyncio.Queue[UserTyping] = asyncio.Queue()
        self.contacts: asyncio.Queue[Contact] = asyncio.Queue()
        #: ``keys_low`` frames: a device of this user should upload one-time keys.
        self.keys_low: asyncio.Queue[KeysLow] = asyncio.Queue()
        #: ``device_list_changed`` frames: a user gained or lost a device (re-query its keys).
        self.device_lists: asyncio.Queue[DeviceListChanged] = asyncio.Queue()
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._pending: dict[str, asyncio.Future[ServerFrame]] = {}
        self._ids = itertools.count(1)
        self._acks: list[AckItem] = []
        self._ack_task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._welcomed: asyncio.Future[Welcome] | None = None

    async def __aenter__(self) -> "CourierClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._ws is None or self._ws.closed

    async def connect(self) -> Welcome:
        """Open the socket and wait for ``welcome`` (keeps seen ids and cursor across calls);
        with ``reconnect``, keep it open from then on."""
        self._closing = False
        welcome = await self._open()
        if self.reconnect and (self._keeper is None or self._keeper.done()):
            self._keeper = asyncio.create_task(self._keep_connected())
        return welcome

    async def _target(self) -> tuple[str, dict[str, str]]:
        """The socket's URL and headers: the balancer's choice and ticket, or the gateway."""
        if self.balancer is None:
            return (self.base_url.replace("http", "ws", 1) + "/v1/ws",
                    {"Authorization": f"Bearer {self.credentials.token}"})
        reply = await balancer_connect(self.balancer, self.credentials.token)
        return f"{reply.url}?{urlencode({'ticket': reply.ticket})}", {}

    async def _open(self) -> Welcome:
        ws_url, headers = await self._target()
        if self._session is not None:
            await self._session.close()
        self._session = aiohttp.ClientSession()
        self._welcomed = asyncio.get_running_loop().create_future()
        self.close_code = None
        try:
            self._ws = await self._session.ws_connect(ws_url, headers=headers, max_msg_size=0,
                                                      heartbeat=None)
        except BaseException:  # a refused upgrade: leave no session open behind
            await self._session.close()
            raise
        self._reader = asyncio.create_task(self._read_forever())
        self.welcome = await asyncio.wait_for(self._welcomed, CONNECT_TIMEOUT_S)
        self.gateway = self.welcome.gateway
        self.connects += 1
        self._up.set()
        return self.welcome

    async def _keep_connected(self) -> None:
        """Each time the socket ends with a code of ``RECONNECT_CODES``: open a new one (with
        back-off), sync from the cursor, send the acks still pending."""
        while True:
            assert self._reader is not None
            await asyncio.gather(self._reader, return_exceptions=True)
            if self._closing or self.close_code not in RECONNECT_CODES:
                return
            delay = RECONNECT_BACKOFF_S[0]
            while True:
                try:
                    await self._open()
                    await self.sync()
                    break
                except (aiohttp.ClientError, ConnectionError, BalancerError, ClientError,
                        TimeoutError) as exc:
                    wait = getattr(exc, "retry_after_s", None) or delay
                    delay = min(delay * 2, RECONNECT_BACKOFF_S[1])
                    if self._ws is not None and not self._ws.closed:
                        break  # opened but the sync failed: the socket's end says what next
                    await asyncio.sleep(wait)
            await self.flush_acks()

    async def wait_connected(self, timeout: float = 30.0) -> None:
        """Until a socket is open (at once if it is)."""
        await asyncio.wait_for(self._up.wait(), timeout)

    async def close(self) -> None:
        self._closing = True
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
            self._keeper = None
        await self.flush_acks()
        if self._ack_task is not None:
            self._ack_task.cancel()
            self._ack_task = None
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def abort(self) -> None:
        """Drop the connection without flushing acks (simulates a network cut)."""
        self._closing = True
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
            self._keeper = None
        self._acks.clear()
        if self._ack_task is not None:
            self._ack_task.cancel()
            self._ack_task = None
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------------ requests

    async def send(self, to: str, body: bytes | None = None, *, kind: str = "user",
                   payloads: dict[str, bytes] | None = None, client_id: str | None = None,
                   ttl: int | None = None, receipt: bool = True, module: str = "chat",
                   blobs: list[str] | None = None, timeout: float = 10.0) -> Accepted:
        """Send and wait until the server stored it; ``ClientError`` if refused. ``blobs``:
        the attachments the body refers to (``client.attachments``)."""
        frame = Send(client_id=client_id or uuid.uuid4().hex,
                     to=Destination(kind=kind, id=to),  # type: ignore[arg-type]
                     body=body, payloads=payloads, ttl=ttl, receipt=receipt, module=module,
                     blobs=blobs, id=self._next_id())
        reply = await self._request(frame.id, encode_frame(frame), timeout)
        assert isinstance(reply, Accepted)
        return reply

    async def sync(self, timeout: float = 60.0) -> Synced:
        """Ask for the backlog after ``cursor``; returns when it has all arrived."""
        request_id = self._next_id()
        frame = Sync(after=self.cursor, id=request_id)
        reply = await self._request(request_id, encode_frame(frame), timeout)
        assert isinstance(reply, Synced)
        self.cursor = reply.cursor
        return reply

    async def start_sync(self) -> None:
        """Ask for the backlog without waiting for ``synced`` (tests cut the socket midway)."""
        await self.send_raw(encode_frame(Sync(after=self.cursor)))

    async def read(self, conversation: str, seq: int) -> None:
        await self.send_raw(encode_frame(Read(conversation=conversation, seq=seq)))

    async def ping(self, timeout: float = 10.0) -> Pong:
        request_id = self._next_id()
        reply = await self._request(request_id, encode_frame(Ping(id=request_id)), timeout)
        assert isinstance(reply, Pong)
        return reply

    async def callback(self, handler: str, body: bytes,
                       timeout: float = 10.0) -> CallbackAccepted:
        """Hand ``body`` to a system handler (for example ``upload_logs``); ``ClientError``
        if the handler is unknown or the body too large."""
        request_id = self._next_id()
        frame = Callback(handler=handler, body=body, id=request_id)
        reply = await self._request(request_id, encode_frame(frame), timeout)
        assert isinstance(reply, CallbackAccepted)
        return reply

    async def presence_subscribe(self, users: list[str],
                                 timeout: float = 10.0) -> PresenceSubscribed:
        """Watch ``users``: their current state now, ``presence`` frames on changes (only
        for contacts who do not block you; the others come back in ``denied``)."""
        request_id = self._next_id()
        frame = PresenceSubscribe(users=users, id=request_id)
        reply = await self._request(request_id, encode_frame(frame), timeout)
        assert isinstance(reply, PresenceSubscribed)
        return reply

    async def presence_unsubscribe(self, users: list[str]) -> None:
        await self.send_raw(encode_frame(PresenceUnsubscribe(users=users)))

    async def send_typing(self, conversation: str, active: bool = True) -> None:
        """Tell the conversation's other members this user is (or stopped) typing."""
        await self.send_raw(encode_frame(Typing(conversation=conversation, active=active)))

    async def api(self, method: str, path: str,
                  body: object | None = None) -> tuple[int, object]:
        """Call the REST API with this device's token: (status, decoded JSON or None)."""
        data = msgspec.json.encode(body) if body is not None else None
        headers = {"Authorization": f"Bearer {self.credentials.token}",
                   "Content-Type": "application/json"}
        async with aiohttp.ClientSession() as session, session.request(
                method, f"{self.base_url}{path}", data=data, headers=headers) as response:
            raw = await response.read()
            return response.status, msgspec.json.decode(raw) if raw else None

    async def send_raw(self, data: bytes | str) -> None:
        """Send any text frame as is (tests use it for malformed input)."""
        assert self._ws is not None
        await self._ws.send_str(data.decode() if isinstance(data, bytes) else data)

    # ------------------------------------------------------------------ receiving

    async def next_message(self, timeout: float = 10.0) -> Message:
        """The next message not seen before (acked automatically)."""
        message = await asyncio.wait_for(self._inbox.get(), timeout)
        if self.auto_ack:
            self._queue_ack(message)
        return message

    async def messages(self) -> AsyncIterator[Message]:
        while True:
            yield await self.next_message(timeout=3600)

    def pending_messages(self) -> int:
        return self._inbox.qsize()

    async def flush_acks(self) -> None:
        """Send the pending acknowledgements, ``ACK_BATCH`` per frame."""
        while self._acks and self._ws is not None and not self._ws.closed:
            batch, self._acks = self._acks[:ACK_BATCH], self._acks[ACK_BATCH:]
            await self.send_raw(encode_frame(Ack(messages=batch)))

    # ------------------------------------------------------------------ internals

    def _next_id(self) -> str:
        return str(next(self._ids))

    async def _request(self, request_id: str | None, data: bytes,
                       timeout: float) -> ServerFrame:
        assert request_id is not None
        if not self._up.is_set() and self._keeper is not None and not self._keeper.done():
            await self.wait_connected(timeout)  # a reconnect is under way
        future: asyncio.Future[ServerFrame] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self.send_raw(data)
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(request_id, None)

    def _queue_ack(self, message: Message) -> None:
        # Without a sender the server sends no "delivered" receipt: only when one is wanted.
        self._acks.append(AckItem(id=message.message_id, seq=message.seq,
                                  conversation=message.conversation,
                                  sender=message.sender.user if message.receipt else None))
        if self._ack_task is None or self._ack_task.done():
            delay = 0.0 if len(self._acks) >= ACK_BATCH else ACK_DELAY_S
            self._ack_task = asyncio.create_task(self._ack_later(delay))

    async def _ack_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.flush_acks()

    async def _read_forever(self) -> None:
        assert self._ws is not None
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                frame = decode_server_frame(msg.data)
                if frame is not None:  # None: a frame type newer than this library
                    self._on_frame(frame)
        finally:
            self._up.clear()
            self.close_code = self._ws.close_code
            self.closes.append(self.close_code)
            closed = ConnectionError(f"connection closed ({self.close_code})")
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(closed)
            if self._welcomed is not None and not self._welcomed.done():
                self._welcomed.set_exception(closed)

    def _on_frame(self, frame: ServerFrame) -> None:
        if isinstance(frame, Message):
            if frame.message_id in self._seen:
                self.duplicates += 1
                return
            self._seen[frame.message_id] = None
            if len(self._seen) > SEEN_IDS:
                self._seen.popitem(last=False)
            self._inbox.put_nowait(frame)
        elif isinstance(frame, Receipt):
            self.receipts.put_nowait(frame)
        elif isinstance(frame, Presence):
            self.presence.put_nowait(frame)
        elif isinstance(frame, UserTyping):
            self.typing.put_nowait(frame)
        elif isinstance(frame, Contact):
            self.contacts.put_nowait(frame)
        elif isinstance(frame, KeysLow):
            self.keys_low.put_nowait(frame)
        elif isinstance(frame, DeviceListChanged):
            self.device_lists.put_nowait(frame)
        elif isinstance(frame, Welcome):
            if self._welcomed is not None and not self._welcomed.done():
                self._welcomed.set_result(frame)
        elif isinstance(frame, Error):
            future = self._pending.get(frame.id or "")
            if future is not None and not future.done():
                future.set_exception(ClientError(frame))
            else:
                self.errors.put_nowait(frame)
        else:
            future = self._pending.get(getattr(frame, "id", None) or "")
            if future is not None and not future.done():
                future.set_result(frame)
