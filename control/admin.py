"""Applies control actions: audit first, then the state change; reads the audit trail.

Write-ahead audit: a validated, authenticated action is recorded on ``audit.control`` before
its key in ``courier_control`` is written or deleted, so no state change exists without its
record. If the state write then fails, the caller gets ``unavailable`` and retries; the retry
is recorded again (with ``changed`` computed afresh). Two administrators changing the same
target at the same instant may both be recorded as ``changed``; the final state is the last
write, as the audit order shows. ``apply`` answers once this gateway's own view shows the
change (its sockets are being closed); other gateways and routers follow within a watcher
round trip.
"""

import time
from typing import Literal

import msgspec
import structlog
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, NoKeysError, NotFoundError
from nats.js.kv import KeyValue

from control.view import ControlView
from runtime.rpc import RpcClient
from schemas import rpc
from schemas.control import (
    AUDIT_CONTROL,
    AUDIT_STREAM,
    AuditEntry,
    AuditPage,
    AuditRecord,
    ControlRequest,
    ControlResult,
    ControlState,
    ControlTarget,
    control_key,
    legacy_key,
)
from schemas.errors import ErrorCode, ProtocolError

log = structlog.get_logger(__name__)

#: How long ``apply`` waits for this gateway's own view to show the change (then it answers
#: anyway; every view converges through its watcher).
REFLECT_TIMEOUT_S = 2.0
_encoder = msgspec.json.Encoder()
_record_decoder = msgspec.json.Decoder(AuditRecord)
_state_decoder = msgspec.json.Decoder(ControlState)


def now_ms() -> int:
    return int(time.time() * 1000)


class ControlAdmin:
    """The one place that changes control state."""

    def __init__(self, js: JetStreamContext, kv: KeyValue, rpc_client: RpcClient,
                 view: ControlView, *, default_app: str, gateway_id: str) -> None:
        self._js = js
        self._kv = kv
        self._rpc = rpc_client
        self._view = view
        self._default_app = default_app
        self._gateway_id = gateway_id

    async def apply(self, request: ControlRequest,
                    via: Literal["rest", "nats"]) -> ControlResult:
        """Disable or enable ``request.target``; raises ``ProtocolError`` for unknown targets
        (``unknown_recipient``), bad requests (``invalid``) and NATS trouble (``unavailable``)."""
        target = await self._checked_target(request.target)
        assert target.app is not None
        key = control_key(target.kind, target.id, target.app)
        ts = now_ms()
        try:
            disabled = await self._is_disabled(key)
            changed = disabled != (request.action == "disable")
            record = AuditRecord(action=request.action, target=target, actor=request.actor,
                                 via=via, ts=ts, changed=changed,
                                 gateway=self._gateway_id, reason=request.reason)
            ack = await self._js.publish(AUDIT_CONTROL, _encoder.encode(record),
                                         stream=AUDIT_STREAM, timeout=5.0)
            if changed and request.action == "disable":
                await self._kv.put(key, _encoder.encode(ControlState(
                    kind=target.kind, id=target.id, app=target.app, disabled_at=ts,
                    by=request.actor, reason=request.reason)))
            elif changed:
                await self._kv.delete(key)
        except NatsError as exc:
            log.warning("control_apply_failed", key=key, error=repr(exc))
            raise ProtocolError(ErrorCode.UNAVAILABLE, "control state not written; retry") from None
        if not await self._view.reflects(key, request.action == "disable", REFLECT_TIMEOUT_S):
            log.warning("control_view_behind", key=key)
        log.info("control_applied", action=request.action, key=key, actor=request.actor, via=via,
                 changed=changed, audit_seq=ack.seq)
        return ControlResult(action=request.action, target=target, changed=changed,
                             audit_seq=int(ack.seq), ts=ts)

    def disabled(self) -> list[ControlState]:
        """Every disabled target, as this gateway's view knows it."""
        return self._view.states()

    async def audit(self, after: int, limit: int) -> AuditPage:
        """Up to ``limit`` audit records with a position above ``after``, oldest first."""
        entries: list[AuditEntry] = []
        seq = after + 1
        try:
            while len(entries) < limit:
                try:
                    raw = await self._js.get_msg(AUDIT_STREAM, seq=seq, subject=AUDIT_CONTROL,
                                                 next=True)
                except NotFoundError:
                    break
                if raw.seq is None or raw.data is None:
                    break
                entries.append(AuditEntry(seq=raw.seq, record=_record_decoder.decode(raw.data)))
                seq = raw.seq + 1
        except NatsError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"audit unavailable: {exc!r}") from None
        full = len(entries) == limit
        return AuditPage(entries=entries, next_after=entries[-1].seq if full else None)

    async def migrate(self) -> int:
        """Rewrite device and user keys of the form before keys carried the app
        (``device.<id>``) as the default app's (``device.<app>.<id>``), then delete them:
        what was disabled stays disabled. Idempotent, so every gateway may run it at start;
        returns how many keys it moved."""
        moved = 0
        try:
            keys = await self._kv.keys()
        except NoKeysError:
            return 0
        for key in keys:
            if not legacy_key(key):
                continue
            try:
                entry = await self._kv.get(key)
            except KeyNotFoundError:
                continue
            if entry.value:
                state = _state_decoder.decode(entry.value)
                state.app = self._default_app
                await self._kv.put(control_key(state.kind, state.id, self._default_app),
                                   _encoder.encode(state))
            await self._kv.delete(key)
            moved += 1
        if moved:
            log.info("control_keys_migrated", keys=moved, app=self._default_app)
        return moved

    async def _checked_target(self, target: ControlTarget) -> ControlTarget:
        """The target with its app filled in, once it is known to exist in that app."""
        app = target.app or self._default_app
        if target.kind == "device":
            owner = await self._rpc.call("device_owner",
                                         rpc.DeviceOwner(app=app, device=target.id), rpc.Owner)
            if owner.user is None:
                raise ProtocolError(ErrorCode.UNKNOWN_RECIPIENT,
                                    f"no device {target.id!r} in app {app!r}")
        elif target.kind == "user":
            user = await self._rpc.call("get_user", rpc.GetUser(app=app, user=target.id),
                                        rpc.UserDevices)
            if not user.exists:
                raise ProtocolError(ErrorCode.UNKNOWN_RECIPIENT,
                                    f"no user {target.id!r} in app {app!r}")
        return ControlTarget(kind=target.kind, id=target.id, app=app)

    async def _is_disabled(self, key: str) -> bool:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return False
        return bool(entry.value) and entry.operation is None
