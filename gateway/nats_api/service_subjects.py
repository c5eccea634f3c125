"""The NATS side of the service API: ``notify.send`` and ``control.apply``.

Request/reply in queue groups (``notify``, ``control``), so any one gateway answers each
request. Requests are the JSON bodies of ``POST /v1/notifications`` and
``POST /v1/admin/control``; replies are JSON ``{"r": "ok", "value": ...}`` or
``{"r": "failed", "code": ..., "message": ...}``. Who may publish on these subjects is a
matter of NATS permissions (``schemas.nats_permissions``: ``service`` may publish
``notify.send``, ``admin`` ``control.apply``); the gateway trusts what arrives.
At most ``CONCURRENCY`` requests are served at once; the next waits for a free slot (see
``runtime.rpc``), and an unexpected failure answers ``internal`` with an error id only.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import msgspec
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import Counter

from control.admin import ControlAdmin
from gateway.handlers.notifications import Notifier
from runtime.config import NotifyConfig
from runtime.rpc import internal_failure
from runtime.tasks import TaskGroup
from schemas.codec import decode_document
from schemas.control import CONTROL_APPLY, CONTROL_QUEUE, ControlRequest
from schemas.errors import ErrorCode, ProtocolError
from schemas.notifications import NOTIFY_QUEUE, NOTIFY_SEND, NotifyRequest
from schemas.rpc import Failed, Ok

log = structlog.get_logger(__name__)

SERVED = Counter("courier_gateway_service_requests_total", "notify.send / control.apply served",
                 ["subject", "result"])
CONTROL_MAX_BYTES = 16 * 1024
#: Service requests one gateway serves at once (a broadcast holds its slot while it walks
#: the registry); more wait in the subscription's buffer.
CONCURRENCY: Final = 64
_encoder = msgspec.json.Encoder()
R = TypeVar("R", bound=msgspec.Struct)
Serve = Callable[[bytes], Awaitable[msgspec.Struct]]


class ServiceSubjects:
    """Serves the service subjects; one owned task per request, awaited on drain."""

    def __init__(self, nc: Client, notifier: Notifier, admin: ControlAdmin,
                 config: NotifyConfig) -> None:
        self._nc = nc
        self._notifier = notifier
        self._admin = admin
        self._max_request = config.max_request_bytes
        self._subscriptions: list[Subscription] = []
        self._tasks = TaskGroup("service-subjects")
        self._slots = asyncio.Semaphore(CONCURRENCY)

    async def start(self) -> None:
        for subject, queue, serve in ((NOTIFY_SEND, NOTIFY_QUEUE, self._notify),
                                      (CONTROL_APPLY, CONTROL_QUEUE, self._control)):
            self._subscriptions.append(await self._nc.subscribe(
                subject, queue=queue, cb=self._handler(subject, serve)))

    async def drain(self) -> None:
        """Stop taking requests; finish those in flight."""
        for subscription in self._subscriptions:
            await subscription.unsubscribe()
        self._subscriptions.clear()
        await self._tasks.drain()

    async def stop(self) -> None:
        await self._tasks.stop()

    async def _notify(self, data: bytes) -> msgspec.Struct:
        if len(data) > self._max_request:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"request over {self._max_request} bytes")
        return await self._notifier.send(decode_document(data, NotifyRequest))

    async def _control(self, data: bytes) -> msgspec.Struct:
        if len(data) > CONTROL_MAX_BYTES:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"request over {CONTROL_MAX_BYTES} bytes")
        return await self._admin.apply(decode_document(data, ControlRequest), via="nats")

    def _handler(self, subject: str, serve: Serve) -> Callable[[Msg], Awaitable[None]]:
        async def on_request(msg: Msg) -> None:
            await self._tasks.spawn_bounded(lambda: self._reply(subject, serve, msg),
                                            name=subject, slots=self._slots)

        return on_request

    async def _reply(self, subject: str, serve: Serve, msg: Msg) -> None:
        reply: Ok[Any] | Failed
        try:
            reply = Ok(await serve(msg.data))
            SERVED.labels(subject, "ok").inc()
        except ProtocolError as exc:
            SERVED.labels(subject, exc.code).inc()
            reply = Failed(code=exc.code, message=exc.message)
        except Exception:
            SERVED.labels(subject, "internal").inc()
            reply = internal_failure("service_request_failed", subject=subject)
        if msg.reply:
            await self._nc.publish(msg.reply, _encoder.encode(reply))
