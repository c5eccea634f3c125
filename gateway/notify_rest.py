"""``POST /v1/notifications``: internal services send a batch of notifications with the
service credential (``Authorization: Bearer <COURIER_AUTH_SERVICE_SECRET>``). The same
``NotifyRequest`` as on the NATS subject ``notify.send``; 200 with one result per item."""

from aiohttp import web

from gateway.credentials import read_json, require_secret
from gateway.notifications import Notifier
from gateway.rest import json_response
from runtime.config import AuthConfig, NotifyConfig
from schemas.notifications import NotifyRequest


class NotifyApi:
    """The service-facing notification route."""

    def __init__(self, notifier: Notifier, auth: AuthConfig, config: NotifyConfig) -> None:
        self._notifier = notifier
        self._secret = auth.service_secret
        self._limit = config.max_request_bytes

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/notifications", self.send)]

    async def send(self, request: web.Request) -> web.Response:
        require_secret(request, self._secret, "COURIER_AUTH_SERVICE_SECRET")
        body = await read_json(request, NotifyRequest, self._limit)
        return json_response(await self._notifier.send(body))
