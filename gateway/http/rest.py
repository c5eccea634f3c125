"""REST handlers of conversations, history, messages, health and dev registration (routes in
``gateway.http.routes``, which authenticates and admits each request): parse, call one function,
encode. Errors are problems."""

import secrets
from collections.abc import Callable
from typing import Final, get_args

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.auth import Identity, TokenIssuer, TokenVerifier
from gateway.handlers.messaging import Messaging
from gateway.http.responses import json_response
from gateway.http.routing import IdParam, IntParam
from runtime.rpc import RpcClient
from schemas import rpc
from schemas.errors import ErrorCode, ProtocolError
from schemas.ids import ConversationId
from schemas.rest import DevDeviceRequest, DevDeviceResponse, Health

MAX_PAGE: Final = 200
LIMIT: Final = IntParam("limit", f"Page size (1-{MAX_PAGE})", low=1, high=MAX_PAGE, default=50)
BEFORE: Final = IntParam("before", "Page backwards from this seq (exclusive)")
AFTER: Final = IntParam("after", "Page forwards from this seq (exclusive)")
CONVERSATION: Final = IdParam("conversation", "d:<user>:<user>, g:<group> or n:<user>",
                              where="path", pattern=get_args(ConversationId)[1].pattern,
                              label="conversation")
MESSAGE_ID: Final = IdParam("message_id", "The message's server id", where="path",
                            label="message id")


class RestApi:
    """The gateway's HTTP routes besides the WebSocket."""

    def __init__(self, gateway_id: str, verifier: TokenVerifier, issuer: TokenIssuer | None,
                 messaging: Messaging, rpc_client: RpcClient, connections: Callable[[], int],
                 app_id: str, nats_connected: Callable[[], bool]) -> None:
        self._gateway_id = gateway_id
        self._verifier = verifier
        self._issuer = issuer
        self._messaging = messaging
        self._rpc = rpc_client
        #: How many sockets this gateway holds (``healthz``).
        self._connections = connections
        self._app_id = app_id
        self._nats_connected = nats_connected

    async def healthz(self, request: web.Request) -> web.Response:
        connected = self._nats_connected()
        body = Health(status="ok" if connected else "degraded", gateway=self._gateway_id,
                      nats=connected, connections=self._connections())
        return json_response(body, 200 if connected else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def dev_register(self, request: web.Request, body: DevDeviceRequest) -> web.Response:
        if self._issuer is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "device registration is off here "
                                "(COURIER_AUTH_DEV_REGISTRATION)")
        device = body.device or f"dev-{secrets.token_hex(6)}"
        token, expires_at = self._issuer.issue(body.user, device, self._app_id)
        identity = self._verifier.verify(token)
        await self._messaging.register(identity)
        return json_response(DevDeviceResponse(user=body.user, device=device, app=self._app_id,
                                               token=token, expires_at=expires_at), 201)

    async def conversations(self, request: web.Request, identity: Identity) -> web.Response:
        limit = LIMIT.value(request)
        reply = await self._rpc.call("conversations", rpc.ConversationsRequest(
            app=identity.app, user=identity.user, device=identity.device, limit=limit,
            barrier=await self._messaging.stream_position()), rpc.Conversations)
        return json_response(reply)

    async def history(self, request: web.Request, identity: Identity) -> web.Response:
        conversation = CONVERSATION.value(request)
        limit = LIMIT.value(request)
        before = BEFORE.optional(request)
        after = AFTER.optional(request)
        if before is not None and after is not None:
            raise ProtocolError(ErrorCode.INVALID, "give 'before' or 'after', not both")
        direction = "forward" if after is not None else "backward"
        cursor = after if after is not None else before
        reply = await self._rpc.call("history", rpc.HistoryRequest(
            app=identity.app, user=identity.user, device=identity.device, conversation=conversation,
            direction=direction, seq=cursor, limit=limit,
            barrier=await self._messaging.stream_position()), rpc.HistoryPage)
        return json_response(reply)

    async def message(self, request: web.Request, identity: Identity) -> web.Response:
        message_id = MESSAGE_ID.value(request)
        reply = await self._rpc.call("message", rpc.MessageRequest(
            app=identity.app, user=identity.user, device=identity.device, message_id=message_id,
            barrier=await self._messaging.stream_position()), rpc.HistoryItem)
        return json_response(reply)
