"""``/v1/devices/me/push``: a device registers, reads and removes its push token, and trades
the id of a wake-up it received for what the wake-up stands for.

Authenticated with the device's own token; the registration is keyed by the device id from
the token. ``PUT`` again to rotate the token (or to re-enable one a provider rejected).
Registrations live in the KV bucket ``courier_push_tokens`` (see ``push_worker.tokens`` for
why there), wake-ups in ``courier_push_wakeups`` (``push_worker.wakeups``). A wake-up is read
only by the device it woke; for any other caller, and once it expired, it does not exist (404,
the same answer as for an unknown id).
"""

import time
from typing import Final

import msgspec
from aiohttp import web
from nats.errors import Error as NatsError
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from prometheus_client import Counter

from gateway.auth import Identity
from gateway.http.responses import json_response
from gateway.http.routing import IdParam
from schemas.errors import ErrorCode, ProtocolError
from schemas.push import (
    WAKEUP_ID_PATTERN,
    PushRegistration,
    PushRegistrationRequest,
    WakeUpRecord,
    registration_key,
)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(PushRegistration)
_record_decoder = msgspec.json.Decoder(WakeUpRecord)
WAKEUP: Final = IdParam("wakeup", "The `id` of the wake-up", where="path",
                        pattern=WAKEUP_ID_PATTERN, label="wake-up id")
WAKEUP_READS = Counter("courier_gateway_wakeup_reads_total",
                       "Wake-ups traded for their details", ["result"])


class PushRegistrationApi:
    """The routes of a device's push registration and wake-ups."""

    def __init__(self, tokens: KeyValue, wakeups: KeyValue) -> None:
        self._tokens = tokens
        self._wakeups = wakeups

    async def put(self, request: web.Request, identity: Identity,
                  body: PushRegistrationRequest) -> web.Response:
        registration = PushRegistration(user=identity.user, device=identity.device,
                                        app=identity.app, platform=body.platform,
                                        token=body.token, updated_at=int(time.time() * 1000))
        try:
            await self._tokens.put(registration_key(identity.app, identity.device),
                                   _encoder.encode(registration))
        except NatsError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"not registered: {exc!r}") from None
        return json_response(registration)

    async def get(self, request: web.Request, identity: Identity) -> web.Response:
        try:
            entry = await self._tokens.get(registration_key(identity.app, identity.device))
        except KeyNotFoundError:
            raise ProtocolError(ErrorCode.NOT_FOUND,
                                "this device has no push registration") from None
        except NatsError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"registry unavailable: {exc!r}") from None
        if not entry.value:
            raise ProtocolError(ErrorCode.NOT_FOUND, "this device has no push registration")
        return json_response(_decoder.decode(entry.value))

    async def delete(self, request: web.Request, identity: Identity) -> web.Response:
        try:
            await self._tokens.delete(registration_key(identity.app, identity.device))
        except NatsError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"not removed: {exc!r}") from None
        return web.Response(status=204)

    async def wakeup(self, request: web.Request, identity: Identity) -> web.Response:
        wakeup = WAKEUP.value(request)
        try:
            entry = await self._wakeups.get(wakeup)
        except KeyNotFoundError:
            entry = None
        except NatsError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"wake-ups unavailable: {exc!r}") from None
        record = _record_decoder.decode(entry.value) if entry and entry.value else None
        if (record is None or (record.app, record.user, record.device)
                != (identity.app, identity.user, identity.device)
                or record.details.expires_at <= int(time.time() * 1000)):
            WAKEUP_READS.labels("not_found").inc()
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no wake-up {wakeup!r} for this device")
        WAKEUP_READS.labels("found").inc()
        return json_response(record.details)
