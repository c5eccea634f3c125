"""The storage contract: every ``MessageStore`` backend must pass every test here."""

from schemas.envelopes import MessageEnvelope
from schemas.frames import AckItem, Destination, Sender
from schemas.ids import direct_conversation
from storage_worker.store.base import MessageStore, RetentionPolicy, StoredMessage

APP = "app"
NOW = 1_800_000_000_000
DAY = 86_400_000
AB = direct_conversation("alice", "bob")


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


def ack(seq: int, sender: str = "alice") -> AckItem:
    return AckItem(id=f"m{seq}", seq=seq, conversation=AB, sender=sender)


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


async def test_backlog_in_order_excludes_own_device(store: MessageStore) -> None:
    await setup_users(store)
    await store.append([envelope(s) for s in (3, 5, 9)])
    for device in ("b1", "b2", "a2"):
        messages, cursor = await store.backlog(APP,
            "bob" if device[0] == "b" else "alice", device, 0, 100, NOW)
        assert [m.seq for m in messages] == [3, 5, 9]
        assert messages[0].body == b"body3"
        assert cursor == 9
    own, _ = await store.backlog(APP, "alice", "a1", 0, 100, NOW)
    assert own == []


async def test_append_is_idempotent(store: MessageStore) -> None:
    await setup_users(store)
    await store.append([envelope(1)])
    await store.append([envelope(1), envelope(2)])
    retried = envelope(7)
    retried.envelope.id = "m1"  # same server id, later stream position (retry after window)
    await store.append([retried])
    messages, _ = await store.backlog(APP, "bob", "b1", 0, 100, NOW)
    assert [m.seq for m in messages] == [1, 2]


async def test_backlog_pages_and_cursor(store: MessageStore) -> None:
    await setup_users(store)
    await store.append([envelope(s) for s in range(1, 11)])
    first, cursor = await store.backlog(APP, "bob", "b1", 0, 4, NOW)
    assert [m.seq for m in first] == [1, 2, 3, 4] and cursor == 4
    second, cursor = await store.backlog(APP, "bob", "b1", cursor, 4, NOW)
    assert [m.seq for m in second] == [5, 6, 7, 8]
    rest, cursor = await store.backlog(APP, "bob", "b1", cursor, 4, NOW)
    assert [m.seq for m in rest] == [9, 10] and cursor == 10


async def test_acks_remove_from_backlog_out_of_order(store: MessageStore) -> None:
    await setup_users(store)
    await store.append([envelope(s) for s in range(1, 6)])
    await store.record_acks(APP, "bob", "b1", [ack(2), ack(4)], NOW)
    messages, _ = await store.backlog(APP, "bob", "b1", 0, 100, NOW)
    assert [m.seq for m in messages] == [1, 3, 5]
    await store.record_acks(APP, "bob", "b1", [ack(1), ack(3)], NOW)
    messages, _ = await store.backlog(APP, "bob", "b1", 0, 100, NOW)
    assert [m.seq for m in messages] == [5]
    other, _ = await store.backlog(APP, "bob", "b2", 0, 100, NOW)
    assert [m.seq for m in other] == [1, 2, 3, 4, 5]
    await store.record_acks(APP, "bob", "b1", [ack(5), ack(5)], NOW)
    assert (await store.backlog(APP, "bob", "b1", 0, 100, NOW))[0] == []


async def test_per_device_payloads(store: MessageStore) -> None:
    await setup_users(store)
    await store.append([envelope(1, payloads={"b1": b"for-b1", "a2": b"for-a2"})])
    b1, _ = await store.backlog(APP, "bob", "b1", 0, 10, NOW)
    assert [m.body for m in b1] == [b"for-b1"]
    assert (await store.backlog(APP, "bob", "b2", 0, 10, NOW))[0] == []
    a2, _ = await store.backlog(APP, "alice", "a2", 0, 10, NOW)
    assert [m.body for m in a2] == [b"for-a2"]


async def test_expired_messages_are_not_delivered(store: MessageStore) -> None:
    await setup_users(store)
    await store.append([envelope(1, expires_at=NOW - 1), envelope(2, expires_at=NOW + DAY)])
    messages, _ = await store.backlog(APP, "bob", "b1", 0, 10, NOW)
    assert [m.seq for m in messages] == [2]
    history = await store.history(APP, "alice", "a1", AB, None, None, 10, NOW)
    assert [(i.message.seq, i.status) for i in history] == [(1, "expired"), (2, "sent")]


async def test_new_device_starts_after_existing_backlog(store: MessageStore) -> None:
    await setup_users(store)
    await store.append([envelope(1), envelope(2)])
    await store.register_device(APP, "bob", "b3", NOW)
    await store.append([envelope(3)])
    messages, _ = await store.backlog(APP, "bob", "b3", 0, 10, NOW)
    assert [m.seq for m in messages] == [3]


async def test_new_device_starts_after_messages_accepted_before_it(store: MessageStore) -> None:
    """Messages accepted (sequences up to ``start_after``) but stored after the registration
    never reach the new device's backlog; later ones do."""
    await setup_users(store)
    await store.append([envelope(1)])
    await store.register_device(APP, "bob", "b3", NOW, start_after=4)
    await store.append([envelope(3), envelope(4), envelope(5)])
    messages, _ = await store.backlog(APP, "bob", "b3", 0, 10, NOW)
    assert [m.seq for m in messages] == [5]


async def test_statuses_and_read_markers(store: MessageStore) -> None:
    await setup_users(store)
    await store.append([envelope(s) for s in (1, 2, 3)])
    await store.append([envelope(4, sender="bob", device="b1", to="alice")])
    await store.record_acks(APP, "bob", "b1", [ack(1), ack(2)], NOW)
    await store.mark_read(APP, "bob", AB, 1)
    await store.mark_read(APP, "bob", AB, 0)  # markers never move back
    history = await store.history(APP, "alice", "a1", AB, None, None, 10, NOW)
    assert [(i.message.seq, i.status) for i in history] == [
        (1, "read"), (2, "delivered"), (3, "sent"), (4, "sent")]
    summaries = await store.conversations(APP, "bob", "b1", 10)
    assert [(s.conversation, s.last_seq, s.unread, s.read_seq) for s in summaries] == [
        (AB, 4, 2, 1)]
    assert summaries[0].last_message is not None
    assert summaries[0].last_message.seq == 4
    alice = await store.conversations(APP, "alice", "a1", 10)
    assert alice[0].unread == 1
    await store.mark_read(APP, "alice", AB, 4)
    assert (await store.conversations(APP, "alice", "a1", 10))[0].unread == 0


async def test_history_paging(store: MessageStore) -> None:
    await setup_users(store)
    await store.append([envelope(s) for s in range(1, 11)])
    newest = await store.history(APP, "bob", "b1", AB, None, None, 4, NOW)
    assert [i.message.seq for i in newest] == [7, 8, 9, 10]
    older = await store.history(APP, "bob", "b1", AB, 7, None, 4, NOW)
    assert [i.message.seq for i in older] == [3, 4, 5, 6]
    forward = await store.history(APP, "bob", "b1", AB, None, 8, 4, NOW)
    assert [i.message.seq for i in forward] == [9, 10]
    outsider = await store.history(APP, "carol", "c1", AB, None, None, 4, NOW)
    assert outsider == []


async def test_retention_by_age(store: MessageStore) -> None:
    await setup_users(store)
    await store.append([envelope(1, ts=NOW - 10 * DAY), envelope(2, ts=NOW)])
    policy = RetentionPolicy(default_days=30, days={"app": 5}, ephemeral_apps=frozenset())
    assert await store.purge(policy, NOW) == 1
    messages, _ = await store.backlog(APP, "bob", "b1", 0, 10, NOW)
    assert [m.seq for m in messages] == [2]


async def test_ephemeral_deleted_after_every_device_acked(store: MessageStore) -> None:
    await setup_users(store, "eph")
    await store.append([envelope(1, app="eph"), envelope(2, app="eph")])
    policy = RetentionPolicy(default_days=30, days={}, ephemeral_apps=frozenset({"eph"}))
    for user, device in (("bob", "b1"), ("bob", "b2"), ("alice", "a2")):
        await store.record_acks("eph", user, device, [ack(1)], NOW)
    assert await store.purge(policy, NOW) == 1
    history = await store.history("eph", "alice", "a1", AB, None, None, 10, NOW)
    assert [i.message.seq for i in history] == [2]
    assert [m.seq for m in (await store.backlog("eph", "bob", "b2", 0, 10, NOW))[0]] == [2]


async def test_device_id_belongs_to_one_user(store: MessageStore) -> None:
    import pytest

    from schemas.errors import ErrorCode, ProtocolError

    await store.register_device(APP, "alice", "phone", NOW)
    with pytest.raises(ProtocolError) as info:
        await store.register_device(APP, "mallory", "phone", NOW)
    assert info.value.code == ErrorCode.CONFLICT
    assert await store.device_owner(APP, "phone") == "alice"


async def test_acks_cannot_reach_outside_the_inbox(store: MessageStore) -> None:
    await setup_users(store)
    await store.register_device(APP, "carol", "c1", NOW)
    await store.append([envelope(s) for s in (1, 2)])
    carol_bob = envelope(3, sender="carol", device="c1", to="bob")
    await store.append([carol_bob])
    # wrong conversation, unknown seq far ahead, a message of someone else's inbox
    await store.record_acks(APP, "bob", "b1", [
        AckItem(id="m3", seq=3, conversation=AB, sender="carol"),
        AckItem(id="mx", seq=10**9, conversation=AB, sender="alice"),
    ], NOW)
    await store.record_acks(APP, "alice", "a2", [AckItem(id="m3", seq=3,
                                                    conversation="d:bob:carol")], NOW)
    messages, _ = await store.backlog(APP, "bob", "b1", 0, 10, NOW)
    assert [m.seq for m in messages] == [1, 2, 3]
    history = await store.history(APP, "carol", "c1", "d:bob:carol", None, None, 10, NOW)
    assert [i.status for i in history] == ["sent"]
    await store.append([envelope(4)])
    assert [m.seq for m in (await store.backlog(APP, "bob", "b1", 0, 10, NOW))[0]] == [1, 2, 3, 4]


async def test_one_message_by_id_for_its_recipients_only(store: MessageStore) -> None:
    await setup_users(store)
    await store.register_device(APP, "carol", "c1", NOW)
    await store.append([envelope(1), envelope(2, payloads={"b1": b"for-b1"}),
                        envelope(3, sender="carol", device="c1", to="bob")])
    await store.record_acks(APP, "bob", "b1", [ack(1)], NOW)
    item = await store.message(APP, "bob", "b2", "m1", NOW)
    assert item is not None
    assert (item.message.message_id, item.message.seq, item.message.body, item.status) == (
        "m1", 1, b"body1", "delivered")
    assert item.message.conversation == AB and item.message.sender.user == "alice"
    own = await store.message(APP, "alice", "a1", "m1", NOW)  # the sender's view has it too
    assert own is not None and own.message.body == b"body1"
    payload = await store.message(APP, "bob", "b1", "m2", NOW)  # the body for this device
    assert payload is not None and payload.message.body == b"for-b1"
    assert await store.message(APP, "bob", "b2", "m2", NOW) is None  # no body for b2
    assert await store.message(APP, "carol", "c1", "m1", NOW) is None  # not a recipient
    assert await store.message(APP, "alice", "a1", "m3", NOW) is None  # carol -> bob
    assert await store.message(APP, "bob", "b1", "m99", NOW) is None  # no such message
    third = await store.message(APP, "bob", "b1", "m3", NOW)
    assert third is not None and third.message.conversation == direct_conversation("bob",
                                                                                   "carol")


async def test_apps_are_isolated(store: MessageStore) -> None:
    """The same user, device and conversation ids in two apps are two users, devices and
    conversations: nothing written in one app is read, acknowledged or marked in the other."""
    await setup_users(store, "one")
    await setup_users(store, "two")
    await store.append([envelope(1, app="one"), envelope(2, app="two", body=b"two's")])
    for app, seq in (("one", 1), ("two", 2)):
        backlog, _ = await store.backlog(app, "bob", "b1", 0, 10, NOW)
        assert [m.seq for m in backlog] == [seq]
        history = await store.history(app, "bob", "b1", AB, None, None, 10, NOW)
        assert [(i.message.seq, i.message.app) for i in history] == [(seq, app)]
        [summary] = await store.conversations(app, "bob", "b1", 10)
        assert (summary.last_seq, summary.unread) == (seq, 1)
    assert await store.message("two", "bob", "b1", "m1", NOW) is None
    assert await store.message("one", "bob", "b1", "m1", NOW) is not None
    assert await store.history("three", "bob", "b1", AB, None, None, 10, NOW) == []
    assert await store.conversations("three", "bob", "b1", 10) == []
    # acknowledgements and read markers stay in their app
    await store.record_acks("two", "bob", "b1", [ack(1)], NOW)
    assert [m.seq for m in (await store.backlog("one", "bob", "b1", 0, 10, NOW))[0]] == [1]
    await store.mark_read("two", "bob", AB, 1)
    [mine] = await store.history("one", "alice", "a1", AB, None, None, 10, NOW)
    assert mine.status == "sent"
    await store.mark_read("one", "bob", AB, 1)
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
