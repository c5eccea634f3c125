"""The OpenAPI 3.1 document of the REST API, built from the typed bodies in ``schemas``."""

from functools import cache
from typing import Any

import msgspec
from aiohttp import web

from gateway.openapi_features import (
    FEATURE_SECURITY,
    FEATURE_TYPES,
    RATE_LIMITED,
    device_get,
    feature_paths,
    integer_param,
)
from gateway.openapi_social import SOCIAL_TYPES, social_paths
from schemas import rpc
from schemas.ids import ID_PATTERN
from schemas.rest import DevDeviceRequest, DevDeviceResponse, Health, Problem
from schemas.version import PROTOCOL_VERSION

_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(name)}}


def _problems(*statuses: int) -> dict[str, Any]:
    return {
        str(s): {"description": "Problem", "content": {
            "application/problem+json": {"schema": _ref("Problem")}}}
        for s in statuses
    }


@cache
def openapi_document() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [Problem, Health, DevDeviceRequest, DevDeviceResponse, rpc.Conversations,
         rpc.HistoryPage, rpc.HistoryItem, *FEATURE_TYPES, *SOCIAL_TYPES],
        ref_template="#/components/schemas/{name}",
    )
    return {
        "openapi": "3.1.0",
        "info": {"title": "Courier REST API", "version": str(PROTOCOL_VERSION),
                 "description": "REST side of the Courier messaging backend. The WebSocket "
                                "protocol is described in docs/protocol.md."},
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"},
                                **FEATURE_SECURITY},
        },
        "paths": {
            "/healthz": {"get": {
                "summary": "Liveness and NATS connectivity",
                "responses": {"200": {"description": "Healthy", "content": _json("Health")},
                              "503": {"description": "NATS unreachable",
                                      "content": _json("Health")}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics",
                                 "responses": {"200": {"description": "Text exposition"}}}},
            "/openapi.json": {"get": {"summary": "This document",
                                      "responses": {"200": {"description": "OpenAPI"}}}},
            "/v1/ws": {"get": {
                "summary": "WebSocket upgrade (protocol v1, see docs/protocol.md)",
                "description": "Token in `Authorization: Bearer` or the `token` query.",
                "parameters": [{"name": "token", "in": "query", "required": False,
                                "schema": {"type": "string"}}],
                "responses": {"101": {"description": "Switching protocols"},
                              **_problems(401, 403, 503), **RATE_LIMITED}}},
            "/v1/dev/devices": {"post": {
                "summary": "Register a device and get its token (embedded mode only)",
                "requestBody": {"required": True, "content": _json("DevDeviceRequest")},
                "responses": {"201": {"description": "Registered",
                                      "content": _json("DevDeviceResponse")},
                              **_problems(400, 404, 409, 422, 503), **RATE_LIMITED}}},
            "/v1/conversations": {"get": {
                "summary": "My conversations, most recent first, with unread counts",
                "security": _BEARER,
                "parameters": [integer_param("limit", "At most this many (1-200)", 1, 200)],
                "responses": {"200": {"description": "Conversations",
                                      "content": _json("Conversations")},
                              **_problems(401, 422, 503)}}},
            "/v1/conversations/{conversation}/messages": {"get": {
                "summary": "Page a conversation's messages (members only)",
                "description": "Without cursor: the newest page. `before=S`: the page "
                               "before seq S (use `next_before`); `after=S`: the page after "
                               "seq S (use `next_after`). Items are in ascending seq order.",
                "security": _BEARER,
                "parameters": [
                    {"name": "conversation", "in": "path", "required": True,
                     "schema": {"type": "string"}},
                    integer_param("before", "Page backwards from this seq (exclusive)", 0),
                    integer_param("after", "Page forwards from this seq (exclusive)", 0),
                    integer_param("limit", "Page size (1-200)", 1, 200),
                ],
                "responses": {"200": {"description": "A page", "content": _json("HistoryPage")},
                              **_problems(401, 403, 422, 503)}}},
            "/v1/messages/{message_id}": device_get(
                "One message by its server id (its recipients only)",
                "The message as this device sees it in history, with its status. 404 when it "
                "does not exist and when the caller's user was not a recipient (a member of "
                "its conversation at its seq), so its existence does not leak.",
                "message_id", ID_PATTERN, "HistoryItem", (401, 404, 422, 503)),
            **feature_paths(),
            **social_paths(),
        },
    }


async def openapi_handler(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())
