"""``POST /v1/notifications``: internal services send a batch of notifications with the
service credential (``Authorization: Bearer <COURIER_AUTH_SERVICE_SECRET>``). The same
``NotifyRequest`` as on the NATS subject ``notify.send``; 200 with one result per item."""

from aiohttp import web

from gateway.handlers.notifications import Notifier
from gateway.http.responses import json_response
from gateway.http.routing import Service
from schemas.notifications import NotifyRequest


class NotifyApi:
    """The service-facing notification route."""

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier

    async def send(self, request: web.Request, service: Service,
                   body: NotifyRequest) -> web.Response:
        return json_response(await self._notifier.send(body))
