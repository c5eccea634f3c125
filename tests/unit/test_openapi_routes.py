"""No drift between the routes the gateway serves and ``/openapi.json``: both come from the
route table, and this checks what ``serve`` hands aiohttp against the document. Handler
objects are bare instances (``serve`` only binds their methods; nothing is called)."""

from typing import Any

from aiohttp import web

from gateway.http.openapi import openapi_document
from gateway.http.routes import ROUTES, device_routes
from gateway.http.routing import Admission, serve
from runtime.config import Config


def served() -> set[tuple[str, str]]:
    owners = {route.handler.__qualname__.split(".")[0]: route.handler for route in ROUTES}
    handlers = [_bare(handler) for handler in owners.values()]
    admission: Any = Admission.__new__(Admission)  # never called: no request is made
    app = web.Application()
    app.add_routes(serve(ROUTES, handlers, admission, Config()))
    return {(route.method, route.resource.canonical) for route in app.router.routes()
            if route.method != "HEAD" and route.resource is not None}


def _bare(handler: Any) -> object:
    module = __import__(handler.__module__, fromlist=["_"])
    cls = getattr(module, handler.__qualname__.split(".")[0])
    return object.__new__(cls)


def documented() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, operations in openapi_document(ROUTES)["paths"].items()
            for method in operations}


def test_every_served_route_is_documented_and_every_documented_one_served() -> None:
    assert served() == documented()
    assert len(documented()) == len(ROUTES)  # one operation per declaration


def test_every_device_route_documents_its_credential_guard_and_limit() -> None:
    paths = openapi_document(ROUTES)["paths"]
    assert device_routes()
    for route in device_routes():
        operation = paths[route.path][route.method.lower()]
        assert operation["security"] == [{"bearer": []}]
        assert {"401", "403", "429"} <= set(operation["responses"]), route.path
        assert "Retry-After" in operation["responses"]["429"]["headers"]
        assert f"module `{route.module}`" in operation["description"]


def test_the_new_routes_are_there() -> None:
    paths = openapi_document(ROUTES)["paths"]
    assert "404" in paths["/v1/messages/{message_id}"]["get"]["responses"]
    assert "404" in paths["/v1/devices/me/push/wakeups/{wakeup}"]["get"]["responses"]
    limited = paths["/v1/groups"]["post"]["responses"]["429"]
    assert "Retry-After" in limited["headers"]


def test_operation_ids_are_unique_and_bodies_refer_to_components() -> None:
    document = openapi_document(ROUTES)
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    body = document["paths"]["/v1/groups"]["post"]["requestBody"]["content"]
    name = body["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert name in document["components"]["schemas"]
    seq = document["paths"]["/v1/admin/dead-letters/{seq}"]["get"]["parameters"][0]
    assert seq["schema"] == {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
