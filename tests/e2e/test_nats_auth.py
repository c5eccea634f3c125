"""The bus is not a back door: the real nats-server, started with the generated credentials and
permissions, refuses anonymous connections and everything a credential was not granted.

Each refusal is read from the server's permission-violation error; that nothing got through is
checked after a sentinel (a legitimate message, RPC or action) went the same way."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import nkeys
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client import REGISTRY

from infra.nats_auth import SEED_ENV, new_seed
from runtime.config import load_config
from runtime.natsconn import close, connect
from schemas.envelopes import MessageEnvelope, encode_envelope
from schemas.frames import Destination, Sender
from schemas.nats_permissions import CREDENTIALS, GATEWAY
from tests.conftest import store_env
from tests.harness import System
from tests.pushkit import ADMIN_SECRET, wait_until

OUTSIDERS = [c.name for c in CREDENTIALS if c.name != GATEWAY]


@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory,
        request: pytest.FixtureRequest) -> Iterator[System]:
    """A system the tests attack on the bus (refusals are expected in its NATS log)."""
    system = System(tmp_path_factory.mktemp("natsauth"),
                    {**store_env(request), "COURIER_AUTH_ADMIN_SECRET": ADMIN_SECRET}).start()
    try:
        yield system
    finally:
        system.stop()


class Probe:
    """A connection as one credential that records the server's refusals."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.errors: list[str] = []
        self.received: list[Msg] = []
        self.nc: Client | None = None

    async def connect(self, system: System) -> "Probe":
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        self.nc = await system.nats_client(self.name, error_cb=on_error, allow_reconnect=False)
        return self

    async def record(self, msg: Msg) -> None:
        self.received.append(msg)

    async def refused(self, verb: str, subject: str) -> None:
        """Wait for the server's refusal of ``verb`` ("publish" or "subscription")."""
        expected = f'permissions violation for {verb} to "{subject}"'
        await wait_until(lambda: any(expected in error for error in self.errors), within_s=10)

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()


def forged(sender: str, recipient: str, body: bytes) -> bytes:
    """An envelope "from" ``sender``, as only a gateway may publish it."""
    return encode_envelope(MessageEnvelope(
        id="m" + os.urandom(16).hex(), kind="chat", app="default", module="chat",
        sender=Sender(user=sender, device=f"{sender}-phone"),
        to=Destination(kind="user", id=recipient),
        conversation=":".join(("d", *sorted((sender, recipient)))),
        ts=int(time.time() * 1000), receipt=False, body=body))


async def refused_connection(url: str, **options: Any) -> str:
    """The error with which the server refused a connection (its socket closed after)."""
    async def quiet(exc: Exception) -> None:
        pass

    client = Client()
    try:
        with pytest.raises(nats.errors.Error) as refused:
            await client.connect(url, allow_reconnect=False, error_cb=quiet, **options)
    finally:
        await client.close()  # nats-py leaves the refused socket open otherwise
    return str(refused.value)


async def test_an_anonymous_connection_and_an_unknown_key_are_refused(bus: System,
                                                                       tmp_path: Path) -> None:
    assert "Authorization Violation" in await refused_connection(bus.nats.url)
    stranger = tmp_path / "stranger.nk"
    stranger.write_bytes(new_seed())
    assert "Authorization Violation" in await refused_connection(bus.nats.url,
                                                                 nkeys_seed=str(stranger))


async def test_no_credential_but_a_gateways_can_inject_envelopes_or_read_deliveries(
        bus: System) -> None:
    bob = await bus.connect(await bus.device("bob", "bob-phone"))
    alice = await bus.connect(await bus.device("alice", "alice-phone"))
    assert bob.welcome is not None
    probes = [await Probe(name).connect(bus) for name in OUTSIDERS]
    try:
        for probe in probes:
            assert probe.nc is not None
            await probe.nc.subscribe("edge.*", cb=probe.record)
            await probe.nc.subscribe(f"edge.{bob.welcome.gateway}", cb=probe.record)
            await probe.nc.publish("msgs.chat", forged("alice", "bob", probe.name.encode()))
            # an attach marker would send bob's frames to a gateway of the forger's choosing
            await probe.nc.publish("msgs.0.attach", b"\x80")
            await probe.nc.flush()
        for probe in probes:
            await probe.refused("publish", "msgs.chat")
            await probe.refused("publish", "msgs.0.attach")
            await probe.refused("subscription", "edge.*")
            await probe.refused("subscription", f"edge.{bob.welcome.gateway}")
        accepted = await alice.send("bob", b"sentinel")  # the barrier: after every forgery
        first = await bob.next_message()
        assert (first.message_id, first.body) == (accepted.message_id, b"sentinel")
        status, page = await bob.api("GET", "/v1/conversations/d:alice:bob/messages")
        assert status == 200 and isinstance(page, dict)
        assert [item["message"]["body"] for item in page["items"]] == ["c2VudGluZWw="]
        for probe in probes:
            assert probe.received == [], f"{probe.name} read a delivery"
    finally:
        for probe in probes:
            await probe.close()
        await alice.close()
        await bob.close()


async def test_a_gateway_credential_cannot_apply_control_nor_answer_the_storage_rpc(
        bus: System) -> None:
    victim = await bus.device("victim", "victim-phone")
    await bus.device("sentinel", "sentinel-phone")
    gateway = await Probe(GATEWAY).connect(bus)
    admin = await Probe("admin").connect(bus)
    try:
        assert gateway.nc is not None and admin.nc is not None
        await gateway.nc.subscribe("store.rpc.*", cb=gateway.record)
        await gateway.nc.subscribe("store.rpc.get_user", queue="storage", cb=gateway.record)
        disable = {"action": "disable", "target": {"kind": "user", "id": "victim"},
                   "actor": "mallory"}
        await gateway.nc.publish("control.apply", json.dumps(disable).encode())
        await gateway.nc.flush()
        await gateway.refused("subscription", "store.rpc.*")
        await gateway.refused("subscription", "store.rpc.get_user")
        await gateway.refused("publish", "control.apply")
        # Sentinels: a storage RPC (a device registration) and an administrator's action.
        await bus.device("sentinel", "sentinel-laptop")
        reply = await admin.nc.request("control.apply", json.dumps(
            {**disable, "target": {"kind": "user", "id": "sentinel"},
             "actor": "ops-ann"}).encode(), timeout=15)
        assert json.loads(reply.data)["r"] == "ok"
        assert gateway.received == [], "a gateway credential received storage requests"
        client = await bus.connect(victim)  # not disabled: the upgrade is accepted
        await client.close()
        async with aiohttp.ClientSession() as session, session.get(
                f"{bus.url}/v1/admin/audit",
                headers={"Authorization": f"Bearer {ADMIN_SECRET}"}) as response:
            assert response.status == 200
            audit: dict[str, Any] = await response.json()
        assert [e["record"]["target"]["id"] for e in audit["entries"]] == ["sentinel"]
    finally:
        await gateway.close()
        await admin.close()


async def test_a_service_credential_sends_notifications_and_reads_no_deliveries(
        bus: System) -> None:
    carol = await bus.connect(await bus.device("carol", "carol-phone"))
    service = await Probe("service").connect(bus)
    try:
        assert service.nc is not None
        await service.nc.subscribe("edge.>", cb=service.record)
        await service.nc.subscribe("store.rpc.*", cb=service.record)
        await service.nc.publish("store.rpc.get_user", b"\x81\xa4user\xa5carol")
        await service.refused("subscription", "edge.>")
        await service.refused("subscription", "store.rpc.*")
        await service.refused("publish", "store.rpc.get_user")
        reply = await service.nc.request("notify.send", json.dumps({
            "service": "billing", "notifications": [{
                "id": "invoice-1", "to": {"kind": "user", "id": "carol"},
                "body": "aW52b2ljZQ=="}]}).encode(), timeout=15)
        assert json.loads(reply.data)["r"] == "ok", reply.data
        notification = await carol.next_message()  # the sentinel: it went through edge.<gateway>
        assert (notification.kind, notification.body) == ("notification", b"invoice")
        assert service.received == []
    finally:
        await service.close()
        await carol.close()


def run_router(system: System, seed_file: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **system.env("router"), SEED_ENV: seed_file}
    return subprocess.run([sys.executable, "-m", "router"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


BAD_SEEDS = {"empty": b"", "garbage": b"not a seed",
             "an account's seed": nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_ACCOUNT)}


@pytest.mark.parametrize("case", ["missing", *BAD_SEEDS])
def test_a_service_with_a_bad_or_missing_seed_file_exits_2_naming_the_key(
        bus: System, tmp_path: Path, case: str) -> None:
    seed = tmp_path / "router.nk"
    if case != "missing":
        seed.write_bytes(BAD_SEEDS[case])
    result = run_router(bus, str(seed))
    assert result.returncode == 2, result.stderr
    assert SEED_ENV in result.stderr


def test_a_service_whose_seed_the_server_does_not_know_fails_naming_the_key(
        bus: System, tmp_path: Path) -> None:
    seed = tmp_path / "router.nk"
    seed.write_bytes(new_seed())
    result = run_router(bus, str(seed))
    assert result.returncode != 0
    assert f"{SEED_ENV}: nats-server refused the router credential" in result.stderr


def refusals_counted() -> float:
    return REGISTRY.get_sample_value("courier_nats_errors_total", {"kind": "permission"}) or 0.0


async def test_a_refused_publish_of_a_service_is_counted(bus: System) -> None:
    nc = await connect(load_config(bus.env("router")).nats, "router-probe", "router")
    try:
        before = refusals_counted()
        await nc.publish("msgs.chat", forged("alice", "bob", b"x"))
        await nc.flush()
        await wait_until(lambda: refusals_counted() == before + 1)
    finally:
        await close(nc)
