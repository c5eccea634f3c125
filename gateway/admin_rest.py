"""The admin API (``Authorization: Bearer <COURIER_AUTH_ADMIN_SECRET>``):
``POST /v1/admin/control`` applies a control action, ``GET /v1/admin/control`` lists what is
disabled, ``GET /v1/admin/audit?after=S&limit=N`` pages the audit trail, and
``/v1/admin/dead-letters`` lists (``?after=S&limit=N``), shows (``/{seq}``), replays
(``POST /{seq}/replay``) and deletes (``DELETE /{seq}``) dead letters."""

from aiohttp import web

from control.admin import ControlAdmin
from control.dead_letters import DeadLetterAdmin
from gateway.credentials import read_json, require_secret
from gateway.params import int_path, int_query
from gateway.rest import json_response
from runtime.config import AuthConfig
from schemas import dead_letters as dl
from schemas.control import ControlList, ControlRequest

MAX_BODY = 16 * 1024
MAX_AUDIT_PAGE = 500
SETTING = "COURIER_AUTH_ADMIN_SECRET"
DEAD_LETTERS = "/v1/admin/dead-letters"


class AdminApi:
    """Thin handlers over ``ControlAdmin`` and ``DeadLetterAdmin``."""

    def __init__(self, admin: ControlAdmin, dead_letters: DeadLetterAdmin,
                 auth: AuthConfig) -> None:
        self._admin = admin
        self._dead_letters = dead_letters
        self._secret = auth.admin_secret

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/admin/control", self.apply),
                web.get("/v1/admin/control", self.disabled),
                web.get("/v1/admin/audit", self.audit),
                web.get(DEAD_LETTERS, self.dead_letter_page),
                web.get(DEAD_LETTERS + "/{seq}", self.dead_letter),
                web.post(DEAD_LETTERS + "/{seq}/replay", self.replay),
                web.delete(DEAD_LETTERS + "/{seq}", self.delete_dead_letter)]

    async def apply(self, request: web.Request) -> web.Response:
        require_secret(request, self._secret, SETTING)
        body = await read_json(request, ControlRequest, MAX_BODY)
        return json_response(await self._admin.apply(body, via="rest"))

    async def disabled(self, request: web.Request) -> web.Response:
        require_secret(request, self._secret, SETTING)
        return json_response(ControlList(disabled=self._admin.disabled()))

    async def audit(self, request: web.Request) -> web.Response:
        require_secret(request, self._secret, SETTING)
        after = int_query(request, "after", 0, 0)
        limit = int_query(request, "limit", 100, 1, MAX_AUDIT_PAGE)
        return json_response(await self._admin.audit(after, limit))

    async def dead_letter_page(self, request: web.Request) -> web.Response:
        require_secret(request, self._secret, SETTING)
        after = int_query(request, "after", 0, 0)
        limit = int_query(request, "limit", 50, 1, dl.MAX_PAGE)
        return json_response(await self._dead_letters.page(after, limit))

    async def dead_letter(self, request: web.Request) -> web.Response:
        require_secret(request, self._secret, SETTING)
        return json_response(await self._dead_letters.show(int_path(request, "seq", 1)))

    async def replay(self, request: web.Request) -> web.Response:
        require_secret(request, self._secret, SETTING)
        return json_response(await self._dead_letters.replay(int_path(request, "seq", 1)))

    async def delete_dead_letter(self, request: web.Request) -> web.Response:
        require_secret(request, self._secret, SETTING)
        await self._dead_letters.delete(int_path(request, "seq", 1))
        return web.Response(status=204)
