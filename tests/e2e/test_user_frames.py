"""Ephemeral user frames through a real system (``gateway.handlers.user_channel``): a typing
frame to a group spread over two gateways reaches every other member's devices once, and
crosses to the other gateway as one ``UserFrames`` naming the users there, not one message per
user; a malformed ``UserFrames`` is counted and the gateway goes on."""

from collections.abc import Awaitable

import msgspec
from nats.aio.msg import Msg

from client.sdk import CourierClient
from schemas.edge import UserFrames, decode_user_frames
from schemas.frames import UserTyping
from schemas.subjects import user_frames_subject
from tests.e2e.social_helpers import call, next_of, wait_for
from tests.e2e.test_edge import metric
from tests.e2e.test_socket_memory import metrics
from tests.harness import System

MEMBERS = 12


async def test_typing_crosses_to_each_other_gateway_once_for_all_its_users(
        system: System) -> None:
    system.add_gateway()
    users = [f"t{i:02d}" for i in range(MEMBERS)]
    devices: dict[str, CourierClient] = {}
    for index, user in enumerate(users):
        devices[f"{user}-a"] = await system.connect(
            await system.device(user, f"{user}-a"), system.gateway_url(index % 2))
    devices["t01-b"] = await system.connect(  # a second device, on the typist's gateway
        await system.device("t01", "t01-b"), system.gateway_url(0))
    gateway_of = {name: client.welcome.gateway for name, client in devices.items()
                  if client.welcome is not None}
    other_gateway = next(gw for gw in gateway_of.values() if gw != gateway_of["t00-a"])
    tap_nc = await system.nats_client("gateway")
    crossed: list[tuple[str, UserFrames]] = []

    async def record(msg: Msg) -> None:
        crossed.append((msg.subject, decode_user_frames(msg.data)))

    try:
        await tap_nc.subscribe(user_frames_subject("*"), cb=record)
        await tap_nc.flush()
        typist = devices["t00-a"]
        await call(typist, "POST", "/v1/groups", {"id": "typists", "members": users[1:]}, 201)
        for client in devices.values():  # the group's creation message
            assert (await client.next_message()).kind == "system"
        await typist.send_typing("g:typists")
        await typist.send_typing("g:typists", active=False)
        started, stopped = (UserTyping(conversation="g:typists", user="t00", active=active)
                            for active in (True, False))
        for name, client in devices.items():
            if name != "t00-a":  # each device hears each frame once, in order
                heard = [await next_of(client.typing, lambda t: True) for _ in range(2)]
                assert heard == [started, stopped], name
        await wait_for(lambda: len(crossed) == 2)
        # one message per frame for the other gateway, none for the typist's own: its
        # members' sockets there get the frame without NATS
        assert [subject for subject, _ in crossed] == [f"usr.{other_gateway}"] * 2
        there = sorted(name.removesuffix("-a") for name, gw in gateway_of.items()
                       if gw == other_gateway)
        for (_, frames), expected in zip(crossed, (started, stopped), strict=True):
            assert frames.app == "default" and sorted(frames.users) == there
            assert msgspec.json.decode(frames.frame, type=UserTyping) == expected
    finally:
        await tap_nc.close()
        for client in devices.values():
            await client.close()


async def test_a_malformed_user_frames_message_is_counted_and_the_gateway_goes_on(
        system: System) -> None:
    alice = await system.connect(await system.device("alice"))
    bob = await system.connect(await system.device("bob"))
    assert alice.welcome is not None
    gateway = alice.welcome.gateway
    nc = await system.nats_client("gateway")
    try:
        for bad in (b"\xc1", msgspec.msgpack.encode(["default", [], b"{}"]),
                    msgspec.msgpack.encode(["default", ["u"] * 1001, b"{}"]),
                    msgspec.msgpack.encode(["default", ["alice"], b"\xff\xfe"])):
            await nc.publish(user_frames_subject(gateway), bad)
        await nc.flush()

        async def malformed() -> float:
            return metric(await metrics(system.url), "courier_gateway_user_frames_malformed_total")

        await wait_for(lambda: _at_least(malformed(), 4))
        assert await malformed() == 4  # one subscription, in order: all four were read
        assert alice.typing.empty()
        await call(alice, "POST", "/v1/contacts/requests", {"user": "bob"})
        assert (await next_of(bob.contacts, lambda c: True)).user == "alice"  # still served
    finally:
        await nc.close()
        await alice.close()
        await bob.close()


async def _at_least(value: Awaitable[float], bound: float) -> bool:
    return await value >= bound
