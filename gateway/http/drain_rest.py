"""``POST /v1/admin/gateways/{gateway}/drain`` (admin secret): drain a gateway without stopping
it, on any gateway: relayed on ``gateway.drain.<gateway>`` (``gateway.nats_api.drain_subject``).
404 when no gateway of that id runs, 409 when it drains already."""

from typing import Final

import msgspec
from aiohttp import web
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from gateway.http.responses import json_response
from gateway.http.routing import Admin, IdParam
from schemas.errors import ErrorCode, ProtocolError
from schemas.presence import DrainStarted, gateway_drain
from schemas.rpc import Failed, Ok

#: How long the route waits for the gateway's answer (it answers once the drain started).
REQUEST_TIMEOUT_S: Final = 5.0
GATEWAY: Final = IdParam("gateway", "The gateway's id (`gateway` of its welcome frames and "
                         "health)", where="path", label="gateway")
_reply: Final = msgspec.json.Decoder(Ok[DrainStarted] | Failed)


class DrainApi:
    """Relays administrators' drains to the gateway named."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc

    async def drain(self, request: web.Request, admin: Admin) -> web.Response:
        gateway = GATEWAY.value(request)
        try:
            reply = await self._nc.request(gateway_drain(gateway), b"",
                                           timeout=REQUEST_TIMEOUT_S)
        except NoRespondersError:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no gateway {gateway!r} runs") from None
        except NatsTimeoutError:
            raise ProtocolError(ErrorCode.UNAVAILABLE,
                                f"gateway {gateway!r} did not answer") from None
        try:
            decoded = _reply.decode(reply.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"unreadable drain reply: {exc}") from None
        if isinstance(decoded, Failed):
            raise ProtocolError(ErrorCode(decoded.code), decoded.message)
        return json_response(decoded.value)
