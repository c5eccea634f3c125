"""The marker search: a unique plaintext sent 1:1 and to a group through the real system is
read by its recipients and found nowhere the server holds or carried it: not in the store
(SQLite file and its WAL; Cassandra's data and commit log directories under ``STORE=cassandra``),
the JetStream store directory, any NATS message (a subscriber on ``>`` with a test-only
all-permissions user), any service log, any push payload (an offline device's wake-up goes
through the log provider and the ``PUSH`` stream, both searched).

A plain (unencrypted) control marker sent the same way is found in the store, in JetStream and
on the bus, so the search can see a plaintext where one is.
"""

import base64
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from infra.cassandra_node import CassandraNode
from infra.nats_auth import new_seed
from infra.nats_server import NatsServer
from runtime.nkey import user_public_key
from tests.conftest import store_env
from tests.e2e.e2ee_helpers import close_all, next_text, secure_device
from tests.e2e.social_helpers import call, wait_for
from tests.harness import System
from tests.pushkit import register_push


class Spied(System):
    """A system whose nats-server also admits ``spy_seed``, a user with every permission."""

    def __init__(self, root: Path, extra_env: dict[str, str]) -> None:
        super().__init__(root, extra_env)
        seed = new_seed()
        self.spy_seed = root / "spy.nk"
        self.spy_seed.write_bytes(seed + b"\n")
        authorization = self.nats_credentials.authorization().replace(
            "  users = [\n", f'  users = [\n    {{nkey: "{user_public_key(seed)}"}},\n', 1)
        self.nats = NatsServer(root / "nats", log_file=self.logs / "nats.log",
                               authorization=authorization)


@pytest.fixture
def spied(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Spied]:
    with Spied(tmp_path / "server", store_env(request)) as system:
        yield system
    assert not system.permission_violations()


def needles(marker: bytes) -> list[bytes]:
    """The marker as is and base64-encoded at each alignment (bodies travel in base64)."""
    found = [marker]
    for pad in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(bytes(pad) + marker)
            found.append(encoded[4 if pad else 0:-4])
    return found


def files_with(root: Path, marker: bytes) -> list[Path]:
    wanted = needles(marker)
    return [path for path in root.rglob("*") if path.is_file()
            and any(needle in path.read_bytes() for needle in wanted)]


def in_messages(seen: list[bytes], marker: bytes) -> bool:
    wanted = needles(marker)
    return any(needle in data for data in seen for needle in wanted)


async def test_marker_is_decrypted_by_recipients_and_found_nowhere_on_the_server(
        spied: Spied, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    direct_marker = f"direct-{secrets.token_hex(16)}"
    group_marker = f"group-{secrets.token_hex(16)}"
    control = f"plain-{secrets.token_hex(16)}".encode()
    bus: list[bytes] = []

    async def overhear(msg: Msg) -> None:
        bus.append(msg.subject.encode() + b" " + repr(msg.headers).encode() + b" " + msg.data)

    clients = tmp_path / "clients"
    alice = await secure_device(spied, "alice", "alice-phone", clients)
    bob = await secure_device(spied, "bob", "bob-phone", clients)
    carol = await secure_device(spied, "carol", "carol-phone", clients)
    tablet = await secure_device(spied, "bob", "bob-tablet", clients)
    # Listening from here on (the storage worker serves its RPC by now: a subscriber on ">"
    # is a responder to every request, so before it would turn "no responders" into waits).
    spy = await nats.connect(spied.nats.url, nkeys_seed=str(spied.spy_seed))
    await spy.subscribe(">", cb=overhear)
    await spy.flush()
    try:
        await register_push(spied.url, tablet.client.credentials.token, "fcm", "tablet-push")
        await tablet.client.close()  # offline: what it gets is pushed (log provider)
        await call(alice.client, "POST", "/v1/groups",
                   {"id": "secret", "members": ["bob", "carol"]}, 201)
        await alice.send_text("bob", direct_marker)
        await alice.send_group_text("secret", group_marker)
        assert await next_text(bob) == direct_marker
        assert await next_text(bob) == group_marker
        assert await next_text(carol) == group_marker
        accepted = await alice.client.send("bob", control)  # the control, sent last
        await call(bob.client, "GET", f"/v1/messages/{accepted.message_id}")  # stored
        push_log = spied.logs / "push_worker.log"
        await wait_for(lambda: push_log.exists() and "bob-tablet" in push_log.read_text(), 20)
        await wait_for(lambda: in_messages(bus, control))
        await spy.flush()
        roots = [spied.root]
        store = spied.root / "courier.db"  # and its -wal
        if os.environ.get("STORE") == "cassandra":
            node: CassandraNode = request.getfixturevalue("cassandra_node")
            store = node.data_dir  # sstables and the commit log
            roots.append(store)
        # The control is where a plaintext would be: the search sees it.
        hits = [path for root in roots for path in files_with(root, control)]
        assert any(str(path).startswith(str(store)) for path in hits), hits
        assert any("jetstream" in str(path) for path in hits), hits
        assert in_messages(bus, control)
        for marker in (direct_marker.encode(), group_marker.encode()):
            assert [path for root in roots for path in files_with(root, marker)] == []
            assert not in_messages(bus, marker)
    finally:
        await spy.close()
        await close_all(alice, bob, carol)
