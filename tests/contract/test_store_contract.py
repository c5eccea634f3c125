"""The storage contract: every ``MessageStore`` backend must pass every test here, with one
partition and with four (``partitions``): seqs are positions (``schemas.partitions``), built
with ``at`` for the conversation they belong to."""

import random
from dataclasses import dataclass, field

import pytest

from runtime.config import StoreConfig
from schemas.envelopes import DeviceAcks, MessageEnvelope
from schemas.frames import AckItem, Destination, Sender
from schemas.ids import direct_conversation
from schemas.partitions import (
    MAX_PARTITIONS,
    decode_cursor,
    empty_cursor,
    encode_cursor,
    partition_of,
    position,
)
from storage_worker.store.base import (
    ArchiveMark,
    MessageStore,
    RetentionPolicy,
    StoredMessage,
    cursor_before,
)
from storage_worker.store.cassandra import CassandraStore
from storage_worker.store.sqlite import SqliteStore

APP = "app"
NOW = 1_800_000_000_000
DAY = 86_400_000
AB = direct_conversation("alice", "bob")
BC = direct_conversation("bob", "carol")


@pytest.fixture(params=[1, 4], ids=["P1", "P4"])
def partitions(request: pytest.FixtureRequest) -> int:
    """Overrides the conftest's: every test here runs with one partition and with four."""
    return int(request.param)


@dataclass(frozen=True)
class Positions:
    """Positions of a deployment with ``count`` partitions."""

    count: int

    def __call__(self, stream_seq: int, conversation: str = AB, app: str = APP) -> int:
        """The seq of the ``stream_seq``-th message of the conversation's partition."""
        return position(stream_seq, partition_of(app, conversation, self.count), self.count)

    def cursor(self, *seqs: int) -> list[int]:
        """The cursor at these positions (each in its partition; 0 elsewhere)."""
        cursor = empty_cursor(self.count)
        for seq in seqs:
            cursor[seq % self.count] = max(cursor[seq % self.count], seq)
        return cursor


@pytest.fixture
def at(partitions: int) -> Positions:
    return Positions(partitions)


def envelope(seq: int, sender: str = "alice", device: str = "a1", to: str = "bob", *,
             body: bytes | None = None, payloads: dict[str, bytes] | None = None,
             expires_at: int | None = None, app: str = APP, ts: int = NOW) -> StoredMessage:
    env = MessageEnvelope(
        id=f"m{seq}", kind="chat", app=app, module="chat",
        sender=Sender(user=sender, device=device), to=Destination(kind="user", id=to),
        conversation=direct_conversation(sender, to), ts=ts, receipt=True,
        body=body if body is not None or payloads is not None else f"body{seq}".encode(),
        payloads=payloads, client_id=f"c{seq}", expires_at=expires_at,
    )
    return StoredMessage(seq=seq, envelope=env, recipients=sorted({sender, to}))


async def setup_users(store: MessageStore, app: str = APP) -> None:
    for user, device in (("alice", "a1"), ("alice", "a2"), ("bob", "b1"), ("bob", "b2")):
        await store.register_device(app, user, device, NOW)


def ack(seq: int, sender: str = "alice", conversation: str = AB) -> AckItem:
    return AckItem(id=f"m{seq}", seq=seq, conversation=conversation, sender=sender)


async def test_registry(store: MessageStore) -> None:
    assert await store.user_devices(APP, "alice") == (False, [])
    info = await store.register_device(APP, "alice", "a1", NOW)
    assert (info.user, info.device, info.app) == ("alice", "a1", "app")
    again = await store.register_device(APP, "alice", "a1", NOW + 5)
    assert again.created_at == NOW
    exists, devices = await store.user_devices(APP, "alice")
    assert exists and [d.device for d in devices] == ["a1"]
    assert await store.device_owner(APP, "a1") == "alice"
    assert await store.device_owner(APP, "nope") is None


async def test_backlog_in_order_excludes_own_device(store: MessageStore, at: Positions) -> None:
    await setup_users(store)
    seqs = [at(3), at(5), at(9)]
    await store.append([envelope(s) for s in seqs])
    for device in ("b1", "b2", "a2"):
        messages, cursor = await store.backlog(APP,
            "bob" if device[0] == "b" else "alice", device, [], 100, NOW)
        assert [m.seq for m in messages] == seqs
        assert messages[0].body == f"body{at(3)}".encode()
        assert cursor == at.cursor(at(9))
    own, _ = await store.backlog(APP, "alice", "a1", [], 100, NOW)
    assert own == []


async def test_append_is_idempotent(store: MessageStore, at: Positions) -> None:
    await setup_users(store)
    await store.append([envelope(at(1))])
    await store.append([envelope(at(1)), envelope(at(2))])
    retried = envelope(at(7))
    retried.envelope.id = f"m{at(1)}"  # same server id, later position (retry after window)
    await store.append([retried])
    messages, _ = await store.backlog(APP, "bob", "b1", [], 100, NOW)
    assert [m.seq for m in messages] == [at(1), at(2)]


async def test_backlog_pages_and_cursor(store: MessageStore, at: Positions) -> None:
    await setup_users(store)
    await store.append([envelope(at(s)) for s in range(1, 11)])
    first, cursor = await store.backlog(APP, "bob", "b1", [], 4, NOW)
    assert [m.seq for m in first] == [at(s) for s in (1, 2, 3, 4)]
    assert cursor == at.cursor(at(4))
    second, cursor = await store.backlog(APP, "bob", "b1", cursor, 4, NOW)
    assert [m.seq for m in second] == [at(s) for s in (5, 6, 7, 8)]
    rest, cursor = await store.backlog(APP, "bob", "b1", cursor, 4, NOW)
    assert [m.seq for m in rest] == [at(9), at(10)] and cursor == at.cursor(at(10))


async def test_acks_remove_from_backlog_out_of_order(store: MessageStore, at: Positions) -> None:
    await setup_users(store)
    await store.append([envelope(at(s)) for s in range(1, 6)])
    await store.record_acks(APP, "bob", "b1", [ack(at(2)), ack(at(4))], NOW)
    messages, _ = await store.backlog(APP, "bob", "b1", [], 100, NOW)
    assert [m.seq for m in messages] == [at(1), at(3), at(5)]
    await store.record_acks(APP, "bob", "b1", [ack(at(1)), ack(at(3))], NOW)
    messages, _ = await store.backlog(APP, "bob", "b1", [], 100, NOW)
    assert [m.seq for m in messages] == [at(5)]
    other, _ = await store.backlog(APP, "bob", "b2", [], 100, NOW)
    assert [m.seq for m in other] == [at(s) for s in range(1, 6)]
    await store.record_acks(APP, "bob", "b1", [ack(at(5)), ack(at(5))], NOW)
    assert (await store.backlog(APP, "bob", "b1", [], 100, NOW))[0] == []


async def test_acks_of_several_devices_at_once_are_each_devices_own(
        store: MessageStore, at: Positions) -> None:
    """``record_acks_of`` (a storage worker's whole receipt flush) does what one
    ``record_acks`` per device does: each device's backlog, delivered for the sender, and an
    ack for someone else's inbox or another conversation changes nothing."""
    await setup_users(store)
    await store.append([envelope(at(s)) for s in range(1, 5)])
    await store.append([envelope(at(5), sender="bob", device="b1", to="alice")])
    await store.record_acks_of([
        DeviceAcks(app=APP, user="bob", device="b1", items=[ack(at(1)), ack(at(3))]),
        DeviceAcks(app=APP, user="bob", device="b2", items=[ack(at(2)), ack(at(2))]),
        DeviceAcks(app=APP, user="alice", device="a2",
                   items=[ack(at(5), sender="bob"), ack(at(4), conversation=BC)]),
        DeviceAcks(app=APP, user="bob", device="b1", items=[ack(at(4))])], NOW)
    assert [m.seq for m in (await store.backlog(APP, "bob", "b1", [], 100, NOW))[0]] == [
        at(2)]  # at(5) is its own
    assert [m.seq for m in (await store.backlog(APP, "bob", "b2", [], 100, NOW))[0]] == [
        at(1), at(3), at(4), at(5)]
    assert [m.seq for m in (await store.backlog(APP, "alice", "a2", [], 100, NOW))[0]] == [
        at(1), at(2), at(3), at(4)]  # at(4) of AB: its ack named BC
    history = await store.history(APP, "alice", "a1", AB, None, None, 10, NOW)
    assert [(i.message.seq, i.status) for i in history] == [
        (at(1), "delivered"), (at(2), "delivered"), (at(3), "delivered"),
        (at(4), "delivered"), (at(5), "delivered")]
    await store.record_acks_of([], NOW)  # a flush of reads only


async def test_per_device_payloads(store: MessageStore, at: Positions) -> None:
    await setup_users(store)
    await store.append([envelope(at(1), payloads={"b1": b"for-b1", "a2": b"for-a2"})])
    b1, _ = await store.backlog(APP, "bob", "b1", [], 10, NOW)
    assert [m.body for m in b1] == [b"for-b1"]
    assert (await store.backlog(APP, "bob", "b2", [], 10, NOW))[0] == []
    a2, _ = await store.backlog(APP, "alice", "a2", [], 10, NOW)
    assert [m.body for m in a2] == [b"for-a2"]


async def test_expired_messages_are_not_delivered(store: MessageStore, at: Positions) -> None:
    await setup_users(store)
    await store.append([envelope(at(1), expires_at=NOW - 1),
                        envelope(at(2), expires_at=NOW + DAY)])
    messages, _ = await store.backlog(APP, "bob", "b1", [], 10, NOW)
    assert [m.seq for m in messages] == [at(2)]
    history = await store.history(APP, "alice", "a1", AB, None, None, 10, NOW)
    assert [(i.message.seq, i.status) for i in history] == [(at(1), "expired"),
                                                             (at(2), "sent")]


async def test_new_device_starts_after_existing_backlog(store: MessageStore,
                                                        at: Positions) -> None:
    await setup_users(store)
    await store.append([envelope(at(1)), envelope(at(2))])
    await store.register_device(APP, "bob", "b3", NOW)
    await store.append([envelope(at(3))])
    messages, _ = await store.backlog(APP, "bob", "b3", [], 10, NOW)
    assert [m.seq for m in messages] == [at(3)]


async def test_new_device_starts_after_messages_accepted_before_it(store: MessageStore,
                                                                   at: Positions) -> None:
    """Messages accepted (positions up to ``start_after``) but stored after the registration
    never reach the new device's backlog; later ones do."""
    await setup_users(store)
    await store.append([envelope(at(1))])
    await store.register_device(APP, "bob", "b3", NOW, start_after=at.cursor(at(4)))
    await store.append([envelope(at(3)), envelope(at(4)), envelope(at(5))])
    messages, _ = await store.backlog(APP, "bob", "b3", [], 10, NOW)
    assert [m.seq for m in messages] == [at(5)]


async def test_statuses_and_read_markers(store: MessageStore, at: Positions) -> None:
    await setup_users(store)
    await store.append([envelope(at(s)) for s in (1, 2, 3)])
    await store.append([envelope(at(4), sender="bob", device="b1", to="alice")])
    await store.record_acks(APP, "bob", "b1", [ack(at(1)), ack(at(2))], NOW)
    await store.mark_read(APP, "bob", AB, at(1))
    await store.mark_read(APP, "bob", AB, 0)  # markers never move back
    history = await store.history(APP, "alice", "a1", AB, None, None, 10, NOW)
    assert [(i.message.seq, i.status) for i in history] == [
        (at(1), "read"), (at(2), "delivered"), (at(3), "sent"), (at(4), "sent")]
    summaries = await store.conversations(APP, "bob", "b1", 10)
    assert [(s.conversation, s.last_seq, s.unread, s.read_seq) for s in summaries] == [
        (AB, at(4), 2, at(1))]
    assert summaries[0].last_message is not None
    assert summaries[0].last_message.seq == at(4)
    alice = await store.conversations(APP, "alice", "a1", 10)
    assert alice[0].unread == 1
    await store.mark_read(APP, "alice", AB, at(4))
    assert (await store.conversations(APP, "alice", "a1", 10))[0].unread == 0


async def test_history_paging(store: MessageStore, at: Positions) -> None:
    await setup_users(store)
    await store.append([envelope(at(s)) for s in range(1, 11)])
    newest = await store.history(APP, "bob", "b1", AB, None, None, 4, NOW)
    assert [i.message.seq for i in newest] == [at(s) for s in (7, 8, 9, 10)]
    older = await store.history(APP, "bob", "b1", AB, at(7), None, 4, NOW)
    assert [i.message.seq for i in older] == [at(s) for s in (3, 4, 5, 6)]
    forward = await store.history(APP, "bob", "b1", AB, None, at(8), 4, NOW)
    assert [i.message.seq for i in forward] == [at(9), at(10)]
    outsider = await store.history(APP, "carol", "c1", AB, None, None, 4, NOW)
    assert outsider == []


async def test_retention_by_age(store: MessageStore, at: Positions) -> None:
    await setup_users(store)
    await store.append([envelope(at(1), ts=NOW - 10 * DAY), envelope(at(2), ts=NOW)])
    policy = RetentionPolicy(default_days=30, days={"app": 5}, ephemeral_apps=frozenset())
    assert await store.purge(policy, NOW) == 1
    messages, _ = await store.backlog(APP, "bob", "b1", [], 10, NOW)
    assert [m.seq for m in messages] == [at(2)]


async def test_ephemeral_deleted_after_every_device_acked(store: MessageStore,
                                                         at: Positions) -> None:
    await setup_users(store, "eph")
    first, second = at(1, app="eph"), at(2, app="eph")
    await store.append([envelope(first, app="eph"), envelope(second, app="eph")])
    policy = RetentionPolicy(default_days=30, days={}, ephemeral_apps=frozenset({"eph"}))
    for user, device in (("bob", "b1"), ("bob", "b2"), ("alice", "a2")):
        await store.record_acks("eph", user, device, [ack(first)], NOW)
    assert await store.purge(policy, NOW) == 1
    history = await store.history("eph", "alice", "a1", AB, None, None, 10, NOW)
    assert [i.message.seq for i in history] == [second]
    assert [m.seq for m in (await store.backlog("eph", "bob", "b2", [], 10, NOW))[0]] == [
        second]


async def test_ephemeral_purge_reads_each_partitions_floor(store: MessageStore,
                                                          partitions: int) -> None:
    """A device's floor of a fast partition (high positions, all acknowledged) does not make
    a slow partition's message (a lower position, not acknowledged) look delivered."""
    streams = Streams(partitions)
    await setup_users(store, "eph")
    fast = streams.next(streams.fast)
    await store.append([streams.envelope(fast, app="eph")])
    for device in ("b1", "b2"):
        await store.record_acks("eph", "bob", device, [streams.ack(fast)], NOW)
        await store.backlog("eph", "bob", device, [], 10, NOW)  # floors move (SQLite: here)
    slow = streams.next(streams.slow)
    await store.append([streams.envelope(slow, app="eph")])
    policy = RetentionPolicy(default_days=30, days={}, ephemeral_apps=frozenset({"eph"}))
    assert await store.purge(policy, NOW) == 1  # the fast one: bob's devices have it
    assert [m.seq for m in (await store.backlog("eph", "bob", "b1", [], 10, NOW))[0]] == [slow]


async def test_device_id_belongs_to_one_user(store: MessageStore) -> None:
    from schemas.errors import ErrorCode, ProtocolError

    await store.register_device(APP, "alice", "phone", NOW)
    with pytest.raises(ProtocolError) as info:
        await store.register_device(APP, "mallory", "phone", NOW)
    assert info.value.code == ErrorCode.CONFLICT
    assert await store.device_owner(APP, "phone") == "alice"


async def test_acks_cannot_reach_outside_the_inbox(store: MessageStore, at: Positions) -> None:
    await setup_users(store)
    await store.register_device(APP, "carol", "c1", NOW)
    await store.append([envelope(at(s)) for s in (1, 2)])
    carol_bob = envelope(at(3, BC), sender="carol", device="c1", to="bob")
    await store.append([carol_bob])
    # wrong conversation, unknown seq far ahead, a message of someone else's inbox
    await store.record_acks(APP, "bob", "b1", [
        AckItem(id=f"m{at(3, BC)}", seq=at(3, BC), conversation=AB, sender="carol"),
        AckItem(id="mx", seq=at(10**9), conversation=AB, sender="alice"),
    ], NOW)
    await store.record_acks(APP, "alice", "a2", [AckItem(id=f"m{at(3, BC)}", seq=at(3, BC),
                                                    conversation=BC)], NOW)
    messages, _ = await store.backlog(APP, "bob", "b1", [], 10, NOW)
    assert sorted(m.seq for m in messages) == sorted([at(1), at(2), at(3, BC)])
    history = await store.history(APP, "carol", "c1", BC, None, None, 10, NOW)
    assert [i.status for i in history] == ["sent"]
    await store.append([envelope(at(4))])
    assert sorted(m.seq for m in (await store.backlog(APP, "bob", "b1", [], 10, NOW))[0]) == (
        sorted([at(1), at(2), at(3, BC), at(4)]))


async def test_one_message_by_id_for_its_recipients_only(store: MessageStore,
                                                         at: Positions) -> None:
    await setup_users(store)
    await store.register_device(APP, "carol", "c1", NOW)
    one, two, three = at(1), at(2), at(3, BC)
    await store.append([envelope(one), envelope(two, payloads={"b1": b"for-b1"}),
                        envelope(three, sender="carol", device="c1", to="bob")])
    await store.record_acks(APP, "bob", "b1", [ack(one)], NOW)
    item = await store.message(APP, "bob", "b2", f"m{one}", NOW)
    assert item is not None
    assert (item.message.message_id, item.message.seq, item.message.body, item.status) == (
        f"m{one}", one, f"body{one}".encode(), "delivered")
    assert item.message.conversation == AB and item.message.sender.user == "alice"
    own = await store.message(APP, "alice", "a1", f"m{one}", NOW)  # the sender's view too
    assert own is not None and own.message.body == f"body{one}".encode()
    payload = await store.message(APP, "bob", "b1", f"m{two}", NOW)  # the body for this device
    assert payload is not None and payload.message.body == b"for-b1"
    assert await store.message(APP, "bob", "b2", f"m{two}", NOW) is None  # no body for b2
    assert await store.message(APP, "carol", "c1", f"m{one}", NOW) is None  # not a recipient
    assert await store.message(APP, "alice", "a1", f"m{three}", NOW) is None  # carol -> bob
    assert await store.message(APP, "bob", "b1", "m99999", NOW) is None  # no such message
    third = await store.message(APP, "bob", "b1", f"m{three}", NOW)
    assert third is not None and third.message.conversation == BC


async def test_apps_are_isolated(store: MessageStore, at: Positions) -> None:
    """The same user, device and conversation ids in two apps are two users, devices and
    conversations: nothing written in one app is read, acknowledged or marked in the other."""
    await setup_users(store, "one")
    await setup_users(store, "two")
    seqs = {"one": at(1, app="one"), "two": at(2, app="two")}
    await store.append([envelope(seqs["one"], app="one"),
                        envelope(seqs["two"], app="two", body=b"two's")])
    for app, seq in seqs.items():
        backlog, _ = await store.backlog(app, "bob", "b1", [], 10, NOW)
        assert [m.seq for m in backlog] == [seq]
        history = await store.history(app, "bob", "b1", AB, None, None, 10, NOW)
        assert [(i.message.seq, i.message.app) for i in history] == [(seq, app)]
        [summary] = await store.conversations(app, "bob", "b1", 10)
        assert (summary.last_seq, summary.unread) == (seq, 1)
    assert await store.message("two", "bob", "b1", f"m{seqs['one']}", NOW) is None
    assert await store.message("one", "bob", "b1", f"m{seqs['one']}", NOW) is not None
    assert await store.history("three", "bob", "b1", AB, None, None, 10, NOW) == []
    assert await store.conversations("three", "bob", "b1", 10) == []
    # acknowledgements and read markers stay in their app
    await store.record_acks("two", "bob", "b1", [ack(seqs["one"])], NOW)
    assert [m.seq for m in (await store.backlog("one", "bob", "b1", [], 10, NOW))[0]] == [
        seqs["one"]]
    await store.mark_read("two", "bob", AB, seqs["one"])
    [mine] = await store.history("one", "alice", "a1", AB, None, None, 10, NOW)
    assert mine.status == "sent"
    await store.mark_read("one", "bob", AB, seqs["one"])
    [mine] = await store.history("one", "alice", "a1", AB, None, None, 10, NOW)
    assert mine.status == "read"
    # the registry: users and devices per app
    assert await store.user_devices("three", "alice") == (False, [])
    assert await store.device_owner("three", "a1") is None
    await store.register_device("one", "carol", "phone", NOW)
    info = await store.register_device("two", "dave", "phone", NOW)  # no conflict: another app
    assert (info.app, info.user) == ("two", "dave")
    assert await store.device_owner("one", "phone") == "carol"
    assert await store.device_owner("two", "phone") == "dave"


# ---------------------------------------------------------------------- partitions


@dataclass
class Streams:
    """Messages to bob from one sender per partition, each conversation in its own partition
    (as ``partition_of`` puts it), at positions that grow per partition: ``fast`` starts
    1000 stream seqs ahead of ``slow``, so its positions are above all of slow's (with one
    partition, both are partition 0 and share its sequence)."""

    count: int
    heads: dict[int, int] = field(default_factory=dict)

    @property
    def fast(self) -> int:
        return 1 % self.count

    @property
    def slow(self) -> int:
        return 2 % self.count

    def sender(self, partition: int, nth: int = 0) -> str:
        """The ``nth`` user (from 0) whose conversation with bob is of ``partition``."""
        users = (f"s{index}" for index in range(10_000) if partition_of(
            APP, direct_conversation("bob", f"s{index}"), self.count) == partition)
        return [next(users) for _ in range(nth + 1)][-1]

    def next(self, partition: int) -> int:
        start = 1000 if partition == self.fast and self.count > 1 else 0
        self.heads[partition] = self.heads.get(partition, start) + 1
        return position(self.heads[partition], partition, self.count)

    def envelope(self, seq: int, app: str = APP) -> StoredMessage:
        sender = self.sender(seq % self.count)
        return envelope(seq, sender=sender, device=f"{sender}-phone", app=app)

    def ack(self, seq: int) -> AckItem:
        sender = self.sender(seq % self.count)
        return ack(seq, sender, direct_conversation("bob", sender))


@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_cursor_never_skips_an_entry_of_a_slow_partition(
        store: MessageStore, partitions: int, limit: int) -> None:
    """A fast partition far ahead of a slow one; pages of 1..3; after each page, entries of the
    slow partition are stored with positions below every position the page returned. Every
    entry reaches each device exactly once, in order within its partition, whether the device
    acknowledges (b1: its floors move) or not (b2: only the cursor moves)."""
    streams = Streams(partitions)
    rng = random.Random(limit)
    await setup_users(store)
    stored: list[int] = []
    delivered: dict[str, list[int]] = {"b1": [], "b2": []}
    cursors: dict[str, list[int]] = {"b1": [], "b2": []}

    async def append(partition: int, count: int) -> None:
        seqs = [streams.next(partition) for _ in range(count)]
        await store.append([streams.envelope(seq) for seq in seqs])
        stored.extend(seqs)

    async def page(device: str) -> list[int]:
        messages, cursor = await store.backlog(APP, "bob", device, cursors[device], limit, NOW)
        assert decode_cursor(encode_cursor(cursor), partitions) == cursor  # a valid cursor
        assert all(new >= old for new, old in zip(cursor, cursors[device] or cursor,
                                                  strict=True))
        cursors[device] = cursor
        seqs = [m.seq for m in messages]
        delivered[device].extend(seqs)
        if device == "b1" and seqs:  # acknowledges some, in any order
            acked = rng.sample(seqs, rng.randint(1, len(seqs)))
            await store.record_acks(APP, "bob", device, [streams.ack(s) for s in acked], NOW)
        return seqs

    for _ in range(8):
        await append(streams.fast, rng.randint(1, 3))
        for device in ("b1", "b2"):
            await page(device)
        await append(streams.slow, rng.randint(1, 2))  # below what the pages returned
        if partitions > 2:
            await append(rng.randrange(partitions), 1)
        for device in ("b1", "b2"):
            await page(device)
    for device in ("b1", "b2"):
        while await page(device):
            pass
        assert sorted(delivered[device]) == sorted(stored), device
        assert len(set(delivered[device])) == len(delivered[device]), device
        for partition in range(partitions):
            mine = [seq for seq in delivered[device] if seq % partitions == partition]
            assert mine == sorted(mine), (device, partition)


async def test_a_page_cut_short_continues_from_cursor_before(store: MessageStore,
                                                             partitions: int) -> None:
    """The worker sends fewer messages than a page holds when they do not fit a frame: the
    cursor of what it kept (``cursor_before``) starts the next page with what it dropped,
    whichever partitions those are in."""
    streams = Streams(partitions)
    await setup_users(store)
    seqs = [streams.next(partition) for _ in range(3) for partition in (streams.slow,
                                                                          streams.fast)]
    await store.append([streams.envelope(seq) for seq in seqs])
    delivered: list[int] = []
    cursor: list[int] = []
    for keep in (2, 1, 3, 2, 1, 4):
        page, cursor = await store.backlog(APP, "bob", "b1", cursor, 4, NOW)
        if not page:
            break
        kept, dropped = page[:keep], page[keep:]
        cursor = cursor_before(cursor, dropped, partitions)
        delivered.extend(m.seq for m in kept)
    assert sorted(delivered) == sorted(seqs) and len(set(delivered)) == len(delivered)


def test_cursor_before_the_first_positions() -> None:
    """Before a partition's first message is nothing (0), before any later one the position
    of the stream seq before it."""
    from storage_worker.store.base import DeliverableMessage

    def message(seq: int) -> DeliverableMessage:
        return DeliverableMessage(seq=seq, envelope=envelope(seq).envelope, body=b"")

    four = [position(1, 0, 4), position(1, 3, 4), position(7, 1, 4)]
    assert cursor_before([40, 41, 42, 43], [message(seq) for seq in four], 4) == [0, 25, 42, 0]
    assert cursor_before([9], [message(5), message(7)], 1) == [4]
    assert cursor_before([9], [message(1)], 1) == [0]
    assert cursor_before([9, 8], [], 2) == [9, 8]


async def test_floors_are_per_partition(store: MessageStore, partitions: int) -> None:
    """Acknowledging everything of a fast partition moves its floor only: an entry of a slow
    partition stored afterwards, at a lower position, is still in the backlog (an empty
    cursor: the floors alone decide)."""
    streams = Streams(partitions)
    await setup_users(store)
    fast = [streams.next(streams.fast) for _ in range(3)]
    await store.append([streams.envelope(seq) for seq in fast])
    await store.record_acks(APP, "bob", "b1", [streams.ack(seq) for seq in fast], NOW)
    assert (await store.backlog(APP, "bob", "b1", [], 10, NOW))[0] == []
    slow = streams.next(streams.slow)
    await store.append([streams.envelope(slow)])
    messages, cursor = await store.backlog(APP, "bob", "b1", [], 10, NOW)
    assert [m.seq for m in messages] == [slow]
    assert cursor == Positions(partitions).cursor(fast[-1], slow)
    await store.record_acks(APP, "bob", "b1", [streams.ack(slow)], NOW)
    assert (await store.backlog(APP, "bob", "b1", [], 10, NOW))[0] == []
    assert [m.seq for m in (await store.backlog(APP, "bob", "b2", [], 10, NOW))[0]] == sorted(
        [*fast, slow])


async def test_new_device_starts_per_partition(store: MessageStore, partitions: int) -> None:
    """A new device starts, in each partition, after the higher of ``start_after`` and the
    user's newest entry there: a slow partition's later entries reach it, although their
    positions are below the fast partition's start."""
    streams = Streams(partitions)
    await setup_users(store)
    old_fast, old_slow = streams.next(streams.fast), streams.next(streams.slow)
    await store.append([streams.envelope(old_fast), streams.envelope(old_slow)])
    accepted = streams.next(streams.fast)  # accepted before the device, stored after it
    start = empty_cursor(partitions)
    start[streams.fast] = accepted
    await store.register_device(APP, "bob", "b3", NOW, start_after=start)
    new_slow, new_fast = streams.next(streams.slow), streams.next(streams.fast)
    await store.append([streams.envelope(seq) for seq in (accepted, new_slow, new_fast)])
    messages, _ = await store.backlog(APP, "bob", "b3", [], 10, NOW)
    assert sorted(m.seq for m in messages) == sorted([new_slow, new_fast])


async def test_conversations_most_recent_first_by_time(store: MessageStore,
                                                       partitions: int) -> None:
    """The conversation of the newest message comes first, whatever the positions: a fast
    partition's older message has the higher position."""
    streams = Streams(partitions)
    await setup_users(store)
    fast, slow = streams.next(streams.fast), streams.next(streams.slow)
    await store.append([envelope(fast, streams.sender(streams.fast), ts=NOW - 1000)])
    await store.append([envelope(slow, streams.sender(streams.slow, 1), ts=NOW)])
    listed = await store.conversations(APP, "bob", "b1", 10)
    assert [s.last_seq for s in listed] == [slow, fast]
    [first] = await store.conversations(APP, "bob", "b1", 1)
    assert first.last_seq == slow


async def test_cursors_of_another_length_are_refused(store: MessageStore,
                                                     partitions: int) -> None:
    await setup_users(store)
    for cursor in ([0] * (partitions + 1), [0] * (partitions + 3)):
        with pytest.raises(ValueError):
            await store.backlog(APP, "bob", "b1", cursor, 10, NOW)
        with pytest.raises(ValueError):
            await store.register_device(APP, "bob", "b9", NOW, start_after=cursor)
    with pytest.raises(ValueError):
        await store.backlog(APP, "bob", "b1", [], 0, NOW)
    # the empty cursor and one of the right length are fine, for unknown devices too
    assert await store.backlog(APP, "bob", "nope", [], 10, NOW) == ([], empty_cursor(partitions))
    assert (await store.backlog(APP, "bob", "b1", empty_cursor(partitions), 1, NOW))[0] == []


@pytest.mark.parametrize("count", [1, MAX_PARTITIONS])
def test_partition_counts_at_the_bounds(count: int, tmp_path: object) -> None:
    SqliteStore(":memory:", partitions=count)
    CassandraStore(StoreConfig(backend="cassandra"), partitions=count)


@pytest.mark.parametrize("count", [0, -1, MAX_PARTITIONS + 1])
def test_partition_counts_past_the_bounds(count: int) -> None:
    with pytest.raises(ValueError):
        SqliteStore(":memory:", partitions=count)
    with pytest.raises(ValueError):
        CassandraStore(StoreConfig(backend="cassandra"), partitions=count)


# ---------------------------------------------------------------------------- archive
# ``ArchiveStore`` (storage_worker/store/base.py): what the archive worker reads, marks and
# purges. Stream sequences far apart put a conversation's messages in several of Cassandra's
# seq buckets, so its purge drops whole bucket partitions and cuts one by a range.

FAR = (1, 2, 3, 200_000, 300_000, 300_001, 400_000)


def archiving(store: MessageStore) -> SqliteStore | CassandraStore:
    assert isinstance(store, SqliteStore | CassandraStore)
    return store


async def test_archive_rows_are_a_prefix_older_than_the_cutoff(store: MessageStore,
                                                               at: Positions) -> None:
    backend = archiving(store)
    await setup_users(store)
    await store.append([envelope(at(1), ts=NOW - 3 * DAY),
                        envelope(at(2), ts=NOW - 2 * DAY, body=None,
                                 payloads={"b1": b"for b1", "b2": b"for b2"}),
                        envelope(at(3), ts=NOW),  # new: the prefix stops here
                        envelope(at(4), ts=NOW - 2 * DAY)])  # old but after a new one
    await store.append([envelope(at(5, BC), sender="bob", device="b1", to="carol",
                                 ts=NOW - 3 * DAY)])
    await store.record_acks(APP, "bob", "b1", [ack(at(1))], NOW)
    assert await backend.archive_candidates(APP, NOW - DAY) == sorted([AB, BC])
    assert await backend.archive_candidates(APP, NOW - 5 * DAY) == []
    assert await backend.archive_candidates("other-app", NOW) == []
    rows = await backend.archive_rows(APP, AB, 0, NOW - DAY, 100)
    assert [row.seq for row in rows] == [at(1), at(2)]
    assert rows[0].recipients == ["alice", "bob"]
    assert rows[0].envelope.body == b"body" + str(at(1)).encode()
    assert rows[0].envelope.id == f"m{at(1)}" and rows[0].envelope.client_id == f"c{at(1)}"
    assert rows[0].delivered_at == NOW
    assert rows[1].envelope.body is None
    assert rows[1].envelope.payloads == {"b1": b"for b1", "b2": b"for b2"}
    assert rows[1].delivered_at is None
    assert [r.seq for r in await backend.archive_rows(APP, AB, at(1), NOW - DAY, 100)] == [at(2)]
    assert [r.seq for r in await backend.archive_rows(APP, AB, 0, NOW - DAY, 1)] == [at(1)]
    assert [r.seq for r in await backend.archive_rows(APP, AB, 0, NOW + DAY, 100)] == [
        at(s) for s in (1, 2, 3, 4)]
    assert await backend.archive_rows(APP, AB, at(2), NOW - DAY, 100) == []
    assert APP in await backend.message_apps()


async def test_archive_marks_move_forward_only(store: MessageStore, at: Positions) -> None:
    backend = archiving(store)
    assert await backend.archive_mark(APP, AB) == ArchiveMark()
    await backend.set_archive_mark(APP, AB, ArchiveMark(archived=at(5)))
    await backend.set_archive_mark(APP, AB, ArchiveMark(archived=at(3), purged=at(3)))
    assert await backend.archive_mark(APP, AB) == ArchiveMark(archived=at(5), purged=at(3))
    await backend.set_archive_mark(APP, AB, ArchiveMark(archived=at(5), purged=at(5)))
    assert await backend.archive_mark(APP, AB) == ArchiveMark(archived=at(5), purged=at(5))
    assert await backend.archive_mark("other-app", AB) == ArchiveMark()
    await backend.set_archive_mark("other-app", BC, ArchiveMark(archived=at(5, BC)))
    assert await backend.archived_conversations() == [(APP, AB), ("other-app", BC)]


async def test_purge_archived_removes_up_to_the_mark(store: MessageStore,
                                                     at: Positions) -> None:
    backend = archiving(store)
    await setup_users(store)
    await store.append([envelope(at(s), ts=NOW - DAY) for s in FAR[:4]]
                       + [envelope(at(FAR[4]), ts=NOW - DAY, body=None,
                                   payloads={"b1": b"p"})]
                       + [envelope(at(s), ts=NOW - DAY) for s in FAR[5:]])
    await store.append([envelope(at(500_000, BC), sender="bob", device="b1", to="carol")])
    through = at(FAR[4])
    assert await backend.purge_archived(APP, AB, through) == 5
    history = await store.history(APP, "bob", "b1", AB, None, None, 50, NOW)
    assert [item.message.seq for item in history] == [at(s) for s in FAR[5:]]
    forward = await store.history(APP, "bob", "b1", AB, None, 0, 50, NOW)
    assert [item.message.seq for item in forward] == [at(s) for s in FAR[5:]]
    assert await store.message(APP, "bob", "b1", f"m{at(1)}", NOW) is None
    assert await store.message(APP, "bob", "b1", f"m{through}", NOW) is None
    assert await store.message(APP, "bob", "b1", f"m{at(FAR[5])}", NOW) is not None
    messages, _ = await store.backlog(APP, "bob", "b2", [], 50, NOW)
    assert sorted(m.seq for m in messages) == sorted([*(at(s) for s in FAR[5:]),
                                                      at(500_000, BC)])
    rows = await backend.archive_rows(APP, AB, 0, NOW, 50)
    assert [row.seq for row in rows] == [at(s) for s in FAR[5:]]
    assert await backend.purge_archived(APP, AB, through) == 0  # a rerun: nothing more
    assert len(await store.history(APP, "bob", "b1", BC, None, None, 50, NOW)) == 1


async def test_others_read_is_the_highest_other_marker(store: MessageStore,
                                                       at: Positions) -> None:
    backend = archiving(store)
    assert await backend.others_read(APP, "alice", AB) == 0
    await store.mark_read(APP, "bob", AB, at(4))
    await store.mark_read(APP, "alice", AB, at(9))
    assert await backend.others_read(APP, "alice", AB) == at(4)
    assert await backend.others_read(APP, "bob", AB) == at(9)
