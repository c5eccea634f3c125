"""OpenAPI paths of push registration, business notifications and the admin API (merged into
``gateway.openapi.openapi_document``)."""

from typing import Any, Final

from schemas.bounds import MAX_INT
from schemas.control import AuditPage, ControlList, ControlRequest, ControlResult
from schemas.dead_letters import MAX_PAGE, DeadLetterDetail, DeadLetterPage, ReplayResult
from schemas.notifications import NotifyRequest, NotifyResult
from schemas.push import (
    WAKEUP_ID_PATTERN,
    PushRegistration,
    PushRegistrationRequest,
    WakeUpDetails,
)

#: Body types whose JSON Schema goes into ``components``.
FEATURE_TYPES: Final[list[Any]] = [PushRegistrationRequest, PushRegistration, WakeUpDetails,
                                   NotifyRequest,
                                   NotifyResult, ControlRequest, ControlResult, ControlList,
                                   AuditPage, DeadLetterPage, DeadLetterDetail, ReplayResult]

FEATURE_SECURITY: Final[dict[str, Any]] = {
    "service": {"type": "http", "scheme": "bearer",
                "description": "COURIER_AUTH_SERVICE_SECRET"},
    "admin": {"type": "http", "scheme": "bearer", "description": "COURIER_AUTH_ADMIN_SECRET"},
}


#: The 429 of a rate-limited route (docs/protocol.md, "Rate limiting").
RATE_LIMITED: Final[dict[str, Any]] = {"429": {
    "description": "Rate limited: retry after `Retry-After` seconds (also `retry_after_s`)",
    "headers": {"Retry-After": {"description": "Seconds to wait, rounded up",
                                "schema": {"type": "integer", "minimum": 1}}},
    "content": {"application/problem+json": {
        "schema": {"$ref": "#/components/schemas/Problem"}}}}}
WRITES: Final = frozenset({"post", "put", "patch", "delete"})


def rate_limited_writes(paths: dict[str, Any]) -> dict[str, Any]:
    """``paths`` with the 429 response on every write operation (device routes)."""
    for operations in paths.values():
        for method, operation in operations.items():
            if method in WRITES:
                operation["responses"].update(RATE_LIMITED)
    return paths


def device_get(summary: str, description: str, param: str, pattern: str, reply: str,
               problems: tuple[int, ...]) -> dict[str, Any]:
    """A ``GET`` with the device's token and one path parameter matching ``pattern``."""
    return {"get": {
        "summary": summary, "description": description, "security": [{"bearer": []}],
        "parameters": [{"name": param, "in": "path", "required": True,
                        "schema": {"type": "string", "pattern": pattern}}],
        "responses": {"200": {"description": summary, "content": _json(reply)},
                      **_problems(*problems)}}}


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}


def _problems(*statuses: int) -> dict[str, Any]:
    return {str(s): {"description": "Problem", "content": {"application/problem+json": {
        "schema": {"$ref": "#/components/schemas/Problem"}}}} for s in statuses}


def integer_param(name: str, description: str, minimum: int, maximum: int = MAX_INT,
                  where: str = "query") -> dict[str, Any]:
    """An integer query (optional) or path (required) parameter and its bounds."""
    return {"name": name, "in": where, "required": where == "path", "description": description,
            "schema": {"type": "integer", "minimum": minimum, "maximum": maximum}}


def feature_paths() -> dict[str, Any]:
    device: list[dict[str, list[str]]] = [{"bearer": []}]
    service: list[dict[str, list[str]]] = [{"service": []}]
    admin: list[dict[str, list[str]]] = [{"admin": []}]
    return {
        **rate_limited_writes({"/v1/devices/me/push": {
            "put": {
                "summary": "Register (or rotate) this device's push token",
                "security": device,
                "requestBody": {"required": True, "content": _json("PushRegistrationRequest")},
                "responses": {"200": {"description": "Registered",
                                      "content": _json("PushRegistration")},
                              **_problems(400, 401, 403, 413, 422, 503)}},
            "get": {
                "summary": "This device's push registration (disabled if a provider "
                           "rejected the token)",
                "security": device,
                "responses": {"200": {"description": "Registration",
                                      "content": _json("PushRegistration")},
                              **_problems(401, 404, 503)}},
            "delete": {
                "summary": "Remove this device's push registration",
                "security": device,
                "responses": {"204": {"description": "Removed"}, **_problems(401, 503)}},
        }}),
        "/v1/devices/me/push/wakeups/{wakeup}": device_get(
            "What a wake-up this device received stands for",
            "A wake-up carries only an opaque `id` and a `count`; this trades the id for the "
            "conversations and message ids it concerns. Only the device it woke may read it, "
            "for a day; anyone else, an unknown or an expired id get the same 404.",
            "wakeup", WAKEUP_ID_PATTERN, "WakeUpDetails", (401, 403, 404, 422, 503)),
        "/v1/notifications": {"post": {
            "summary": "Send a batch of business notifications (one result per item)",
            "description": "The same body as the NATS subject notify.send. Items fail one by "
                           "one (unknown_recipient, too_large, disabled, unavailable); a "
                           "malformed or oversized batch fails as a whole.",
            "security": service,
            "requestBody": {"required": True, "content": _json("NotifyRequest")},
            "responses": {"200": {"description": "Results", "content": _json("NotifyResult")},
                          **_problems(400, 401, 413, 422, 503)}}},
        "/v1/admin/control": {
            "post": {
                "summary": "Disable or enable a device, user or module (audited)",
                "security": admin,
                "requestBody": {"required": True, "content": _json("ControlRequest")},
                "responses": {"200": {"description": "Applied",
                                      "content": _json("ControlResult")},
                              **_problems(400, 401, 404, 413, 422, 503)}},
            "get": {
                "summary": "Every disabled target",
                "security": admin,
                "responses": {"200": {"description": "Disabled targets",
                                      "content": _json("ControlList")},
                              **_problems(401)}},
        },
        "/v1/admin/audit": {"get": {
            "summary": "Page the audit trail of control actions, oldest first",
            "security": admin,
            "parameters": [integer_param("after", "Records after this position", 0),
                           integer_param("limit", "Page size (1-500)", 1, 500)],
            "responses": {"200": {"description": "A page", "content": _json("AuditPage")},
                          **_problems(401, 422, 503)}}},
        **_dead_letter_paths(admin),
    }


def _dead_letter_paths(admin: list[dict[str, list[str]]]) -> dict[str, Any]:
    seq = integer_param("seq", "The dead letter's position in the DLQ stream", 1,
                        where="path")
    return {
        "/v1/admin/dead-letters": {"get": {
            "summary": "Page the dead letters (envelopes the router or the storage worker "
                       "gave up on), oldest first",
            "security": admin,
            "parameters": [integer_param("after", "Dead letters after this position", 0),
                           integer_param("limit", f"Page size (1-{MAX_PAGE})", 1, MAX_PAGE)],
            "responses": {"200": {"description": "A page", "content": _json("DeadLetterPage")},
                          **_problems(401, 422, 503)}}},
        "/v1/admin/dead-letters/{seq}": {
            "get": {
                "summary": "One dead letter: its headers and the envelope's bytes",
                "security": admin,
                "parameters": [seq],
                "responses": {"200": {"description": "The dead letter",
                                      "content": _json("DeadLetterDetail")},
                              **_problems(401, 404, 422, 503)}},
            "delete": {
                "summary": "Drop a dead letter",
                "security": admin,
                "parameters": [seq],
                "responses": {"204": {"description": "Deleted"},
                              **_problems(401, 404, 422, 503)}},
        },
        "/v1/admin/dead-letters/{seq}/replay": {"post": {
            "summary": "Republish the envelope to its original subject (a new stream "
                       "sequence), then delete the dead letter",
            "description": "409 when the dead letter names no original subject and stream.",
            "security": admin,
            "parameters": [seq],
            "responses": {"200": {"description": "Replayed", "content": _json("ReplayResult")},
                          **_problems(401, 404, 409, 422, 503)}}},
    }
