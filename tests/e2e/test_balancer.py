"""The balancer (``python -m balancer``): it sends a client to the least-loaded healthy gateway
with a ticket only that gateway accepts, never to a draining or dead one, and a drained
gateway's clients come back through it to the other gateway with nothing lost."""

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import msgspec
import pytest

from balancer.service import MAX_FIELD_BYTES, MAX_LINE_BYTES
from client.sdk import BalancerError, ClientError, CourierClient, balancer_connect
from gateway.auth import Identity, Tickets
from runtime.config import AuthConfig
from schemas.errors import CloseCode
from tests.conftest import store_env
from tests.e2e.social_helpers import call, wait_for
from tests.harness import System

ADMIN_SECRET = "b" * 40
#: The module's tickets expire at the lower bound, so a test can outlive one.
TICKET_TTL_S = 5


class Pair:
    """A system of two gateways and a balancer."""

    def __init__(self, system: System, balancer: str, ids: list[str]) -> None:
        self.system = system
        self.balancer = balancer
        self.ids = ids
        #: Subjects a test had NATS refuse on purpose (the other refusals fail the module).
        self.provoked: list[str] = []


async def gateway_id(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as reply:
        return str((await reply.json())["gateway"])


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory,
         request: pytest.FixtureRequest) -> Iterator[Pair]:
    with System(tmp_path_factory.mktemp("balancer"),
                {**store_env(request), "COURIER_AUTH_ADMIN_SECRET": ADMIN_SECRET,
                 "COURIER_AUTH_TICKET_TTL_S": str(TICKET_TTL_S)}) as system:
        system.add_gateway()
        balancer = system.add_balancer()
        ids = [asyncio.run(gateway_id(system.gateway_url(i))) for i in range(2)]
        pair = Pair(system, balancer, ids)
        yield pair
    unexpected = [line for line in system.permission_violations()
                  if not any(line.endswith(f'Subject "{subject}"') for subject in pair.provoked)]
    assert not unexpected, "a service was refused by NATS permissions"


async def health(balancer: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"{balancer}/healthz") as reply:
        return reply.status, await reply.json()


async def known(balancer: str) -> dict[str, dict[str, Any]]:
    """The balancer's view of each gateway, by id."""
    return {entry["gateway"]: entry for entry in (await health(balancer))[1]["known"]}


async def post_connect(balancer: str, headers: dict[str, str]) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession() as session, session.post(
            f"{balancer}/v1/connect", headers=headers) as reply:
        body = await reply.read()
        decoded = msgspec.json.decode(body) if reply.content_type.endswith("json") else body
        return reply.status, decoded, reply.headers


async def upgrade_status(url: str) -> tuple[int, Any]:
    """Open a socket at ``url`` (with its query): 101 and the welcome, or the refusal."""
    async with aiohttp.ClientSession() as session:
        try:
            ws = await session.ws_connect(url, heartbeat=None)
        except aiohttp.WSServerHandshakeError as exc:
            # the refusal's problem: the same request without the upgrade
            async with session.get(url.replace("ws", "http", 1)) as reply:
                problem = await reply.json()
            assert reply.status == exc.status, problem
            return exc.status, problem["detail"]
        first = await asyncio.wait_for(ws.receive(), 10)
        await ws.close()
        return 101, msgspec.json.decode(first.data)


def ws_url(system: System, index: int) -> str:
    return system.gateway_url(index).replace("http", "ws", 1) + "/v1/ws"


# ---------------------------------------------------------------------- choosing


async def test_the_least_loaded_gateway_is_chosen(pair: Pair) -> None:
    system, balancer = pair.system, pair.balancer
    loaded, idle = pair.ids
    direct = [await system.connect(await system.device(f"ll-{i}"), system.gateway_url(0),
                                   sync=False) for i in range(3)]
    try:
        async def beats_seen() -> bool:
            view = await known(balancer)
            return view[loaded]["sockets"] == 3 and view[idle]["sockets"] == 0

        await wait_for(beats_seen, 15)
        creds = await system.device("ll-new")
        # three sockets on one, none on the other: the next three go to the idle one (the
        # balancer counts the tickets it handed out until the next beat counts the sockets)
        chosen = [(await balancer_connect(balancer, creds.token)).gateway for _ in range(3)]
        assert chosen == [idle] * 3
        reply = await balancer_connect(balancer, creds.token)
        assert reply.url == ws_url(system, pair.ids.index(reply.gateway))
        assert reply.expires_at - TICKET_TTL_S <= time.time() <= reply.expires_at
    finally:
        for client in direct:
            await client.close()


async def test_the_ticket_opens_its_gateway_and_no_other(pair: Pair) -> None:
    system, balancer = pair.system, pair.balancer
    creds = await system.device("ticket-user")
    reply = await balancer_connect(balancer, creds.token)
    mine = pair.ids.index(reply.gateway)
    other = 1 - mine
    status, detail = await upgrade_status(f"{ws_url(system, other)}?ticket={reply.ticket}")
    assert status == 401 and "not this one" in detail
    status, welcome = await upgrade_status(f"{reply.url}?ticket={reply.ticket}")
    assert status == 101 and welcome["type"] == "welcome"
    assert (welcome["user"], welcome["gateway"]) == ("ticket-user", reply.gateway)


async def test_a_socket_opened_with_a_ticket_outlives_the_ticket(pair: Pair) -> None:
    """The socket keeps the device token's expiry (4010 then), not the ticket's."""
    client = CourierClient(pair.system.url, await pair.system.device("long-lived"),
                           balancer=pair.balancer)
    await client.connect()
    try:
        past_the_ticket = time.time() + TICKET_TTL_S + 2
        await wait_for(lambda: time.time() > past_the_ticket, TICKET_TTL_S + 5)
        await client.ping()
        assert (client.connects, list(client.closes)) == (1, [])
    finally:
        await client.close()


async def test_expired_forged_and_token_tickets_are_refused(pair: Pair) -> None:
    system = pair.system
    creds = await system.device("bad-ticket")
    identity = Identity(user="bad-ticket", device=creds.device, app="default",
                        expires_at=time.time() + 3600)
    ours = AuthConfig(ticket_secret=system.ticket_secret)
    expired, _ = Tickets(ours, clock=lambda: time.time() - 100).issue(identity, pair.ids[0])
    forged, _ = Tickets(AuthConfig(ticket_secret="f" * 40)).issue(identity, pair.ids[0])
    tampered = jwt.encode({**jwt.decode(Tickets(ours).issue(identity, pair.ids[1])[0],
                                        options={"verify_signature": False}),
                           "gw": pair.ids[0]}, "x" * 40)
    for ticket, why in ((expired, "ticket expired"), (forged, "invalid ticket"),
                        (tampered, "invalid ticket"), (creds.token, "invalid ticket"),
                        ("", "invalid ticket"), ("a.b.c", "invalid ticket")):
        status, detail = await upgrade_status(f"{ws_url(system, 0)}?ticket={ticket}")
        assert (status, why in detail) == (401, True), (ticket, detail)


async def test_bad_or_missing_tokens_get_401(pair: Pair) -> None:
    system, balancer = pair.system, pair.balancer
    creds = await system.device("bad-token")
    claims = jwt.decode(creds.token, options={"verify_signature": False})
    expired = jwt.encode({**claims, "exp": int(time.time()) - 10}, system.secret)
    other_key = jwt.encode(claims, "z" * 40)
    bad_sub = jwt.encode({**claims, "sub": "no/slashes"}, system.secret)
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "},
                    {"Authorization": "Bearer garbage"}, {"Authorization": f"Bearer {expired}"},
                    {"Authorization": f"Bearer {other_key}"},
                    {"Authorization": f"Bearer {bad_sub}"}):
        status, problem, _ = await post_connect(balancer, headers)
        assert (status, problem["code"]) == (401, "unauthorized"), (headers, problem)
    with pytest.raises(BalancerError) as refused:
        await balancer_connect(balancer, expired)
    assert refused.value.status == 401 and refused.value.problem is not None


async def test_oversized_headers_and_bodies_are_refused(pair: Pair) -> None:
    creds = await pair.system.device("big-headers")
    async with aiohttp.ClientSession() as session:
        for size, status in ((MAX_FIELD_BYTES, 200), (MAX_FIELD_BYTES + 1, 400)):
            async with session.post(f"{pair.balancer}/v1/connect",
                                    headers={"Authorization": f"Bearer {creds.token}",
                                             "X-Padding": "p" * size}) as reply:
                assert reply.status == status, size
        async with session.post(f"{pair.balancer}/v1/connect?{'q' * MAX_LINE_BYTES}",
                                headers={"Authorization": f"Bearer {creds.token}"}) as reply:
            assert reply.status == 400
        async with session.post(f"{pair.balancer}/v1/connect", data=b"x" * 100,
                                headers={"Authorization": f"Bearer {creds.token}"}) as reply:
            assert reply.status == 200  # a small body is ignored
        async with session.post(f"{pair.balancer}/v1/connect?x=1",
                                headers={"Authorization": f"Bearer {creds.token}"}) as reply:
            assert (reply.status, (await reply.json())["code"]) == (422, "invalid")
        async with session.get(f"{pair.balancer}/openapi.json") as reply:
            document = await reply.json()
        assert set(document["paths"]) == {"/healthz", "/metrics", "/v1/connect",
                                          "/openapi.json"}
        assert "503" in document["paths"]["/v1/connect"]["post"]["responses"]


async def test_admin_drain_and_a_draining_gateway_is_never_chosen(pair: Pair) -> None:
    system, balancer = pair.system, pair.balancer
    staying, draining = pair.ids
    creds = await system.device("drain-watch")
    socket = await system.connect(creds, system.gateway_url(1), sync=False)
    url = f"{system.gateway_url(0)}/v1/admin/gateways/{{}}/drain"
    auth = {"Authorization": f"Bearer {ADMIN_SECRET}"}
    async with aiohttp.ClientSession() as session:
        for gateway, headers, status, code in (
                (draining, {}, 401, "unauthorized"),
                (draining, {"Authorization": "Bearer " + "c" * 40}, 401, "unauthorized"),
                ("no.such", auth, 422, "invalid"), ("x" * 65, auth, 422, "invalid"),
                ("gw-none", auth, 404, "not_found")):
            async with session.post(url.format(gateway), headers=headers) as reply:
                assert (reply.status, (await reply.json())["code"]) == (status, code), gateway
        async with session.post(url.format(draining), headers=auth) as reply:
            assert reply.status == 200
            started = await reply.json()
            assert (started["gateway"], started["drain_s"]) == (draining, 2.0)
            assert started["sockets"] >= 1
        async with session.post(url.format(draining), headers=auth) as reply:
            assert (reply.status, (await reply.json())["code"]) == (409, "conflict")
    await wait_for(lambda: socket.close_code == CloseCode.MOVED, 15)
    await wait_for(lambda: _draining(balancer, draining), 10)
    # the drained gateway is now the idle one; it is never chosen
    chosen = {(await balancer_connect(balancer, creds.token)).gateway for _ in range(6)}
    assert chosen == {staying}
    status, _ = await upgrade_status(f"{ws_url(system, 1)}?token={creds.token}")
    assert status == 503
    await socket.close()


async def test_only_gateways_and_admins_drain_and_the_balancer_only_reads(pair: Pair) -> None:
    """Runs after the admin drain of the second gateway: the first one must stay."""
    errors: dict[str, list[str]] = {}

    async def as_(name: str) -> Any:
        async def on_error(exc: Exception) -> None:
            errors.setdefault(name, []).append(str(exc))

        return await pair.system.nats_client(name, error_cb=on_error, allow_reconnect=False)

    service, balancer, admin = [await as_(name) for name in ("service", "balancer", "admin")]
    drain_first = f"gateway.drain.{pair.ids[0]}"
    forged_beat = f"$KV.courier_gateways.{pair.ids[0]}"
    pair.provoked += [drain_first, forged_beat]
    try:
        for nc in (service, balancer):
            await nc.publish(drain_first, b"")
        await balancer.publish(forged_beat, b"\x80")
        for nc in (service, balancer):
            await nc.flush()

        def refused(name: str, subject: str) -> bool:
            return any(f'permissions violation for publish to "{subject.lower()}"'
                       in error.lower() for error in errors.get(name, []))

        await wait_for(lambda: refused("service", drain_first) and refused(
            "balancer", drain_first) and refused("balancer", forged_beat), 10)
        reply = await admin.request(f"gateway.drain.{pair.ids[1]}", b"", timeout=5)
        assert msgspec.json.decode(reply.data)["code"] == "conflict"  # drains already
        first = (await known(pair.balancer))[pair.ids[0]]
        assert (first["draining"], first["healthy"]) == (False, True)
    finally:
        for nc in (service, balancer, admin):
            await nc.close()


async def _draining(balancer: str, gateway: str) -> bool:
    view = (await known(balancer))[gateway]
    return bool(view["draining"]) and not view["healthy"]


# ---------------------------------------------------------------------- dead gateways


async def test_a_dead_gateway_is_not_chosen_and_none_left_is_503(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    with System(tmp_path, store_env(request)) as system:
        system.add_gateway()
        balancer = system.add_balancer()
        survivor, dead = [await gateway_id(system.gateway_url(i)) for i in range(2)]
        creds = await system.device("dead-gw")
        system.gateways[1][0].kill()  # no drain, no goodbye: its beat expires (3 s here)

        async def gone() -> bool:
            return dead not in await known(balancer)

        await wait_for(gone, 15)
        chosen = {(await balancer_connect(balancer, creds.token)).gateway for _ in range(6)}
        assert chosen == {survivor}
        await asyncio.to_thread(system.gateways[0][0].stop)

        async def unhealthy() -> bool:
            return (await health(balancer))[0] == 503

        await wait_for(unhealthy, 15)
        status, problem, headers = await post_connect(
            balancer, {"Authorization": f"Bearer {creds.token}"})
        assert (status, problem["code"], problem["retry"]) == (503, "unavailable", True)
        assert headers["Retry-After"] == "2"
        assert not system.permission_violations()


# ---------------------------------------------------------------------- drain, end to end


async def test_a_drained_gateway_moves_its_clients_and_loses_nothing(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Receivers connect through the balancer (both gateways); a sender streams; SIGTERM on
    the first gateway moves its receivers (4012) to the other through the balancer; every
    accepted message reaches every receiver exactly once."""
    total, receivers_n = 300, 6
    with System(tmp_path, store_env(request)) as system:
        system.add_gateway()
        balancer = system.add_balancer()
        leaving = await gateway_id(system.gateway_url(0))
        receivers = []
        for i in range(receivers_n):
            client = CourierClient(system.url, await system.device(f"rx-{i}"),
                                   balancer=balancer)
            await client.connect()
            await client.sync()
            receivers.append(client)
        on_leaving = [c for c in receivers if c.gateway == leaving]
        assert 0 < len(on_leaving) < receivers_n  # the balancer spread them
        sender = CourierClient(system.url, await system.device("tx"), balancer=balancer)
        await sender.connect()
        accepted: list[str] = []

        async def stream() -> None:
            for n in range(total):
                client_id = f"m-{n}-{uuid.uuid4().hex[:6]}"
                while True:  # a send that got no accepted is resent with its client id
                    try:
                        reply = await sender.send(f"rx-{n % receivers_n}", str(n).encode(),
                                                  client_id=client_id)
                        break
                    except (ConnectionError, TimeoutError):
                        await sender.wait_connected()
                    except ClientError as exc:
                        assert exc.retry, exc
                accepted.append(reply.message_id)
                await asyncio.sleep(0.01)

        streaming = asyncio.create_task(stream())
        await wait_for(lambda: len(accepted) >= total // 4, 30)
        await asyncio.to_thread(system.gateways[0][0].stop)  # SIGTERM: drain, then exit
        await asyncio.wait_for(streaming, 120)
        got: dict[int, list[str]] = {i: [] for i in range(receivers_n)}

        async def collect(i: int) -> None:
            want = len(range(i, total, receivers_n))
            while len(got[i]) < want:
                got[i].append((await receivers[i].next_message(timeout=30)).message_id)

        await asyncio.gather(*(collect(i) for i in range(receivers_n)))
        delivered = [message for ids in got.values() for message in ids]
        assert sorted(delivered) == sorted(accepted)  # all of them, each once
        for client in on_leaving:
            assert client.closes[0] == CloseCode.MOVED and client.gateway != leaving
        for client in [*receivers, sender]:
            await client.close()
        assert not system.permission_violations()


# ---------------------------------------------------------------------- CLI


async def test_the_cli_chats_through_the_balancer(pair: Pair, tmp_path: Path) -> None:
    system, balancer = pair.system, pair.balancer
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    common = ("-m", "client", "--url", system.url, "--balancer", balancer)
    listener = await asyncio.create_subprocess_exec(
        sys.executable, *common, "listen", "--user", "cli-bob", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    watcher = await system.connect(await system.device("cli-watcher"), sync=False)
    try:
        async def bob_has_keys() -> bool:
            reply = await call(watcher, "POST", "/v1/keys/query", {"users": ["cli-bob"]})
            return "cli-bob" in reply["devices"]

        await wait_for(bob_has_keys, 30)
        sent = await asyncio.create_subprocess_exec(
            sys.executable, *common, "chat", "--user", "cli-alice", "--to", "cli-bob",
            env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(sent.communicate(b"hello via balancer\n"), 60)
        assert sent.returncode == 0, err.decode()
        assert listener.stdout is not None
        line = await asyncio.wait_for(listener.stdout.readline(), 30)
        assert line.decode().rstrip().endswith("cli-alice: hello via balancer"), line
    finally:
        if listener.returncode is None:
            listener.kill()
        await listener.wait()
        await watcher.close()


def test_the_cli_refuses_a_balancer_url_without_http() -> None:
    from client.cli import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--balancer", "ws://x", "listen", "--user", "a"])
    assert parse_args(["--balancer", "http://b:1", "listen", "--user", "a"]).balancer == \
        "http://b:1"
