"""JSON responses of the REST endpoints (errors are problems, ``gateway.http.problems``)."""

import msgspec
from aiohttp import web

_encoder = msgspec.json.Encoder()


def json_response(value: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=_encoder.encode(value),
                        content_type="application/json")
