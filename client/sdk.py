"""An asyncio client: connect with a token, send, receive (deduplicated by server id), ack,
mark read, sync the backlog.

Messages are acknowledged automatically in small batches once they are handed to the
application (``messages()`` / ``next_message()``), so the server stops re-sending them. The
client holds its resume cursor (``cursor``) and passes it to ``sync``.
"""

import asyncio
import itertools
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator

import aiohttp
import msgspec

from schemas.codec import decode_server_frame, encode_frame
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
from schemas.rest import DevDeviceRequest, DevDeviceResponse

ACK_BATCH = 200
ACK_DELAY_S = 0.02
SEEN_IDS = 100_000


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

    def __init__(self, base_url: str, credentials: Credentials, *, auto_ack: bool = True) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self.auto_ack = auto_ack
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
        """Open the socket and wait for ``welcome`` (keeps seen ids and cursor across calls)."""
        ws_url = self.base_url.replace("http", "ws", 1) + "/v1/ws"
        self._session = aiohttp.ClientSession()
        self._welcomed = asyncio.get_running_loop().create_future()
        self.close_code = None
        try:
            self._ws = await self._session.ws_connect(
                ws_url, headers={"Authorization": f"Bearer {self.credentials.token}"},
                max_msg_size=0, heartbeat=None)
        except BaseException:  # a refused upgrade: leave no session open behind
            await self._session.close()
            raise
        self._reader = asyncio.create_task(self._read_forever())
        self.welcome = await asyncio.wait_for(self._welcomed, 10)
        return self.welcome

    async def close(self) -> None:
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
            self.close_code = self._ws.close_code
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
