"""Live 1:1 delivery between real clients through a real system."""

import asyncio

from tests.harness import System


async def test_two_users_exchange_messages_on_every_device(system: System) -> None:
    alice_phone = await system.connect(await system.device("alice", "alice-phone"))
    alice_laptop = await system.connect(await system.device("alice", "alice-laptop"))
    bob_phone = await system.connect(await system.device("bob", "bob-phone"))
    bob_tablet = await system.connect(await system.device("bob", "bob-tablet"))
    try:
        for i in range(20):
            await alice_phone.send("bob", f"a{i}".encode())
            await bob_phone.send("alice", f"b{i}".encode())
        for client, expected in (
            (bob_phone, [f"a{i}" for i in range(20)]),
            (bob_tablet, sorted([f"a{i}" for i in range(20)] + [f"b{i}" for i in range(20)],
                                key=lambda s: (int(s[1:]), s[0]))),
            (alice_laptop, None),
            (alice_phone, [f"b{i}" for i in range(20)]),
        ):
            count = 20 if client in (bob_phone, alice_phone) else 40
            got = [await client.next_message() for _ in range(count)]
            seqs = [m.seq for m in got]
            assert seqs == sorted(seqs)
            bodies = [m.body.decode() for m in got]
            if client is bob_phone or client is alice_phone:
                assert bodies == expected
            else:
                assert sorted(bodies) == sorted([f"a{i}" for i in range(20)]
                                                + [f"b{i}" for i in range(20)])
                assert [b for b in bodies if b[0] == "a"] == [f"a{i}" for i in range(20)]
        await asyncio.sleep(0.2)
        assert bob_phone.pending_messages() == 0
    finally:
        for client in (alice_phone, alice_laptop, bob_phone, bob_tablet):
            await client.close()
