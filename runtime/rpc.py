"""Typed request/reply over core NATS (MessagePack), used for the storage worker's RPC.

The server side maps each ``ProtocolError`` to a ``Failed`` reply with its code; a transient
failure (``runtime.transient``: the store or NATS away, e.g. ``StoreUnavailable``) to
``unavailable``, which the gateway answers with 503 and ``retry``; any other exception becomes
``internal`` with a fixed message and an error id that is also logged (with the traceback),
never the exception's text, and the subscription keeps serving.

At most ``concurrency`` requests are served at once (``COURIER_STORE_RPC_CONCURRENCY``). When all
slots are busy the next request waits for one; requests that arrive meanwhile wait in the NATS
subscription's buffer, and a requester whose deadline passes gets ``unavailable``.
"""

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import msgspec
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from prometheus_client import Counter, Gauge

from runtime.tasks import TaskGroup
from runtime.transient import is_transient
from schemas.errors import ErrorCode, ProtocolError
from schemas.rpc import OPERATIONS, Failed, Ok
from schemas.subjects import store_rpc

log = structlog.get_logger(__name__)

RPC_SERVED = Counter("courier_rpc_served_total", "RPC requests served", ["op", "result"])
RPC_INFLIGHT = Gauge("courier_rpc_inflight", "RPC requests being served now")
RPC_WAITED = Counter("courier_rpc_waited_total",
                     "RPC requests that waited for a free slot (all were busy)")
#: Requests served at once unless configured otherwise.
DEFAULT_CONCURRENCY = 256

_encoder: Final = msgspec.msgpack.Encoder()
T = TypeVar("T")
Handler = Callable[[Any], Awaitable[Any]]


class RpcClient:
    """Calls ``store.rpc.<op>`` and returns the typed value or raises ``ProtocolError``."""

    def __init__(self, nc: Client, timeout_s: float = 15.0) -> None:
        self._nc = nc
        self._timeout_s = timeout_s
        self._decoders = {
            op: msgspec.msgpack.Decoder(Ok[value_type] | Failed)  # type: ignore[valid-type]
            for op, (_, value_type) in OPERATIONS.items()
        }

    async def call(self, op: str, request: msgspec.Struct, result: type[T], *,
                   timeout_s: float | None = None) -> T:
        """``timeout_s`` overrides the client's deadline, for callers with a fallback."""
        reply = await self._request(store_rpc(op), _encoder.encode(request),
                                    timeout_s or self._timeout_s)
        try:
            decoded = self._decoders[op].decode(reply.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # a worker of another version mid-upgrade: retryable, never the request's fault
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"unreadable {op} reply: {exc}") from None
        if isinstance(decoded, Failed):
            raise ProtocolError(ErrorCode(decoded.code), decoded.message)
        value: T = decoded.value
        return value


    async def _request(self, subject: str, data: bytes, timeout_s: float) -> Msg:
        """Request with retries while nobody serves the subject (a worker restarting)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        delay = 0.05
        while True:
            remaining = deadline - loop.time()
            try:
                return await self._nc.request(subject, data, timeout=max(remaining, 0.01))
            except NoRespondersError:
                if loop.time() + delay >= deadline:
                    raise ProtocolError(ErrorCode.UNAVAILABLE, "storage is not running") from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except NatsTimeoutError:
                raise ProtocolError(ErrorCode.UNAVAILABLE, "storage did not answer") from None


def internal_failure(event: str, **context: object) -> Failed:
    """Log the exception being handled under a fresh error id and return the ``internal``
    reply a caller gets: a fixed message naming that id, nothing of the exception."""
    error_id = secrets.token_hex(6)
    log.exception(event, error_id=error_id, **context)
    return Failed(code=ErrorCode.INTERNAL, message=f"internal error (id {error_id})")


class RpcServer:
    """Serves ``store.rpc.*`` in a queue group, at most ``concurrency`` requests at once."""

    def __init__(self, nc: Client, queue: str, handlers: dict[str, Handler], *,
                 concurrency: int = DEFAULT_CONCURRENCY) -> None:
        self._nc = nc
        self._queue = queue
        self._handlers = handlers
        self._decoders = {op: msgspec.msgpack.Decoder(OPERATIONS[op][0]) for op in handlers}
        self._subscription: Any = None
        self._tasks = TaskGroup("rpc")
        self._slots = asyncio.Semaphore(concurrency)

    async def start(self) -> None:
        self._subscription = await self._nc.subscribe(
            store_rpc("*"), queue=self._queue, cb=self._on_request
        )

    async def drain(self) -> None:
        """Stop taking requests; finish those in flight."""
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None
        await self._tasks.drain()

    async def stop(self) -> None:
        """Abandon requests still in flight (their requesters time out and retry)."""
        await self._tasks.stop()

    async def _on_request(self, msg: Msg) -> None:
        """Called by nats-py one message at a time: waiting here for a slot holds back the
        requests behind this one in the subscription's buffer."""
        if self._slots.locked():
            RPC_WAITED.inc()
        await self._tasks.spawn_bounded(lambda: self._serve(msg), name="request",
                                        slots=self._slots)

    async def _serve(self, msg: Msg) -> None:
        op = msg.subject.rsplit(".", 1)[-1]
        RPC_INFLIGHT.inc()
        try:
            reply = await self._answer(op, msg)
        finally:
            RPC_INFLIGHT.dec()
        if not msg.reply:
            return
        data = _encoder.encode(reply)
        if len(data) > self._nc.max_payload:
            log.error("rpc_reply_too_large", op=op, size=len(data))
            data = _encoder.encode(Failed(code=ErrorCode.TOO_LARGE,
                                          message="reply too large; ask for a smaller page"))
        try:
            await self._nc.publish(msg.reply, data)
        except Exception as exc:  # the requester times out and retries
            log.warning("rpc_reply_failed", op=op, error=repr(exc))

    async def _answer(self, op: str, msg: Msg) -> Ok[Any] | Failed:
        try:
            handler = self._handlers.get(op)
            if handler is None:
                raise ProtocolError(ErrorCode.NOT_FOUND, f"unknown operation {op!r}")
            try:
                request = self._decoders[op].decode(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise ProtocolError(ErrorCode.INVALID, str(exc)) from None
            reply: Ok[Any] | Failed = Ok(await handler(request))
            RPC_SERVED.labels(op, "ok").inc()
        except ProtocolError as exc:
            RPC_SERVED.labels(op, exc.code).inc()
            reply = Failed(code=exc.code, message=exc.message)
        except Exception as exc:
            if not is_transient(exc):
                RPC_SERVED.labels(op, "internal").inc()
                return internal_failure("rpc_failed", op=op)
            # the store or NATS is away, not the request's fault: the caller may retry
            RPC_SERVED.labels(op, ErrorCode.UNAVAILABLE).inc()
            log.warning("rpc_unavailable", op=op, error=repr(exc))
            reply = Failed(code=ErrorCode.UNAVAILABLE, message="storage unavailable; retry")
        return reply
