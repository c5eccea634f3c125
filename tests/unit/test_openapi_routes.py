"""No drift between the REST routes the gateway serves and ``/openapi.json``: every served
route is documented and every documented one is served. The handler classes are built with
placeholder collaborators (``routes()`` only names their bound methods)."""

from typing import Any

from aiohttp import web

from gateway.admin_rest import AdminApi
from gateway.notify_rest import NotifyApi
from gateway.openapi import openapi_document
from gateway.push_rest import PushRegistrationApi
from gateway.rest import RestApi
from gateway.social_rest import SocialRest
from runtime.config import AuthConfig, NotifyConfig

#: Added by ``gateway.service.Gateway`` itself.
SERVICE_ROUTES = {("GET", "/v1/ws"), ("GET", "/openapi.json")}


def served() -> set[tuple[str, str]]:
    none: Any = None  # a collaborator ``routes()`` does not touch
    issuer: Any = object()  # dev registration on: its route is served
    routes: list[web.RouteDef] = [
        *RestApi("gw", none, issuer, none, none, none, "default", lambda: True, none).routes(),
        *SocialRest(none, none, none, none, none, none, none).routes(),
        *PushRegistrationApi(none, none, none, none, none).routes(),
        *NotifyApi(none, AuthConfig(), NotifyConfig()).routes(),
        *AdminApi(none, none, AuthConfig()).routes(),
    ]
    return {(route.method, route.path) for route in routes} | SERVICE_ROUTES


def documented() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, operations in openapi_document()["paths"].items()
            for method in operations}


def test_every_served_route_is_documented_and_every_documented_one_served() -> None:
    assert served() == documented()


def test_the_new_routes_are_there() -> None:
    paths = openapi_document()["paths"]
    assert "404" in paths["/v1/messages/{message_id}"]["get"]["responses"]
    assert "404" in paths["/v1/devices/me/push/wakeups/{wakeup}"]["get"]["responses"]
    limited = paths["/v1/groups"]["post"]["responses"]["429"]
    assert "Retry-After" in limited["headers"]
