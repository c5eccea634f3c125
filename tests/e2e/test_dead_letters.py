"""No envelope can stall a stream (issue 11, finding 1).

At the edge: integers past what the stores hold and documents nested too deep get typed
errors, with no traceback in the gateway's log, and the storage worker keeps storing. Behind
it: an envelope the store refuses is isolated and dead-lettered in the ``DLQ`` stream while
another pair of users keeps chatting and syncing, then listed, shown and replayed through the
admin API and ``python -m control``.
"""

import asyncio
import base64
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nats.js.api import PubAck

from client.sdk import ClientError, CourierClient
from runtime.config import PartitionsConfig
from schemas.bounds import MAX_INT
from schemas.envelopes import MessageEnvelope, decode_envelope
from schemas.errors import ErrorCode
from schemas.frames import Error
from schemas.partitions import partition_of_position, stream_seq_of
from schemas.subjects import msgs_stream
from tests.conftest import store_env
from tests.harness import System
from tests.pushkit import ADMIN_SECRET

DEAD_LETTERS = "/v1/admin/dead-letters"
POISONED = "d:alice:bob"
#: The test systems run with the default partition count.
PARTITIONS = PartitionsConfig().count


@pytest.fixture(scope="module")
def admin_system(tmp_path_factory: pytest.TempPathFactory,
                 request: pytest.FixtureRequest) -> Iterator[System]:
    system = System(tmp_path_factory.mktemp("dlq"),
                    {**store_env(request), "COURIER_AUTH_ADMIN_SECRET": ADMIN_SECRET}).start()
    try:
        yield system
    finally:
        system.stop()


async def call(system: System, method: str, path: str, *, token: str | None = ADMIN_SECRET,
               data: bytes | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.request(
            method, f"{system.url}{path}", data=data, headers=headers) as response:
        raw = await response.read()
        return response.status, json.loads(raw) if raw else None


async def next_error(client: CourierClient) -> Error:
    return await asyncio.wait_for(client.errors.get(), 10)


async def publish(system: System, subject: str, data: bytes, stream: str,
                  credential: str = "gateway") -> PubAck:
    """Publish straight to a stream, as a buggy process holding ``credential`` could."""
    nc = await system.nats_client(credential)
    try:
        return await nc.jetstream().publish(subject, data, stream=stream)
    finally:
        await nc.close()


def gateway_log(system: System) -> str:
    return (system.logs / "gateway-0.log").read_text()


# ---------------------------------------------------------------- bounds at the edge


@pytest.mark.parametrize("frame", [
    '{"type":"read","conversation":"d:alice:bob","seq":%d}',
    '{"type":"ack","messages":[{"id":"m1","seq":%d,"conversation":"d:alice:bob"}]}',
    '{"type":"sync","after":%d,"id":"s1"}',
])
async def test_integers_past_the_stores_get_invalid_and_storage_keeps_storing(
        admin_system: System, frame: str) -> None:
    system = admin_system
    bob_creds = await system.device("bob")
    alice = await system.connect(await system.device("alice"))
    try:
        for past in (MAX_INT + 1, 2**64, 2**64 + 1, 10**40):
            await alice.send_raw(frame % past)
            error = await next_error(alice)
            assert (error.code, error.retry) == (ErrorCode.INVALID, False), error.message
        # The storage worker still stores: a message sent after them is in bob's backlog
        # (on the old code the receipt with seq 2^63 stalled it and this sync failed).
        sentinel = await alice.send("bob", b"after the big numbers")
        bob = await system.connect(bob_creds, sync=False)
        try:
            await bob.sync(timeout=20)
            received: list[str] = []
            while sentinel.message_id not in received:  # fails on the timeout of next_message
                received.append((await bob.next_message()).message_id)
        finally:
            await bob.close()
    finally:
        await alice.close()
    assert "frame_failed" not in gateway_log(system)


async def test_deep_frames_get_bad_frame_without_a_traceback(admin_system: System) -> None:
    system = admin_system
    alice = await system.connect(await system.device("alice"))
    try:
        for depth in (33, 1000, 20_000):
            nested = "[" * depth + "]" * depth
            await alice.send_raw('{"type":"read","conversation":"d:alice:bob","x":' + nested + "}")
            error = await next_error(alice)
            assert error.code == ErrorCode.BAD_FRAME and "levels deep" in error.message
        await alice.ping()  # the connection still works
    finally:
        await alice.close()
    log = gateway_log(system)
    assert "RecursionError" not in log and "frame_failed" not in log


async def test_rest_integers_past_the_stores_are_refused_naming_the_parameter(
        admin_system: System) -> None:
    system = admin_system
    await system.device("bob")
    token = (await system.device("alice")).token
    history = "/v1/conversations/d:alice:bob/messages"
    for path, param in ((f"{history}?before={MAX_INT + 1}", "before"),
                        (f"{history}?after={2**64 + 1}", "after"),
                        (f"{history}?before=-1", "before"),
                        (f"/v1/admin/audit?after={MAX_INT + 1}", "after"),
                        (f"/v1/admin/audit?after={2**64}", "after"),
                        (f"{DEAD_LETTERS}?after={MAX_INT + 1}", "after")):
        secret = ADMIN_SECRET if path.startswith("/v1/admin") else token
        status, body = await call(system, "GET", path, token=secret)
        assert (status, body["code"]) == (422, "invalid"), (path, body)
        assert f"'{param}'" in body["detail"]
    for path, secret in ((f"{history}?before={MAX_INT}", token),
                         (f"{history}?after={MAX_INT}", token),
                         (f"/v1/admin/audit?after={MAX_INT}", ADMIN_SECRET)):
        status, body = await call(system, "GET", path, token=secret)
        assert status == 200, (path, body)
    nested = b'{"user":' + b"[" * 1000 + b"]" * 1000 + b"}"
    for path, secret in (("/v1/dev/devices", None), ("/v1/admin/control", ADMIN_SECRET)):
        status, body = await call(system, "POST", path, token=secret, data=nested)
        assert (status, body["code"]) == (400, "bad_frame"), body
    log = gateway_log(system)
    assert "request_failed" not in log and "Traceback" not in log


# ---------------------------------------------------------------- isolation and dead letters


class Chat:
    """Carol sends numbered messages to dave, who takes each one live and syncs after every
    few: counts rounds, and records every sync that failed."""

    def __init__(self, carol: CourierClient, dave: CourierClient) -> None:
        self.carol = carol
        self.dave = dave
        self.rounds = 0
        self.syncs = 0
        self.sync_failures: list[str] = []
        self.bodies: list[bytes] = []
        self.stop = asyncio.Event()

    async def run(self) -> None:
        while not self.stop.is_set():
            body = f"chat {self.rounds}".encode()
            accepted = await self.carol.send("dave", body)
            got = await self.dave.next_message(timeout=20)
            assert (got.message_id, got.body) == (accepted.message_id, body)
            self.bodies.append(body)
            if self.rounds % 3 == 0:
                try:
                    await self.dave.sync(timeout=30)
                    self.syncs += 1
                except ClientError as exc:
                    self.sync_failures.append(f"{exc.code}: {exc}")
            self.rounds += 1

    async def until(self, rounds: int, within_s: float = 60.0) -> None:
        deadline = time.monotonic() + within_s
        while self.rounds < rounds:
            assert time.monotonic() < deadline, f"chat stalled at round {self.rounds}"
            await asyncio.sleep(0.02)


def stream_of(seq: int) -> tuple[str, int]:
    """The partition stream and stream sequence of an accepted message's position."""
    return (msgs_stream(partition_of_position(seq, PARTITIONS)),
            stream_seq_of(seq, PARTITIONS))


async def dead_letter_of(system: System, stream: str, stream_seq: int, worker: str,
                         within_s: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while True:
        status, page = await call(system, "GET", f"{DEAD_LETTERS}?limit=200")
        assert status == 200, page
        for letter in page["dead_letters"]:
            if (letter["stream"], letter["stream_seq"], letter["worker"]) == (
                    stream, stream_seq, worker):
                return dict(letter)
        assert time.monotonic() < deadline, f"no dead letter for {stream_seq}: {page}"
        await asyncio.sleep(0.1)


def inject_fault(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(f"""CREATE TRIGGER poison BEFORE INSERT ON messages
                         WHEN NEW.conversation = '{POISONED}'
                         BEGIN SELECT RAISE(ABORT, 'injected'); END""")


def remove_fault(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TRIGGER poison")


@pytest.mark.timeout(180)
async def test_an_envelope_the_store_refuses_is_dead_lettered_while_others_keep_chatting(
        tmp_path: Path) -> None:
    # SQLite on purpose: the fault is a trigger in the real database file the worker writes.
    system = System(tmp_path, {"COURIER_AUTH_ADMIN_SECRET": ADMIN_SECRET}).start()
    try:
        bob_creds = await system.device("bob")  # offline: gets the message from the store
        alice = await system.connect(await system.device("alice"))
        carol = await system.connect(await system.device("carol"))
        dave = await system.connect(await system.device("dave"))
        inject_fault(system.root / "courier.db")
        chat = Chat(carol, dave)
        chatting = asyncio.create_task(chat.run())
        try:
            await chat.until(5)
            poisoned = await alice.send("bob", b"refused by the store")
            letter = await dead_letter_of(system, *stream_of(poisoned.seq), "storage")
            await chat.until(chat.rounds + 10)  # the stream moved on: chat and syncs go on
        finally:
            chat.stop.set()
            await chatting
        assert chat.sync_failures == []
        assert chat.syncs >= 5
        stream, stream_seq = stream_of(poisoned.seq)
        partition = partition_of_position(poisoned.seq, PARTITIONS)
        assert letter["subject"] == f"msgs.{partition}.chat" and letter["stream"] == stream
        assert letter["attempts"] == 3 and "injected" in letter["error"]
        assert "IntegrityError" in letter["error"]

        # Everything carol sent is stored (dave's history), and a sentinel after it too.
        sentinel = await carol.send("dave", b"sentinel")
        assert (await dave.next_message()).message_id == sentinel.message_id
        status, page = await dave.api("GET", "/v1/conversations/d:carol:dave/messages?limit=200")
        assert status == 200
        stored = [base64.b64decode(item["message"]["body"]) for item in page["items"]]
        assert stored == [*chat.bodies, b"sentinel"]

        # Inspect, then replay once the fault is gone: bob gets the message from his backlog.
        status, detail = await call(system, "GET", f"{DEAD_LETTERS}/{letter['seq']}")
        assert status == 200
        assert detail["headers"]["Courier-Worker"] == "storage"
        assert detail["headers"]["Courier-Stream-Seq"] == str(stream_seq)
        envelope = decode_envelope(base64.b64decode(detail["payload"]))
        assert isinstance(envelope, MessageEnvelope)
        assert envelope.id == poisoned.message_id and envelope.conversation == POISONED
        remove_fault(system.root / "courier.db")
        status, replayed = await call(system, "POST", f"{DEAD_LETTERS}/{letter['seq']}/replay")
        assert status == 200, replayed
        assert replayed["subject"] == letter["subject"] and replayed["stream_seq"] > stream_seq
        status, _ = await call(system, "GET", f"{DEAD_LETTERS}/{letter['seq']}")
        assert status == 404
        bob = await system.connect(bob_creds, sync=False)
        try:
            await bob.sync(timeout=30)
            message = await bob.next_message()
            assert (message.message_id, message.body) == (poisoned.message_id,
                                                          b"refused by the store")
        finally:
            await bob.close()
        for client in (alice, carol, dave):
            await client.close()
    finally:
        system.stop()


async def test_undecodable_envelopes_are_dead_lettered_by_both_workers(
        admin_system: System) -> None:
    """Before, they went to core NATS subjects nobody listened to."""
    system = admin_system
    ack = await publish(system, "msgs.0.chat", b"\xc1 not msgpack", stream="MSGS_0")
    for worker in ("storage", "router"):
        letter = await dead_letter_of(system, "MSGS_0", ack.seq, worker)
        assert letter["attempts"] == 0 and letter["subject"] == "msgs.0.chat"
        assert letter["error"].startswith(("DecodeError", "ValidationError"))
    # and the stream goes on
    await system.device("bob")
    alice = await system.connect(await system.device("alice"))
    try:
        await alice.send("bob", b"after poison")
        await alice.sync(timeout=20)
    finally:
        await alice.close()


async def test_dead_letter_routes_refuse_bad_input(admin_system: System) -> None:
    system = admin_system
    junk = await publish(system, "dlq.router", b"junk", stream="DLQ",  # no Courier-* headers
                         credential="router")
    status, body = await call(system, "GET", f"{DEAD_LETTERS}/{junk.seq}")
    assert status == 200 and body["worker"] == "" and body["dlq_subject"] == "dlq.router"
    status, body = await call(system, "POST", f"{DEAD_LETTERS}/{junk.seq}/replay")
    assert (status, body["code"]) == (409, "conflict")
    missing = MAX_INT
    cases: list[tuple[str, str, str | None, int, str]] = [
        ("GET", DEAD_LETTERS, None, 401, "unauthorized"),
        ("GET", DEAD_LETTERS, "wrong-secret", 401, "unauthorized"),
        ("GET", f"{DEAD_LETTERS}/1", None, 401, "unauthorized"),
        ("POST", f"{DEAD_LETTERS}/1/replay", None, 401, "unauthorized"),
        ("DELETE", f"{DEAD_LETTERS}/1", None, 401, "unauthorized"),
        ("GET", f"{DEAD_LETTERS}?limit=0", ADMIN_SECRET, 422, "invalid"),
        ("GET", f"{DEAD_LETTERS}?limit=201", ADMIN_SECRET, 422, "invalid"),
        ("GET", f"{DEAD_LETTERS}?after=-1", ADMIN_SECRET, 422, "invalid"),
        ("GET", f"{DEAD_LETTERS}?after=x", ADMIN_SECRET, 422, "invalid"),
        ("GET", f"{DEAD_LETTERS}/0", ADMIN_SECRET, 422, "invalid"),
        ("GET", f"{DEAD_LETTERS}/x", ADMIN_SECRET, 422, "invalid"),
        ("GET", f"{DEAD_LETTERS}/{MAX_INT + 1}", ADMIN_SECRET, 422, "invalid"),
        ("POST", f"{DEAD_LETTERS}/{MAX_INT + 1}/replay", ADMIN_SECRET, 422, "invalid"),
        ("DELETE", f"{DEAD_LETTERS}/-5", ADMIN_SECRET, 422, "invalid"),
        ("GET", f"{DEAD_LETTERS}/{missing}", ADMIN_SECRET, 404, "not_found"),
        ("POST", f"{DEAD_LETTERS}/{missing}/replay", ADMIN_SECRET, 404, "not_found"),
        ("DELETE", f"{DEAD_LETTERS}/{missing}", ADMIN_SECRET, 404, "not_found"),
        ("PUT", f"{DEAD_LETTERS}/1", ADMIN_SECRET, 422, "invalid"),
    ]
    for method, path, secret, expected, code in cases:
        status, body = await call(system, method, path, token=secret)
        assert (status, body["code"]) == (expected, code), (method, path, body)
    for limit in (1, 200):  # at the bounds
        status, body = await call(system, "GET", f"{DEAD_LETTERS}?limit={limit}")
        assert status == 200 and len(body["dead_letters"]) <= limit
    status, body = await call(system, "GET", f"{DEAD_LETTERS}?after={MAX_INT}")
    assert status == 200 and body == {"dead_letters": [], "next_after": None}
    status, _ = await call(system, "DELETE", f"{DEAD_LETTERS}/{junk.seq}")
    assert status == 204
    status, _ = await call(system, "GET", f"{DEAD_LETTERS}/{junk.seq}")
    assert status == 404
    status, document = await call(system, "GET", "/openapi.json", token=None)
    seq = document["paths"][f"{DEAD_LETTERS}/{{seq}}"]["get"]["parameters"][0]
    assert seq["schema"] == {"type": "integer", "minimum": 1, "maximum": MAX_INT}
    assert f"{DEAD_LETTERS}/{{seq}}/replay" in document["paths"]


def cli(system: System, *args: str, secret: str | None = ADMIN_SECRET,
        url: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "control", "--url", url or system.url]
    if secret is not None:
        argv += ["--secret", secret]
    env = {"PATH": "/usr/bin:/bin"}
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=60, env=env,
                          cwd=Path(__file__).resolve().parents[2])


async def test_the_operator_cli_lists_shows_replays_and_deletes(admin_system: System) -> None:
    system = admin_system
    junk = await publish(system, "dlq.storage", b"by hand", stream="DLQ",
                         credential="storage_worker")
    listed = cli(system, "dead-letters", "list", "--after", str(junk.seq - 1), "--limit", "1")
    assert listed.returncode == 0, listed.stderr
    page = json.loads(listed.stdout)
    assert [letter["seq"] for letter in page["dead_letters"]] == [junk.seq]
    shown = cli(system, "dead-letters", "show", str(junk.seq))
    assert shown.returncode == 0 and base64.b64decode(
        json.loads(shown.stdout)["payload"]) == b"by hand"
    replayed = cli(system, "dead-letters", "replay", str(junk.seq))
    assert replayed.returncode == 1 and "conflict" in replayed.stderr
    deleted = cli(system, "dead-letters", "delete", str(junk.seq))
    assert deleted.returncode == 0, deleted.stderr
    again = cli(system, "dead-letters", "show", str(junk.seq))
    assert again.returncode == 1 and "not_found" in again.stderr
    wrong = cli(system, "dead-letters", "list", secret="wrong")
    assert wrong.returncode == 1 and "unauthorized" in wrong.stderr


@pytest.mark.parametrize("args", [
    ["dead-letters", "show", "0"],
    ["dead-letters", "show", str(MAX_INT + 1)],
    ["dead-letters", "show", "x"],
    ["dead-letters", "replay", "-1"],
    ["dead-letters", "delete"],
    ["dead-letters", "list", "--limit", "0"],
    ["dead-letters", "list", "--limit", "201"],
    ["dead-letters", "list", "--after", "-1"],
    ["dead-letters", "list", "--after", str(MAX_INT + 1)],
    ["dead-letters", "explode"],
    ["nothing"],
])
def test_the_operator_cli_refuses_bad_arguments(admin_system: System, args: list[str]) -> None:
    result = cli(admin_system, *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr


def test_the_operator_cli_needs_a_secret_and_a_gateway(admin_system: System) -> None:
    no_secret = cli(admin_system, "dead-letters", "list", secret=None)
    assert no_secret.returncode == 2 and "COURIER_AUTH_ADMIN_SECRET" in no_secret.stderr
    bad_url = cli(admin_system, "dead-letters", "list", url="ftp://x")
    assert bad_url.returncode == 2 and "--url" in bad_url.stderr
    from infra.nats_server import free_port

    down = cli(admin_system, "dead-letters", "list", url=f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 1 and "cannot reach" in down.stderr
    assert "Traceback" not in down.stderr
