"""``GET /v1/ws`` in the route table: the one route the HTTP transport hands to the WebSocket
transport as is. The composition root (``gateway.service``) gives it the socket server's
handler, so neither transport imports the other."""

from collections.abc import Awaitable, Callable

from aiohttp import web


class SocketEndpoint:
    """The WebSocket upgrade: authenticated, guarded and limited by the socket server itself
    (``gateway.ws.sockets.SocketServer.handle``), before it upgrades."""

    def __init__(self, serve: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
        self._serve = serve

    async def handle(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request)
