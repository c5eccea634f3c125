"""Route declarations as pure logic: what the table refuses to declare, what it adds to the
document by itself, and the parameters that parse what they document."""

from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from prometheus_client import REGISTRY

from gateway.auth import Identity
from gateway.http.problems import problem_middleware
from gateway.http.routes import ROUTES
from gateway.http.routing import (
    Admin,
    Admission,
    IdListParam,
    IdParam,
    IntParam,
    Reply,
    Route,
    RouteError,
    serve,
)
from runtime.config import Config
from schemas.bounds import MAX_INT
from schemas.errors import ErrorCode, ProtocolError


class Body(msgspec.Struct):
    name: str


class Handlers:
    async def device(self, request: web.Request, identity: Identity) -> web.Response:
        return web.Response()

    async def device_body(self, request: web.Request, identity: Identity,
                          body: Body) -> web.Response:
        return web.Response()

    async def admin(self, request: web.Request, admin: Admin) -> web.Response:
        return web.Response()

    async def open(self, request: web.Request) -> web.Response:
        return web.Response()


async def module_function(request: web.Request) -> web.Response:
    return web.Response()


OK = (Reply(200, "ok"),)
DEVICE: dict[str, Any] = {"method": "GET", "path": "/v1/x", "handler": Handlers.device,
                          "credential": "device", "summary": "x", "replies": OK,
                          "module": "chat", "bucket": "read"}


def refused(message: str, **changes: Any) -> None:
    with pytest.raises(RouteError, match=message):
        Route(**{**DEVICE, **changes})


def test_a_well_formed_device_route_gets_the_statuses_of_its_checks() -> None:
    route = Route(**DEVICE)
    assert route.guarded and route.statuses() == [401, 403, 422, 429]
    with_body = Route(**{**DEVICE, "method": "POST", "bucket": "write", "body": Body,
                         "handler": Handlers.device_body, "problems": (404,)})
    assert with_body.statuses() == [400, 401, 403, 404, 413, 422, 429]


def test_a_route_without_a_credential_kind_cannot_be_declared() -> None:
    without = {key: value for key, value in DEVICE.items() if key != "credential"}
    with pytest.raises(TypeError, match="credential"):
        Route(**without)
    refused("credential must be one of", credential="user")


def test_a_device_route_must_name_its_module_and_a_user_bucket() -> None:
    refused("name its module", module=None)
    refused("spends a user bucket", bucket=None)
    refused("spends a user bucket", bucket="registration")
    refused("GET spends the 'read' bucket", bucket="write")
    refused("GET spends the 'read' bucket", method="DELETE")
    refused("unknown bucket", bucket="sends")


def test_only_device_routes_have_a_guard_and_user_buckets() -> None:
    admin = {**DEVICE, "credential": "admin", "handler": Handlers.admin}
    refused("only device routes", **admin)
    refused("spends no user bucket", **{**admin, "module": None})
    refused("spends no user bucket", **{**admin, "module": None, "bucket": "registration"})
    open_route = Route(**{**DEVICE, "credential": "none", "handler": Handlers.open,
                          "module": None, "bucket": "registration"})
    assert not open_route.guarded and open_route.statuses() == [422, 429]


def test_the_handler_must_take_what_the_declaration_says() -> None:
    refused("takes .* the declaration says", handler=Handlers.admin)  # device route
    refused("takes .* the declaration says", handler=Handlers.open)
    refused("takes .* the declaration says", body=Body)  # the handler takes no body
    refused("takes .* the declaration says", method="POST", bucket="write",
            handler=Handlers.device_body)  # a body the declaration does not name
    refused("a method of a handler class", credential="none", module=None, bucket=None,
            handler=module_function)


def test_paths_statuses_and_replies_are_checked() -> None:
    refused(r"path parameters \['id'\] but \[\] declared", path="/v1/x/{id}")
    refused("declared", params=(IdParam("id", "x", where="path"),))
    refused("declared twice", params=(IntParam("a", "x"), IntParam("a", "y")))
    refused("not ones the API uses", problems=(418,))
    refused("the first reply is the success reply", replies=(Reply(404, "no"),))
    refused("the first reply", replies=())
    refused("unknown method", method="TRACE")
    refused("starts with '/'", path="v1/x")


def test_the_table_itself_is_well_formed() -> None:
    assert len({(route.method, route.path) for route in ROUTES}) == len(ROUTES)
    assert {route.credential for route in ROUTES} == {"device", "service", "admin", "none"}
    modules = {route.module for route in ROUTES if route.credential == "device"}
    assert modules == {"chat", "groups", "contacts", "presence", "push", "media", "keys"}


def request(query: str = "", **match: str) -> web.Request:
    req = make_mocked_request("GET", f"/x?{query}")
    req.match_info.update(match)
    return req


def invalid(call: Any, text: str) -> None:
    with pytest.raises(ProtocolError) as info:
        call()
    assert info.value.code == ErrorCode.INVALID and text in info.value.message


def test_integer_parameters_at_and_past_their_bounds() -> None:
    limit = IntParam("limit", "x", low=1, high=200, default=50)
    assert limit.value(request()) == 50
    assert limit.value(request("limit=1")) == 1 and limit.value(request("limit=200")) == 200
    for bad in ("0", "201", "x", "1.5", ""):
        invalid(lambda bad=bad: limit.value(request(f"limit={bad}")), "query 'limit'")
    cursor = IntParam("after", "x")
    assert cursor.optional(request()) is None
    assert cursor.optional(request(f"after={MAX_INT}")) == MAX_INT
    invalid(lambda: cursor.optional(request(f"after={MAX_INT + 1}")), "within [0, ")
    invalid(lambda: cursor.value(request()), "is required")
    seq = IntParam("seq", "x", where="path", low=1)
    assert seq.openapi()["required"] and seq.value(request(seq="1")) == 1
    invalid(lambda: seq.value(request(seq="0")), "path 'seq'")


def test_id_parameters() -> None:
    group = IdParam("group", "x", where="path")
    assert group.value(request(group="a" * 64)) == "a" * 64
    for bad in ("a" * 65, "b d", "a\n", "a.b"):
        invalid(lambda bad=bad: group.value(request(group=bad)), "is not a valid id")
    users = IdListParam("users", "x", most=3)
    assert users.openapi()["required"]
    assert users.value(request("users=a,b,,c")) == ["a", "b", "c"]
    invalid(lambda: users.value(request("users=a,b,c,d")), "1 to 3")
    invalid(lambda: users.value(request()), "1 to 3")
    invalid(lambda: users.value(request("users=a%20b")), "not a valid id")


class Served:
    async def echo(self, request: web.Request, body: Body) -> web.Response:
        return web.json_response({"name": body.name, "n": COUNT.value(request)})


COUNT = IntParam("n", "x", low=1, high=3, default=1)
ECHO = Route(method="POST", path="/echo", handler=Served.echo, credential="none",
             summary="echo", replies=OK, body=Body, body_limit=64, params=(COUNT,))


async def test_the_wrapper_decodes_the_body_and_refuses_unknown_queries() -> None:
    admission: Any = Admission.__new__(Admission)  # an open route without a bucket: unused
    app = web.Application(middlewares=[problem_middleware])
    app.add_routes(serve([ECHO], [Served()], admission, Config()))
    async with TestClient(TestServer(app)) as client:
        async def post(path: str, data: bytes) -> tuple[int, Any]:
            async with client.post(path, data=data) as response:
                return response.status, await response.json(content_type=None)

        assert await post("/echo?n=3", b'{"name": "a"}') == (200, {"name": "a", "n": 3})
        for path, data, status, code in (
                ("/echo?m=1", b'{"name": "a"}', 422, "invalid"),  # not a declared query
                ("/echo?n=4", b'{"name": "a"}', 422, "invalid"),  # past the bound
                ("/echo", b'{"nam": "a"}', 422, "invalid"),
                ("/echo", b"{", 400, "bad_frame"),
                ("/echo", b'{"name": "' + b"a" * 64 + b'"}', 413, "too_large")):
            got, reply = await post(path, data)
            assert got == status and (code is None or reply["code"] == code), (path, reply)
    counted = {outcome: REGISTRY.get_sample_value("courier_gateway_rest_requests_total", {
        "operation": "Served.echo", "outcome": outcome}) for outcome in ("ok", "invalid")}
    assert counted["ok"] is not None and counted["ok"] >= 1
    assert counted["invalid"] is not None and counted["invalid"] >= 3
