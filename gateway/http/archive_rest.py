"""``POST /v1/admin/archive`` (admin secret): run the archive now. The body is the
``archive.run`` request (``schemas.archive``), forwarded to the archive workers over NATS; the
reply is the run's ``ArchiveReport``. A run that outlasts ``RUN_TIMEOUT_S`` goes on in the
worker and answers 503 here (its progress is in the worker's log and metrics)."""

from typing import Final

import msgspec
from aiohttp import web
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from gateway.http.responses import json_response
from gateway.http.routing import Admin
from schemas.archive import ARCHIVE_RUN, ArchiveReport, ArchiveRunRequest
from schemas.errors import ErrorCode, ProtocolError
from schemas.rpc import Failed, Ok

#: Longest the route waits for the run's report.
RUN_TIMEOUT_S: Final = 60.0
_reply: Final = msgspec.json.Decoder(Ok[ArchiveReport] | Failed)


class ArchiveApi:
    """Forwards on-request archive runs to ``archive.run``."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc

    async def run(self, request: web.Request, admin: Admin,
                  body: ArchiveRunRequest) -> web.Response:
        try:
            reply = await self._nc.request(ARCHIVE_RUN, msgspec.json.encode(body),
                                           timeout=RUN_TIMEOUT_S)
        except NoRespondersError:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "no archive worker is running") from None
        except NatsTimeoutError:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "the run goes on past the wait; see "
                                "the archive worker's log and metrics") from None
        try:
            decoded = _reply.decode(reply.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"unreadable archive reply: {exc}") from None
        if isinstance(decoded, Failed):
            raise ProtocolError(ErrorCode(decoded.code), decoded.message)
        return json_response(decoded.value)
