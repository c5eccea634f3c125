"""The OpenAPI 3.1 document of the REST API, generated from the route table
(``gateway.http.routes.ROUTES``) and the typed bodies in ``schemas``: nothing here lists a route."""

from collections.abc import Sequence
from typing import Any, Final

import msgspec
from aiohttp import web

from gateway.http.routing import Credential, Route
from schemas.rest import Problem
from schemas.version import PROTOCOL_VERSION

_REF: Final = "#/components/schemas/{name}"
SECURITY_SCHEMES: Final[dict[str, Any]] = {
    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
               "description": "A device token (JWT): `sub` user, `dev` device, `app` app"},
    "service": {"type": "http", "scheme": "bearer",
                "description": "COURIER_AUTH_SERVICE_SECRET"},
    "admin": {"type": "http", "scheme": "bearer", "description": "COURIER_AUTH_ADMIN_SECRET"},
}
_SCHEME: Final[dict[Credential, str]] = {"device": "bearer", "service": "service",
                                         "admin": "admin"}
#: What each problem status means across the API (docs/protocol.md, "Error codes").
PROBLEMS: Final[dict[int, str]] = {
    400: "`bad_frame`: the body is not JSON or nests too deep (`unsupported_version` on the "
         "upgrade)",
    401: "`unauthorized`: missing, malformed, forged or expired credential",
    403: "`disabled` (the device, its user or the route's module is disabled by an "
         "administrator), `not_member` or `forbidden`",
    404: "`not_found` or `unknown_recipient`",
    409: "`conflict` with the current state",
    413: "`too_large`: the body is over the route's limit",
    422: "`invalid`: a parameter or body field missing, unknown, of the wrong type or out of "
         "range",
    429: "`rate_limited`: retry after `Retry-After` seconds (also `retry_after_s`)",
    503: "`unavailable`: a dependency did not answer in time; retry",
}
_BUCKETS: Final[dict[str, str]] = {
    "read": "the user's REST read budget (`COURIER_LIMITS_USER_READS_*`)",
    "write": "the user's REST write budget (`COURIER_LIMITS_USER_WRITES_*`)",
    "group_create": "the user's write and group creation budgets "
                    "(`COURIER_LIMITS_USER_WRITES_*`, `COURIER_LIMITS_USER_GROUPS_*`)",
    "contact_request": "the user's write and contact request budgets "
                       "(`COURIER_LIMITS_USER_WRITES_*`, "
                       "`COURIER_LIMITS_USER_CONTACT_REQUESTS_*`)",
    "registration": "the source address's registration budget "
                    "(`COURIER_LIMITS_ADDRESS_REGISTRATIONS_*`)",
}


GATEWAY_INFO: Final = ("Courier REST API", "REST side of the Courier messaging backend. The "
                       "WebSocket protocol is described in docs/protocol.md.")


def openapi_document(routes: Sequence[Route],
                     info: tuple[str, str] = GATEWAY_INFO) -> dict[str, Any]:
    """The document of ``routes``: one operation per route, the JSON Schema of every body;
    ``info`` is its title and description."""
    types = [Problem, *{t: None for route in routes for t in _types(route)}]
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    schema_of = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schema_of)
    return {
        "openapi": "3.1.0",
        "info": {"title": info[0], "version": str(PROTOCOL_VERSION), "description": info[1]},
        "components": {"schemas": components, "securitySchemes": SECURITY_SCHEMES},
        "paths": paths,
    }


class ApiDocs:
    """Serves ``GET /openapi.json``: the document, encoded once."""

    def __init__(self, routes: Sequence[Route], info: tuple[str, str] = GATEWAY_INFO) -> None:
        self._body = msgspec.json.encode(openapi_document(routes, info))

    async def document(self, request: web.Request) -> web.Response:
        return web.Response(body=self._body, content_type="application/json")


def _types(route: Route) -> list[Any]:
    return [t for t in (route.body, *(reply.body for reply in route.replies)) if t is not None]


def _operation(route: Route, schema_of: dict[Any, Any]) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": route.operation_id, "summary": route.summary}
    notes = [route.description] if route.description else []
    if route.guarded:
        notes.append(f"Refused with 403 `disabled` while the device, its user or the module "
                     f"`{route.module}` is disabled.")
    if route.bucket is not None:
        notes.append(f"Spends {_BUCKETS[route.bucket]}; 429 `rate_limited` when empty.")
    if notes:
        operation["description"] = " ".join(notes)
    if route.credential in _SCHEME:
        operation["security"] = [{_SCHEME[route.credential]: []}]
    if route.params:
        operation["parameters"] = [param.openapi() for param in route.params]
    if route.body is not None:
        operation["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": schema_of[route.body]}}}
    responses: dict[str, Any] = {}
    for reply in route.replies:
        responses[str(reply.status)] = {"description": reply.description}
        if reply.body is not None:
            responses[str(reply.status)]["content"] = {
                reply.media: {"schema": schema_of[reply.body]}}
    for status in route.statuses():
        responses[str(status)] = _problem(status, schema_of[Problem])
    operation["responses"] = responses
    return operation


def _problem(status: int, schema: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = {"description": PROBLEMS[status],
                                "content": {"application/problem+json": {"schema": schema}}}
    if status == 429:
        response["headers"] = {"Retry-After": {
            "description": "Seconds to wait, rounded up", "required": True,
            "schema": {"type": "integer", "minimum": 1}}}
    return response
