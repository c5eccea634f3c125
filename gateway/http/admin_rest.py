"""The admin API (``Authorization: Bearer <COURIER_AUTH_ADMIN_SECRET>``):
``POST /v1/admin/control`` applies a control action, ``GET /v1/admin/control`` lists what is
disabled, ``GET /v1/admin/audit?after=S&limit=N`` pages the audit trail, and
``/v1/admin/dead-letters`` lists (``?after=S&limit=N``), shows (``/{seq}``), replays
(``POST /{seq}/replay``) and deletes (``DELETE /{seq}``) dead letters."""

from typing import Final

from aiohttp import web

from control.admin import ControlAdmin
from control.dead_letters import DeadLetterAdmin
from gateway.http.responses import json_response
from gateway.http.routing import Admin, IntParam
from schemas import dead_letters as dl
from schemas.control import ControlList, ControlRequest

MAX_AUDIT_PAGE: Final = 500
AUDIT_AFTER: Final = IntParam("after", "Records after this position", default=0)
AUDIT_LIMIT: Final = IntParam("limit", f"Page size (1-{MAX_AUDIT_PAGE})", low=1,
                              high=MAX_AUDIT_PAGE, default=100)
DEAD_LETTERS_AFTER: Final = IntParam("after", "Dead letters after this position",
                                     default=0)
DEAD_LETTERS_LIMIT: Final = IntParam("limit", f"Page size (1-{dl.MAX_PAGE})", low=1,
                                     high=dl.MAX_PAGE, default=50)
SEQ: Final = IntParam("seq", "The dead letter's position in the DLQ stream", where="path",
                      low=1)


class AdminApi:
    """Thin handlers over ``ControlAdmin`` and ``DeadLetterAdmin``."""

    def __init__(self, admin: ControlAdmin, dead_letters: DeadLetterAdmin) -> None:
        self._admin = admin
        self._dead_letters = dead_letters

    async def apply(self, request: web.Request, admin: Admin,
                    body: ControlRequest) -> web.Response:
        return json_response(await self._admin.apply(body, via="rest"))

    async def disabled(self, request: web.Request, admin: Admin) -> web.Response:
        return json_response(ControlList(disabled=self._admin.disabled()))

    async def audit(self, request: web.Request, admin: Admin) -> web.Response:
        after = AUDIT_AFTER.value(request)
        limit = AUDIT_LIMIT.value(request)
        return json_response(await self._admin.audit(after, limit))

    async def dead_letter_page(self, request: web.Request, admin: Admin) -> web.Response:
        after = DEAD_LETTERS_AFTER.value(request)
        limit = DEAD_LETTERS_LIMIT.value(request)
        return json_response(await self._dead_letters.page(after, limit))

    async def dead_letter(self, request: web.Request, admin: Admin) -> web.Response:
        return json_response(await self._dead_letters.show(SEQ.value(request)))

    async def replay(self, request: web.Request, admin: Admin) -> web.Response:
        return json_response(await self._dead_letters.replay(SEQ.value(request)))

    async def delete_dead_letter(self, request: web.Request, admin: Admin) -> web.Response:
        await self._dead_letters.delete(SEQ.value(request))
        return web.Response(status=204)
