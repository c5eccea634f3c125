"""``/v1/devices/me/push``: a device registers, reads and removes its push token.

Authenticated with the device's own token; the registration is keyed by the device id from
the token. ``PUT`` again to rotate the token (or to re-enable one a provider rejected).
Registrations live in the KV bucket ``courier_push_tokens`` (see ``push_worker.tokens`` for
why there).
"""

import time

import msgspec
from aiohttp import web
from nats.errors import Error as NatsError
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from gateway.auth import Identity, TokenVerifier
from gateway.control import ControlGuard
from gateway.credentials import bearer, read_json
from gateway.limits import Limits
from gateway.rest import json_response
from schemas.errors import ErrorCode, ProtocolError
from schemas.push import PushRegistration, PushRegistrationRequest, registration_key

MAX_BODY = 16 * 1024
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(PushRegistration)


class PushRegistrationApi:
    """The three routes of a device's push registration."""

    def __init__(self, verifier: TokenVerifier, tokens: KeyValue, guard: ControlGuard,
                 limits: Limits) -> None:
        self._verifier = verifier
        self._tokens = tokens
        self._guard = guard
        self._limits = limits

    def routes(self) -> list[web.RouteDef]:
        return [web.put("/v1/devices/me/push", self.put),
                web.get("/v1/devices/me/push", self.get),
                web.delete("/v1/devices/me/push", self.delete)]

    async def put(self, request: web.Request) -> web.Response:
        identity = self._identity(request)
        self._guard.check_connect(identity)
        self._limits.check_write(identity)
        body = await read_json(request, PushRegistrationRequest, MAX_BODY)
        registration = PushRegistration(user=identity.user, device=identity.device,
                                        app=identity.app, platform=body.platform,
                                        token=body.token, updated_at=int(time.time() * 1000))
        try:
            await self._tokens.put(registration_key(identity.device),
                                   _encoder.encode(registration))
        except NatsError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"not registered: {exc!r}") from None
        return json_response(registration)

    async def get(self, request: web.Request) -> web.Response:
        identity = self._identity(request)
        try:
            entry = await self._tokens.get(registration_key(identity.device))
        except KeyNotFoundError:
            raise ProtocolError(ErrorCode.NOT_FOUND,
                                "this device has no push registration") from None
        except NatsError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"registry unavailable: {exc!r}") from None
        if not entry.value:
            raise ProtocolError(ErrorCode.NOT_FOUND, "this device has no push registration")
        return json_response(_decoder.decode(entry.value))

    async def delete(self, request: web.Request) -> web.Response:
        identity = self._identity(request)
        self._limits.check_write(identity)
        try:
            await self._tokens.delete(registration_key(identity.device))
        except NatsError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"not removed: {exc!r}") from None
        return web.Response(status=204)

    def _identity(self, request: web.Request) -> Identity:
        return self._verifier.verify(bearer(request))
