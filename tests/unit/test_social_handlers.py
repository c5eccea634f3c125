"""Contact fan-out and presence look-ups on their own (``gateway.handlers.contacts``,
``gateway.handlers.presence_hub``), against stand-ins of plain Python for the storage RPC, the
user channel, the permissions and the presence view. End to end, with real servers:
tests/e2e/test_contacts_presence.py."""

from typing import Any, cast, get_args

import msgspec
import pytest

from gateway.auth import Identity
from gateway.handlers.contacts import SILENT, Contacts, fan_out
from gateway.handlers.permissions import Permissions
from gateway.handlers.presence_hub import PresenceHub, split_visible
from gateway.handlers.user_channel import UserChannel
from presence.registry import PresenceView
from runtime.rpc import RpcClient
from schemas.contacts import ContactAction, ContactEntry, ContactWrite, ContactWriteResult
from schemas.errors import ErrorCode, ProtocolError
from schemas.frames import Contact, PresenceState

ALICE = Identity(user="alice", device="phone", app="app", expires_at=2e9)
RESULT = ContactWriteResult(mine=ContactEntry(user="bob", state="outgoing", since=5),
                            theirs=ContactEntry(user="alice", state="incoming", since=5))


class Storage:
    """``contact_write`` answers ``RESULT``, or raises ``failure``."""

    def __init__(self, failure: ProtocolError | None = None) -> None:
        self.failure = failure
        self.calls: list[tuple[str, msgspec.Struct]] = []

    async def call(self, method: str, request: msgspec.Struct, reply: type[Any]) -> Any:
        self.calls.append((method, request))
        if self.failure is not None:
            raise self.failure
        assert reply is ContactWriteResult
        return RESULT


class Channel:
    def __init__(self) -> None:
        self.published: list[tuple[str, list[str], msgspec.Struct]] = []

    async def publish(self, app: str, users: list[str], frame: msgspec.Struct) -> None:
        self.published.append((app, users, frame))


class Relations:
    """Permissions: ``viewer`` sees ``visible``; records what it was asked and forgot."""

    def __init__(self, visible: set[str] | None = None) -> None:
        self._visible = visible or set()
        self.asked: list[list[str]] = []
        self.forgotten: list[tuple[str, str, str]] = []

    def add_relation_listener(self, listener: object) -> None:
        pass

    def forget_relation(self, app: str, a: str, b: str) -> None:
        self.forgotten.append((app, a, b))

    async def visible(self, app: str, viewer: str, users: list[str]) -> set[str]:
        self.asked.append(users)
        return self._visible & set(users)


class View:
    """The presence view: device changes go to the listener; last-seen times per user."""

    def __init__(self, last_seen: dict[str, int]) -> None:
        self._last_seen = last_seen
        self.listeners: list[Any] = []

    def add_listener(self, listener: Any) -> None:
        self.listeners.append(listener)

    async def last_seen(self, app: str, user: str) -> int | None:
        return self._last_seen.get(user)

    def device(self, user: str, device: str, online: bool) -> None:
        for listener in self.listeners:
            listener("app", user, device, online)


def contacts(storage: Storage, relations: Relations, channel: Channel) -> Contacts:
    return Contacts(cast(RpcClient, storage), cast(Permissions, relations),
                    cast(UserChannel, channel))


@pytest.mark.parametrize("action", get_args(ContactAction))
def test_the_actor_always_hears_and_the_other_user_unless_silent(action: ContactAction) -> None:
    told = fan_out("alice", "bob", action, RESULT)
    mine = Contact(user="bob", state="outgoing", blocked=False, since=5)
    theirs = Contact(user="alice", state="incoming", blocked=False, since=5)
    if action in {"block", "unblock"}:
        assert told == [("alice", mine)]
    else:
        assert told == [("alice", mine), ("bob", theirs)]


def test_only_blocks_and_unblocks_are_silent() -> None:
    assert set(SILENT) == {"block", "unblock"} and SILENT < set(get_args(ContactAction))


async def test_a_contact_write_forgets_the_relation_then_tells_both_users() -> None:
    storage, relations, channel = Storage(), Relations(), Channel()
    entry = await contacts(storage, relations, channel).write(ALICE, "bob", "request")
    assert entry == RESULT.mine
    assert storage.calls == [("contact_write", ContactWrite(app="app", user="alice",
                                                             other="bob", action="request"))]
    assert relations.forgotten == [("app", "alice", "bob")]
    assert [(app, users) for app, users, _ in channel.published] == [("app", ["alice"]),
                                                                     ("app", ["bob"])]


async def test_a_refused_contact_write_still_forgets_and_tells_nobody() -> None:
    storage = Storage(ProtocolError(ErrorCode.NOT_FOUND, "no such request"))
    relations, channel = Relations(), Channel()
    with pytest.raises(ProtocolError) as refused:
        await contacts(storage, relations, channel).write(ALICE, "bob", "accept")
    assert refused.value.code == ErrorCode.NOT_FOUND
    assert relations.forgotten == [("app", "alice", "bob")] and channel.published == []


async def test_a_block_is_told_to_the_actor_only() -> None:
    channel = Channel()
    await contacts(Storage(), Relations(), channel).write(ALICE, "bob", "block")
    assert [users for _, users, _ in channel.published] == [["alice"]]


@pytest.mark.parametrize(("users", "visible", "shown", "denied"), [
    ([], set(), [], []),
    (["a", "b", "c"], {"a", "b", "c"}, ["a", "b", "c"], []),
    (["c", "b", "a"], set(), [], ["c", "b", "a"]),
    (["b", "a", "b", "c", "a"], {"a"}, ["a"], ["b", "c"]),
    (["x", "y"], {"y", "z"}, ["y"], ["x"]),
])
def test_split_visible_keeps_the_order_asked_without_repeats(
        users: list[str], visible: set[str], shown: list[str], denied: list[str]) -> None:
    assert split_visible(users, visible) == (shown, denied)


async def test_a_presence_lookup_aggregates_devices_into_users() -> None:
    view = View(last_seen={"carol": 1234})
    relations = Relations(visible={"bob", "carol"})
    hub = PresenceHub(cast(PresenceView, view), cast(Permissions, relations), max_watched=10)
    view.device("bob", "phone", True)
    view.device("bob", "laptop", True)
    view.device("bob", "phone", False)  # one device left: still online
    view.device("carol", "phone", True)
    view.device("carol", "phone", False)
    view.device("dave", "phone", True)  # online, but alice may not see him
    states, denied = await hub.lookup("app", "alice", ["dave", "bob", "carol", "bob"])
    assert states == [PresenceState(user="bob", online=True),
                      PresenceState(user="carol", online=False, last_active=1234)]
    assert denied == ["dave"]
    assert relations.asked == [["dave", "bob", "carol"]]  # asked once, without repeats


async def test_a_user_never_seen_is_offline_without_a_last_time() -> None:
    hub = PresenceHub(cast(PresenceView, View(last_seen={})),
                      cast(Permissions, Relations(visible={"erin"})), max_watched=10)
    assert await hub.lookup("app", "alice", ["erin"]) == (
        [PresenceState(user="erin", online=False, last_active=None)], [])
