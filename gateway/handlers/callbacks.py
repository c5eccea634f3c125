"""``callback`` frames: publish the payload to its system handler's subject, with the sender's
identity from the token, and answer ``callback_accepted`` once JetStream stored it."""

import secrets
import time

import msgspec
import structlog
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from prometheus_client import Counter

from gateway.auth import Identity
from runtime.config import CallbacksConfig
from schemas.callbacks import CALLBACKS_STREAM, CallbackEnvelope, callback_subject
from schemas.errors import ErrorCode, ProtocolError
from schemas.frames import Callback, CallbackAccepted

log = structlog.get_logger(__name__)

CALLBACKS = Counter("courier_gateway_callbacks_total", "Callbacks published", ["handler"])
_encoder = msgspec.json.Encoder()


class CallbackRelay:
    """Publishes callbacks of the declared handlers."""

    def __init__(self, js: JetStreamContext, config: CallbacksConfig, gateway_id: str) -> None:
        self._js = js
        self._handlers = frozenset(config.handlers)
        self._max_body = config.max_body_bytes
        self._gateway_id = gateway_id

    async def publish(self, identity: Identity, frame: Callback) -> CallbackAccepted:
        if frame.handler not in self._handlers:
            raise ProtocolError(ErrorCode.UNKNOWN_RECIPIENT,
                                f"no system handler {frame.handler!r}")
        if len(frame.body) > self._max_body:
            raise ProtocolError(ErrorCode.TOO_LARGE,
                                f"callback body over {self._max_body} bytes")
        envelope = CallbackEnvelope(
            id="cb" + secrets.token_hex(12), handler=frame.handler, app=identity.app,
            user=identity.user, device=identity.device, ts=int(time.time() * 1000),
            body=frame.body, gateway=self._gateway_id, request_id=frame.id)
        try:
            await self._js.publish(callback_subject(frame.handler), _encoder.encode(envelope),
                                   stream=CALLBACKS_STREAM, timeout=5.0)
        except NatsError as exc:
            log.warning("callback_publish_failed", handler=frame.handler, error=repr(exc))
            raise ProtocolError(ErrorCode.UNAVAILABLE, "callback not stored; retry") from None
        CALLBACKS.labels(frame.handler).inc()
        return CallbackAccepted(handler=frame.handler, callback_id=envelope.id, id=frame.id)
