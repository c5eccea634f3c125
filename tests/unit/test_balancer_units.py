"""The balancer's pure parts: which gateway is healthy and least loaded, the CPU a beat
reports, connection tickets, and the configuration of all three at and past their bounds."""

import time

import jwt
import pytest

from balancer.loads import healthy, least_loaded
from gateway.auth import TICKET_AUDIENCE, Identity, Tickets
from gateway.http.openapi import openapi_document
from presence.registry import CpuMeter
from runtime.config import AuthConfig, ConfigError, load_config
from schemas.errors import ProtocolError
from schemas.presence import GatewayBeat

NOW_MS = 1_000_000
TTL_MS = 3000
SECRET = "t" * 32


def beat(gateway: str, sockets: int = 0, cpu: float = 0.0, *, age_ms: int = 0,
         draining: bool = False, url: str = "ws://h:1/v1/ws") -> GatewayBeat:
    return GatewayBeat(gateway=gateway, ts=NOW_MS - age_ms, url=url, sockets=sockets, cpu=cpu,
                       draining=draining)


def test_fewest_sockets_then_least_cpu_then_the_id() -> None:
    beats = [beat("a", 5, 1.0), beat("b", 2, 90.0), beat("c", 2, 10.0), beat("d", 9)]
    assert least_loaded(beats, {}, NOW_MS, TTL_MS) == beats[2]
    assert least_loaded([beat("y", 1, 5.0), beat("x", 1, 5.0)], {}, NOW_MS, TTL_MS).gateway == "x"


def test_tickets_handed_out_since_the_beat_count_as_sockets() -> None:
    beats = [beat("a", 3), beat("b", 1)]
    assert least_loaded(beats, {"b": 1}, NOW_MS, TTL_MS).gateway == "b"  # 3 vs 2
    assert least_loaded(beats, {"b": 2}, NOW_MS, TTL_MS).gateway == "a"  # 3 vs 3: the id
    assert least_loaded(beats, {"a": 1, "b": 3}, NOW_MS, TTL_MS).gateway == "a"


def test_draining_stale_and_url_less_gateways_are_never_chosen() -> None:
    idle_but_draining = beat("a", 0, draining=True)
    stale = beat("b", 0, age_ms=TTL_MS + 1)
    old_gateway = beat("c", 0, url="")
    busy = beat("d", 1000, 99.0)
    assert least_loaded([idle_but_draining, stale, old_gateway, busy], {}, NOW_MS,
                        TTL_MS) == busy
    assert least_loaded([idle_but_draining, stale, old_gateway], {}, NOW_MS, TTL_MS) is None
    assert least_loaded([], {}, NOW_MS, TTL_MS) is None


def test_a_beat_is_fresh_up_to_the_ttl() -> None:
    assert healthy(beat("a", age_ms=TTL_MS), NOW_MS, TTL_MS)
    assert not healthy(beat("a", age_ms=TTL_MS + 1), NOW_MS, TTL_MS)


def test_cpu_is_a_percent_of_one_core_over_the_interval() -> None:
    readings = iter([(0.0, 0.0), (0.5, 2.0), (0.5, 3.0), (2.5, 4.0), (2.5, 4.0)])
    current = (0.0, 0.0)

    def advance() -> None:
        nonlocal current
        current = next(readings)

    advance()
    meter = CpuMeter(cpu=lambda: current[0], wall=lambda: current[1])
    results = []
    for _ in range(4):
        advance()
        results.append(meter.read())
    assert results == [25.0, 0.0, 200.0, 0.0]  # two cores busy: 200; no time passed: 0


def identity(expires_at: float) -> Identity:
    return Identity(user="alice", device="phone", app="shop", expires_at=expires_at)


def test_a_ticket_names_its_gateway_and_expires_with_the_ttl_or_the_token() -> None:
    tickets = Tickets(AuthConfig(ticket_secret=SECRET, ticket_ttl_s=30), clock=lambda: 1000.0)
    token, expires_at = tickets.issue(identity(5000.0), "gw-a")
    assert expires_at == 1030
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience=TICKET_AUDIENCE,
                        options={"verify_exp": False})
    assert claims == {"sub": "alice", "dev": "phone", "app": "shop", "gw": "gw-a",
                      "exp": 1030, "tex": 5000.0, "aud": TICKET_AUDIENCE}
    assert tickets.issue(identity(1010.9), "gw-a")[1] == 1010  # never past the token


def test_a_ticket_is_verified_for_its_gateway_only() -> None:
    tickets = Tickets(AuthConfig(ticket_secret=SECRET))
    token_expiry = time.time() + 600
    ticket, _ = tickets.issue(identity(token_expiry), "gw-a")
    # the socket lives as long as the token, not the ticket
    assert tickets.verify(ticket, "gw-a") == identity(token_expiry)
    with pytest.raises(ProtocolError, match="for gateway 'gw-a', not this one"):
        tickets.verify(ticket, "gw-b")
    with pytest.raises(ProtocolError, match="invalid ticket"):
        Tickets(AuthConfig(ticket_secret="u" * 32)).verify(ticket, "gw-a")
    good = {"sub": "alice", "dev": "phone", "app": "shop", "gw": "gw-a",
            "exp": int(time.time()) + 60, "tex": time.time() + 60, "aud": TICKET_AUDIENCE}
    no_audience = jwt.encode({k: v for k, v in good.items() if k != "aud"}, SECRET)
    no_token_expiry = jwt.encode({k: v for k, v in good.items() if k != "tex"}, SECRET)
    bad_id = jwt.encode({**good, "sub": "al ice"}, SECRET)
    assert tickets.verify(jwt.encode(good, SECRET), "gw-a").user == "alice"
    for bad in (no_audience, no_token_expiry, bad_id, "", "x.y.z"):
        with pytest.raises(ProtocolError, match="invalid ticket"):
            tickets.verify(bad, "gw-a")


def test_tickets_need_a_secret() -> None:
    with pytest.raises(ConfigError, match="COURIER_AUTH_TICKET_SECRET"):
        Tickets(AuthConfig())


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("COURIER_AUTH_TICKET_TTL_S", "5", 5), ("COURIER_AUTH_TICKET_TTL_S", "300", 300),
    ("COURIER_BALANCER_PORT", "0", 0), ("COURIER_BALANCER_PORT", "65535", 65535),
    ("COURIER_BALANCER_RETRY_AFTER_S", "1", 1), ("COURIER_BALANCER_RETRY_AFTER_S", "300", 300),
    ("COURIER_GATEWAY_DRAIN_S", "0", 0.0), ("COURIER_GATEWAY_DRAIN_S", "600", 600.0),
    ("COURIER_GATEWAY_ID", "g" * 64, "g" * 64),
    ("COURIER_GATEWAY_PUBLIC_URL", "wss://chat.example.com/v1/ws",
     "wss://chat.example.com/v1/ws"),
    ("COURIER_AUTH_TICKET_SECRET", "k" * 32, "k" * 32),
])
def test_balancer_settings_at_their_bounds(key: str, value: str, expected: object) -> None:
    section, field = key.removeprefix("COURIER_").lower().split("_", 1)
    assert getattr(getattr(load_config({key: value}), section), field) == expected


@pytest.mark.parametrize(("env", "key"), [
    ({"COURIER_AUTH_TICKET_TTL_S": "4"}, "COURIER_AUTH_TICKET_TTL_S"),
    ({"COURIER_AUTH_TICKET_TTL_S": "301"}, "COURIER_AUTH_TICKET_TTL_S"),
    ({"COURIER_AUTH_TICKET_TTL_S": "soon"}, "COURIER_AUTH_TICKET_TTL_S"),
    ({"COURIER_BALANCER_PORT": "-1"}, "COURIER_BALANCER_PORT"),
    ({"COURIER_BALANCER_PORT": "65536"}, "COURIER_BALANCER_PORT"),
    ({"COURIER_BALANCER_RETRY_AFTER_S": "0"}, "COURIER_BALANCER_RETRY_AFTER_S"),
    ({"COURIER_BALANCER_RETRY_AFTER_S": "301"}, "COURIER_BALANCER_RETRY_AFTER_S"),
    ({"COURIER_BALANCER_HOSTS": "x"}, "COURIER_BALANCER_HOSTS"),
    ({"COURIER_GATEWAY_DRAIN_S": "-0.1"}, "COURIER_GATEWAY_DRAIN_S"),
    ({"COURIER_GATEWAY_DRAIN_S": "600.1"}, "COURIER_GATEWAY_DRAIN_S"),
    ({"COURIER_GATEWAY_ID": "g" * 65}, "COURIER_GATEWAY_ID"),
    ({"COURIER_GATEWAY_ID": "gw.1"}, "COURIER_GATEWAY_ID"),
    ({"COURIER_GATEWAY_PUBLIC_URL": "http://chat.example.com"}, "COURIER_GATEWAY_PUBLIC_URL"),
    ({"COURIER_AUTH_TICKET_SECRET": "k" * 31}, "COURIER_AUTH_TICKET_SECRET"),
    ({"COURIER_AUTH_TICKET_SECRET": "k" * 32, "COURIER_AUTH_SECRET": "k" * 32},
     "COURIER_AUTH_TICKET_SECRET"),
    ({"COURIER_AUTH_TICKET_SECRET": "k" * 32, "COURIER_AUTH_ADMIN_SECRET": "k" * 32},
     "COURIER_AUTH_TICKET_SECRET"),
])
def test_bad_balancer_settings_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config(env)


def test_the_balancer_document_lists_its_routes_only() -> None:
    from balancer.http import BALANCER_INFO, BALANCER_ROUTES

    document = openapi_document(BALANCER_ROUTES, BALANCER_INFO)
    assert document["info"]["title"] == "Courier balancer"
    connect = document["paths"]["/v1/connect"]["post"]
    assert set(connect["responses"]) == {"200", "401", "422", "429", "503"}
    assert connect["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ConnectReply"}
