"""Issue 10, finding 3: a disabled device, a disabled user and a disabled module are refused
on every device route (403 ``disabled``), the routes taken from the route table, and the same
token works again once re-enabled. Also: REST reads spend the user's read budget (429 with
``Retry-After``)."""

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from client.sdk import Credentials
from gateway.http.routes import device_routes
from gateway.http.routing import IdListParam, IdParam, IntParam, Param, Route
from tests.conftest import store_env
from tests.harness import System
from tests.pushkit import ADMIN_SECRET

#: Values tried for a parameter, the first that matches its pattern is used.
EXAMPLES = ("hal", "d:gina:hal", "w" + "0" * 32, "b" + "0" * 32)


@pytest.fixture(scope="module")
def guard_system(tmp_path_factory: pytest.TempPathFactory,
                 request: pytest.FixtureRequest) -> Iterator[System]:
    with System(tmp_path_factory.mktemp("guard"), {
            **store_env(request), "COURIER_AUTH_ADMIN_SECRET": ADMIN_SECRET}) as system:
        yield system


def example(param: Param) -> str:
    if isinstance(param, IntParam):
        return str(param.default if param.default is not None else param.low)
    assert isinstance(param, IdParam | IdListParam), param
    pattern = param.pattern if isinstance(param, IdParam) else param.schema()["pattern"]
    return next(value for value in EXAMPLES if re.fullmatch(pattern, value))


def target(route: Route) -> tuple[str, dict[str, str]]:
    """The route's path with its path parameters filled in, and its required queries."""
    path = route.path
    query = {}
    for param in route.params:
        if param.where == "path":
            path = path.replace("{" + param.name + "}", example(param))
        elif param.required:
            query[param.name] = example(param)
    return path, query


async def call(system: System, route: Route, token: str) -> tuple[int, Any]:
    path, query = target(route)
    async with aiohttp.ClientSession() as session, session.request(
            route.method, f"{system.url}{path}", params=query,
            json={} if route.body is not None else None,
            headers={"Authorization": f"Bearer {token}"}) as response:
        body = await response.read()
        return response.status, await response.json(content_type=None) if body else None


async def control(system: System, action: str, kind: str, target_id: str) -> None:
    body = {"action": action, "target": {"kind": kind, "id": target_id}, "actor": "ops-ann",
            "reason": "test"}
    async with aiohttp.ClientSession() as session, session.post(
            f"{system.url}/v1/admin/control", json=body,
            headers={"Authorization": f"Bearer {ADMIN_SECRET}"}) as response:
        assert response.status == 200, await response.text()


def disabled(reply: tuple[int, Any]) -> bool:
    status, body = reply
    return status == 403 and isinstance(body, dict) and body["code"] == "disabled"


async def assert_served(system: System, creds: Credentials, routes: list[Route]) -> None:
    """Every route answers this token as it would any (no refusal, no server error)."""
    for route in routes:
        reply = await call(system, route, creds.token)
        assert not disabled(reply) and reply[0] < 500, (route.method, route.path, reply)
    status, _ = await call(system, routes[0], creds.token)
    assert status == 200  # GET /v1/conversations: a real answer, not only no refusal


async def assert_refused(system: System, creds: Credentials, routes: list[Route]) -> None:
    for route in routes:
        reply = await call(system, route, creds.token)
        assert disabled(reply), (route.method, route.path, reply)


def test_the_table_has_device_routes_of_every_kind() -> None:
    routes = device_routes()
    assert routes[0].path == "/v1/conversations" and routes[0].method == "GET"
    assert {route.method for route in routes} == {"GET", "POST", "PUT", "PATCH", "DELETE"}
    assert len(routes) >= 25


async def test_a_disabled_device_is_refused_on_every_device_route(guard_system: System) -> None:
    system, routes = guard_system, device_routes()
    creds = await system.device("gina", "gina-phone")
    laptop = await system.device("gina", "gina-laptop")
    await system.device("hal")
    await assert_served(system, creds, routes)
    await control(system, "disable", "device", "gina-phone")
    await assert_refused(system, creds, routes)
    await assert_served(system, laptop, routes)  # the user's other device is not disabled
    await control(system, "enable", "device", "gina-phone")
    await assert_served(system, creds, routes)


async def test_a_disabled_user_is_refused_on_every_device_route(guard_system: System) -> None:
    system, routes = guard_system, device_routes()
    phone = await system.device("ivan", "ivan-phone")
    laptop = await system.device("ivan", "ivan-laptop")
    other = await system.device("judy", "judy-phone")
    await control(system, "disable", "user", "ivan")
    for creds in (phone, laptop):
        await assert_refused(system, creds, routes)
    await assert_served(system, other, routes)
    await control(system, "enable", "user", "ivan")
    for creds in (phone, laptop):
        await assert_served(system, creds, routes)


async def test_a_disabled_module_is_refused_on_each_of_its_routes(guard_system: System) -> None:
    system, routes = guard_system, device_routes()
    creds = await system.device("kate", "kate-phone")
    modules = sorted({route.module for route in routes if route.module is not None})
    for module in modules:
        mine = [route for route in routes if route.module == module]
        others = [route for route in routes if route.module != module]
        await control(system, "disable", "module", module)
        await assert_refused(system, creds, mine)
        for route in others:  # only the disabled module's routes are refused
            assert not disabled(await call(system, route, creds.token)), route.path
        await control(system, "enable", "module", module)
    await assert_served(system, creds, routes)


async def test_rest_reads_spend_the_users_read_budget(tmp_path: Path,
                                                      request: pytest.FixtureRequest) -> None:
    with System(tmp_path, {**store_env(request), "COURIER_LIMITS_USER_READS_PER_S": "0.01",
                           "COURIER_LIMITS_USER_READS_BURST": "3"}) as system:
        phone = await system.device("lena", "lena-phone")
        laptop = await system.device("lena", "lena-laptop")
        other = await system.device("mike")
        async with aiohttp.ClientSession() as session:
            async def get(creds: Credentials, path: str) -> aiohttp.ClientResponse:
                async with session.get(f"{system.url}{path}", headers={
                        "Authorization": f"Bearer {creds.token}"}) as response:
                    await response.read()
                    return response

            for creds, path in ((phone, "/v1/conversations"), (laptop, "/v1/groups"),
                                (phone, "/v1/contacts")):  # the burst: 3, any routes
                assert (await get(creds, path)).status == 200
            refused = await get(laptop, "/v1/conversations")  # the user's fourth read
            assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
            assert (await get(other, "/v1/conversations")).status == 200  # another user
            status, body = await call(system, device_routes()[0], phone.token)
            assert status == 429 and body["code"] == "rate_limited" and body["retry"]
            async with session.post(f"{system.url}/v1/groups", json={"id": "lena-group"},
                                    headers={"Authorization": f"Bearer {phone.token}"}) as write:
                assert write.status == 201  # writes have their own budget
