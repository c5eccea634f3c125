"""REST API handlers: parse, authenticate, call one function, encode. Errors are problems."""

import re
import secrets
from collections.abc import Callable
from typing import TypeVar

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.auth import Identity, TokenIssuer, TokenVerifier
from gateway.credentials import bearer
from gateway.limits import Limits
from gateway.messaging import Messaging
from gateway.params import int_query, optional_int_query
from gateway.sockets import DeviceHub
from runtime.rpc import RpcClient
from schemas import rpc
from schemas.codec import decode_document
from schemas.errors import ErrorCode, ProtocolError
from schemas.ids import ID_PATTERN
from schemas.rest import DevDeviceRequest, DevDeviceResponse, Health

_encoder = msgspec.json.Encoder()
_ID = re.compile(ID_PATTERN)
MAX_PAGE = 200
T = TypeVar("T")


def json_response(value: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=_encoder.encode(value),
                        content_type="application/json")


class RestApi:
    """The gateway's HTTP routes besides the WebSocket."""

    def __init__(self, gateway_id: str, verifier: TokenVerifier, issuer: TokenIssuer | None,
                 messaging: Messaging, rpc_client: RpcClient, hub: DeviceHub,
                 app_id: str, nats_connected: Callable[[], bool], limits: Limits) -> None:
        self._gateway_id = gateway_id
        self._verifier = verifier
        self._issuer = issuer
        self._messaging = messaging
        self._rpc = rpc_client
        self._hub = hub
        self._app_id = app_id
        self._nats_connected = nats_connected
        self._limits = limits

    def routes(self) -> list[web.RouteDef]:
        routes = [
            web.get("/healthz", self.healthz),
            web.get("/metrics", self.metrics),
            web.get("/v1/conversations", self.conversations),
            web.get("/v1/conversations/{conversation}/messages", self.history),
            web.get("/v1/messages/{message_id}", self.message),
        ]
        if self._issuer is not None:
            routes.append(web.post("/v1/dev/devices", self.dev_register))
        return routes

    async def healthz(self, request: web.Request) -> web.Response:
        connected = self._nats_connected()
        body = Health(status="ok" if connected else "degraded", gateway=self._gateway_id,
                      nats=connected, connections=len(self._hub))
        return json_response(body, 200 if connected else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def dev_register(self, request: web.Request) -> web.Response:
        assert self._issuer is not None
        self._limits.check_registration(request)
        body = decode_document(await request.read(), DevDeviceRequest)
        device = body.device or f"dev-{secrets.token_hex(6)}"
        token, expires_at = self._issuer.issue(body.user, device, self._app_id)
        identity = self._verifier.verify(token)
        await self._messaging.register(identity)
        return json_response(DevDeviceResponse(user=body.user, device=device, app=self._app_id,
                                               token=token, expires_at=expires_at), 201)

    async def conversations(self, request: web.Request) -> web.Response:
        identity = self._identity(request)
        limit = int_query(request, "limit", 50, 1, MAX_PAGE)
        reply = await self._rpc.call("conversations", rpc.ConversationsRequest(
            app=identity.app, user=identity.user, device=identity.device, limit=limit,
            barrier=await self._messaging.stream_position()), rpc.Conversations)
        return json_response(reply)

    async def history(self, request: web.Request) -> web.Response:
        identity = self._identity(request)
        conversation = request.match_info["conversation"]
        limit = int_query(request, "limit", 50, 1, MAX_PAGE)
        before = request.query.get("before")
        after = request.query.get("after")
        if before is not None and after is not None:
            raise ProtocolError(ErrorCode.INVALID, "give 'before' or 'after', not both")
        direction = "forward" if after is not None else "backward"
        cursor = optional_int_query(request, "after" if after is not None else "before", 0)
        reply = await self._rpc.call("history", rpc.HistoryRequest(
            app=identity.app, user=identity.user, device=identity.device, conversation=conversation,
            direction=direction, seq=cursor, limit=limit,
            barrier=await self._messaging.stream_position()), rpc.HistoryPage)
        return json_response(reply)

    async def message(self, request: web.Request) -> web.Response:
        identity = self._identity(request)
        message_id = request.match_info["message_id"]
        if not _ID.fullmatch(message_id):
            raise ProtocolError(ErrorCode.INVALID, f"message id {message_id!r} is not valid")
        reply = await self._rpc.call("message", rpc.MessageRequest(
            app=identity.app, user=identity.user, device=identity.device, message_id=message_id,
            barrier=await self._messaging.stream_position()), rpc.HistoryItem)
        return json_response(reply)

    def _identity(self, request: web.Request) -> Identity:
        return self._verifier.verify(bearer(request))
