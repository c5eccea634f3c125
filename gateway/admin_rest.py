"""The admin API (``Authorization: Bearer <COURIER_AUTH_ADMIN_SECRET>``):
``POST /v1/admin/control`` applies a control action, ``GET /v1/admin/control`` lists what is
disabled, ``GET /v1/admin/audit?after=S&limit=N`` pages the audit trail."""

from aiohttp import web

from control.admin import ControlAdmin
from gateway.credentials import read_json, require_secret
from gateway.params import int_query
from gateway.rest import json_response
from runtime.config import AuthConfig
from schemas.control import ControlList, ControlRequest

MAX_BODY = 16 * 1024
MAX_AUDIT_PAGE = 500
SETTING = "COURIER_AUTH_ADMIN_SECRET"


class AdminApi:
    """Thin handlers over ``ControlAdmin``."""

    def __init__(self, admin: ControlAdmin, auth: AuthConfig) -> None:
        self._admin = admin
        self._secret = auth.admin_secret

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/admin/control", self.apply),
                web.get("/v1/admin/control", self.disabled),
                web.get("/v1/admin/audit", self.audit)]

    async def apply(self, request: web.Request) -> web.Response:
        require_secret(request, self._secret, SETTING)
        body = await read_json(request, ControlRequest, MAX_BODY)
        return json_response(await self._admin.apply(body, via="rest"))

    async def disabled(self, request: web.Request) -> web.Response:
        require_secret(request, self._secret, SETTING)
        return json_response(ControlList(disabled=self._admin.disabled()))

    async def audit(self, request: web.Request) -> web.Response:
        require_secret(request, self._secret, SETTING)
        after = int_query(request, "after", 0, 0, None)
        limit = int_query(request, "limit", 100, 1, MAX_AUDIT_PAGE)
        return json_response(await self._admin.audit(after, limit))
