"""Business notifications: validate a batch, resolve each item's recipients, publish one
envelope per recipient user into its notification conversation's partition
(subject ``msgs.<p>.notify``).

Each item is all-or-nothing: its recipients are resolved first (an unknown user, device, group
or an app without devices fails the item with ``unknown_recipient``), then its envelopes are
published; a publish failure fails the item with ``unavailable``, and sending the same batch
again is safe (message ids derive from the service, the item id and the user, and JetStream
drops duplicates). A user target reaches every device of the user; a device target only that
device (its payload is addressed to it); a group target every current member; an app target
every user with a device in the app, page by page through the device registry.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Final, TypeVar

import structlog
from nats.errors import Error as NatsError
from prometheus_client import Counter

from control.view import ControlView
from runtime.config import NotifyConfig
from runtime.partitions import PartitionStreams
from runtime.rpc import RpcClient
from schemas import groups, rpc
from schemas.envelopes import MessageEnvelope, encode_envelope
from schemas.errors import ErrorCode, ProtocolError
from schemas.frames import Destination, Sender
from schemas.ids import notification_conversation
from schemas.notifications import (
    AppUsers,
    AppUsersRequest,
    Notification,
    NotificationResult,
    NotifyRequest,
    NotifyResult,
    ToApp,
    ToDevice,
    ToGroup,
    ToUser,
    ToUsers,
    notification_message_id,
)
from schemas.subjects import NOTIFY

log = structlog.get_logger(__name__)

NOTIFICATIONS = Counter("courier_gateway_notifications_total", "Notification items",
                        ["result"])
ENVELOPES = Counter("courier_gateway_notification_envelopes_total",
                    "Notification envelopes published (one per recipient user)")
#: Concurrent publishes and lookups of one item.
PARALLEL: Final = 64

T = TypeVar("T")
Recipient = tuple[str, Destination, str | None]  # (user, destination, only this device)


class Notifier:
    """Turns ``NotifyRequest`` batches into stored notification envelopes."""

    def __init__(self, streams: PartitionStreams, rpc_client: RpcClient, control: ControlView,
                 config: NotifyConfig, *, default_app: str, gateway_id: str) -> None:
        self._streams = streams
        self._rpc = rpc_client
        self._control = control
        self._config = config
        self._default_app = default_app
        self._gateway_id = gateway_id

    async def send(self, request: NotifyRequest) -> NotifyResult:
        """Raises ``too_large``/``invalid`` for the batch as a whole; item failures are
        reported in the result."""
        items = request.notifications
        if len(items) > self._config.max_batch:
            raise ProtocolError(ErrorCode.TOO_LARGE,
                                f"{len(items)} notifications; at most {self._config.max_batch}")
        ids = [item.id for item in items]
        if len(set(ids)) != len(ids):
            raise ProtocolError(ErrorCode.INVALID, "notification ids repeat within the batch")
        results = [await self._one(request.service, item) for item in items]
        accepted = sum(1 for r in results if r.status == "accepted")
        return NotifyResult(accepted=accepted, failed=len(results) - accepted, results=results)

    async def _one(self, service: str, item: Notification) -> NotificationResult:
        try:
            result = await self._deliver(service, item)
        except ProtocolError as exc:
            NOTIFICATIONS.labels(exc.code).inc()
            return NotificationResult(id=item.id, status="failed", code=exc.code,
                                      message=exc.message)
        NOTIFICATIONS.labels("accepted").inc()
        return result

    async def _deliver(self, service: str, item: Notification) -> NotificationResult:
        if len(item.body) > self._config.max_body_bytes:
            raise ProtocolError(ErrorCode.TOO_LARGE,
                                f"body over {self._config.max_body_bytes} bytes")
        app = item.app or self._default_app
        if self._control.module_disabled(app, item.module):
            raise ProtocolError(ErrorCode.DISABLED, f"module {item.module!r} is disabled")
        ts = int(time.time() * 1000)
        if isinstance(item.to, ToApp):
            count = 0
            async for page in self._app_pages(app):
                await self._publish(service, item, app, ts, [
                    (user, Destination(kind="user", id=user), None) for user in page])
                count += len(page)
            if count == 0:
                raise ProtocolError(ErrorCode.UNKNOWN_RECIPIENT, f"app {app!r} has no devices")
            return NotificationResult(id=item.id, status="accepted", recipients=count)
        recipients = await self._resolve(app, item.to)
        message_ids = await self._publish(service, item, app, ts, recipients)
        return NotificationResult(id=item.id, status="accepted", recipients=len(recipients),
                                  message_ids=message_ids)

    async def _resolve(self, app: str,
                       to: ToUser | ToUsers | ToGroup | ToDevice) -> list[Recipient]:
        """The recipients of a notification, looked up in its app only."""
        if isinstance(to, ToDevice):
            owner = await self._rpc.call("device_owner", rpc.DeviceOwner(app=app, device=to.id),
                                         rpc.Owner)
            if owner.user is None:
                raise ProtocolError(ErrorCode.UNKNOWN_RECIPIENT, f"no device {to.id!r}")
            return [(owner.user, Destination(kind="device", id=to.id), to.id)]
        if isinstance(to, ToGroup):
            roster = await self._rpc.call("group_roster",
                                          groups.GroupRosterRequest(app=app, group=to.id),
                                          groups.GroupRoster)
            if not roster.exists or not roster.members:
                raise ProtocolError(ErrorCode.UNKNOWN_RECIPIENT, f"no group {to.id!r}")
            destination = Destination(kind="group", id=to.id)
            return [(user, destination, None) for user in sorted(roster.members)]
        users = [to.id] if isinstance(to, ToUser) else sorted(set(to.ids))
        known = await _bounded([partial(self._exists, app, user) for user in users])
        unknown = [user for user, exists in zip(users, known, strict=True) if not exists]
        if unknown:
            raise ProtocolError(ErrorCode.UNKNOWN_RECIPIENT,
                                f"no user {', '.join(repr(u) for u in unknown[:10])}")
        return [(user, Destination(kind="user", id=user), None) for user in users]

    async def _exists(self, app: str, user: str) -> bool:
        reply = await self._rpc.call("get_user", rpc.GetUser(app=app, user=user),
                                     rpc.UserDevices)
        return reply.exists

    async def _app_pages(self, app: str) -> AsyncIterator[list[str]]:
        after = ""
        while True:
            page = await self._rpc.call("app_users", AppUsersRequest(
                app=app, after=after, limit=self._config.broadcast_page), AppUsers)
            if page.users:
                yield page.users
                after = page.users[-1]
            if not page.more:
                return

    async def _publish(self, service: str, item: Notification, app: str, ts: int,
                       recipients: list[Recipient]) -> dict[str, str]:
        """One envelope per recipient; returns user -> message id."""
        envelopes = [self._envelope(service, item, app, ts, r) for r in recipients]
        try:
            await _bounded([partial(self._streams.publish,
                                    self._streams.of(e.app, e.conversation), NOTIFY,
                                    encode_envelope(e), msg_id=e.id) for e in envelopes])
        except NatsError as exc:
            log.warning("notification_publish_failed", id=item.id, error=repr(exc))
            raise ProtocolError(ErrorCode.UNAVAILABLE,
                                "notification not stored for every recipient; retry") from None
        ENVELOPES.inc(len(envelopes))
        return {user: e.id for (user, _, _), e in zip(recipients, envelopes, strict=True)}

    def _envelope(self, service: str, item: Notification, app: str, ts: int,
                  recipient: Recipient) -> MessageEnvelope:
        user, destination, device = recipient
        return MessageEnvelope(
            id=notification_message_id(app, service, item.id, user),
            kind="notification",
            app=app,
            module=item.module,
            sender=Sender(service=service),
            to=destination,
            conversation=notification_conversation(user),
            ts=ts,
            receipt=item.receipt,
            body=item.body if device is None else None,
            payloads={device: item.body} if device is not None else None,
            client_id=item.id,
            expires_at=ts + item.ttl * 1000 if item.ttl else None,
            gateway=self._gateway_id,
        )


async def _bounded(calls: list[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run ``calls``, at most ``PARALLEL`` at a time, results in order. A failure raises
    once its chunk has finished (nothing is left running)."""
    results: list[T] = []
    for start in range(0, len(calls), PARALLEL):
        outcomes = await asyncio.gather(*(call() for call in calls[start:start + PARALLEL]),
                                        return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            results.append(outcome)
    return results
