"""The storage worker's group RPC: writes, reads, and the router's membership questions.

Writes are an RPC rather than an envelope a gateway publishes, so the caller gets a typed error
for what it may not do: the worker decides the write against the current state (quick refusal
of the common cases), publishes it as a ``GroupEnvelope`` on ``msgs.group`` and answers once the
envelope is applied, with the outcome recorded under its seq. That outcome is decided again in
stream order (``GroupApplier.apply``), so it is the one that counts: two concurrent writes on a
group, whichever replica served them, cannot both pass a size limit or use rights one of them
removed; the loser gets its typed error.
"""

import time
import uuid
from collections.abc import Awaitable, Callable

from nats.errors import Error as NatsError

from runtime.partitions import PartitionStreams
from runtime.rpc import Handler
from schemas.envelopes import encode_envelope, message_frame
from schemas.errors import ErrorCode, ProtocolError
from schemas.groups import (
    GroupEnvelope,
    GroupEventOutcome,
    GroupEventRequest,
    GroupGet,
    GroupInfo,
    GroupList,
    GroupMember,
    GroupMembers,
    GroupMembersAt,
    GroupReceipts,
    GroupReceiptsRequest,
    GroupRoster,
    GroupRosterRequest,
    GroupWrite,
    UserGroups,
)
from schemas.ids import group_conversation, group_of
from schemas.subjects import GROUP
from storage_worker.contacts import group_blockers
from storage_worker.group_apply import system_envelope
from storage_worker.group_rules import decide, named_users
from storage_worker.store.base import MessageStore
from storage_worker.store.social import GroupState, SocialStore

#: Returns once the envelope at a position (``inclusive``) or every one before it in its
#: partition is applied (``StorageWorker.wait_position``).
WaitPosition = Callable[[int, bool], Awaitable[None]]
#: Returns once everything up to a barrier (stream sequences by partition) is applied.
WaitStored = Callable[[list[int]], Awaitable[None]]


def now_ms() -> int:
    return int(time.time() * 1000)


class GroupService:
    """Handlers of the ``group_*`` storage operations."""

    def __init__(self, social: SocialStore, messages: MessageStore, streams: PartitionStreams,
                 wait_position: WaitPosition, wait_stored: WaitStored,
                 max_members: int) -> None:
        self._social = social
        self._messages = messages
        self._streams = streams
        self._wait_position = wait_position
        self._wait_stored = wait_stored
        self._max_members = max_members

    def handlers(self) -> dict[str, Handler]:
        return {
            "group_write": self._write,
            "group_get": self._get,
            "user_groups": self._user_groups,
            "group_roster": self._roster,
            "group_members": self._members,
            "group_event": self._event,
            "group_receipts": self._receipts,
        }

    async def check_reader(self, app: str, user: str, conversation: str) -> None:
        """Current and former members read a group's history (their inbox holds what they
        received while members); others get ``not_member``."""
        group = group_of(conversation)
        state = None if group is None else await self._social.group(app, group)
        if state is None or (state.role_of(user) is None and user not in state.former):
            raise ProtocolError(ErrorCode.NOT_MEMBER, f"not a member of {conversation}")

    async def _write(self, request: GroupWrite) -> GroupInfo:
        envelope = GroupEnvelope(id=f"e{uuid.uuid4().hex}", app=request.app,
                                 group=request.group, actor=request.actor, op=request.op,
                                 ts=now_ms())
        users = named_users(request.op)
        decide(await self._social.group(request.app, request.group), envelope, 0,
               self._max_members,
               await group_blockers(self._social, request.app, request.actor, users))
        await self._require_users(request.app, users)
        seq = await self._publish(envelope)
        await self._wait_position(seq, True)
        record = await self._social.group_event(seq)
        if record is None:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "the group write is not applied yet")
        if record.code:
            raise ProtocolError(ErrorCode(record.code), record.detail)
        state = await self._social.group(request.app, request.group)
        assert state is not None
        return self._info(state)

    async def _get(self, request: GroupGet) -> GroupInfo:
        state = await self._social.group(request.app, request.group)
        if state is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no group {request.group!r}")
        if state.role_of(request.user) is None:
            raise ProtocolError(ErrorCode.NOT_MEMBER, f"not a member of group {request.group!r}")
        return self._info(state)

    async def _user_groups(self, request: UserGroups) -> GroupList:
        return GroupList(groups=await self._social.user_groups(request.app, request.user))

    async def _roster(self, request: GroupRosterRequest) -> GroupRoster:
        state = await self._social.group(request.app, request.group)
        if state is None:
            return GroupRoster(exists=False)
        return GroupRoster(exists=True, members={m.user: m.role for m in state.members},
                           former=state.former)

    async def _members(self, request: GroupMembersAt) -> GroupMembers:
        await self._wait_position(request.seq, False)
        return GroupMembers(members=await self._social.members_at(request.app, request.group,
                                                                  request.seq))

    async def _event(self, request: GroupEventRequest) -> GroupEventOutcome:
        await self._wait_position(request.seq, True)
        record = await self._social.group_event(request.seq)
        if record is None:  # not a group write (or one that could not be decoded)
            return GroupEventOutcome(applied=False, group="", code=ErrorCode.NOT_FOUND,
                                     detail=f"no group write at {request.seq}")
        if record.code:
            return GroupEventOutcome(applied=False, group=record.group, code=record.code,
                                     detail=record.detail)
        before = await self._social.members_at(record.app, record.group, record.seq - 1)
        after = await self._social.members_at(record.app, record.group, record.seq)
        assert record.body is not None
        return GroupEventOutcome(
            applied=True, group=record.group, recipients=sorted({*before, *after}),
            members=after,
            message=message_frame(system_envelope(record), record.seq, record.body))

    async def _receipts(self, request: GroupReceiptsRequest) -> GroupReceipts:
        group = group_of(request.conversation)
        if group is None:
            raise ProtocolError(ErrorCode.INVALID,
                                "receipt counters are kept for group conversations only")
        await self._wait_stored(request.barrier)
        receipts = await self._social.receipts(request.app, group, request.message_id)
        if receipts is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no message {request.message_id!r} in "
                                f"{request.conversation}")
        if request.user not in await self._social.members_at(request.app, group, receipts.seq):
            raise ProtocolError(ErrorCode.NOT_MEMBER,
                                f"not a member of {request.conversation} at that message")
        return receipts

    async def _require_users(self, app: str, users: list[str]) -> None:
        for user in dict.fromkeys(users):
            exists, _ = await self._messages.user_devices(app, user)
            if not exists:
                raise ProtocolError(ErrorCode.NOT_FOUND, f"no user {user!r}")

    async def _publish(self, envelope: GroupEnvelope) -> int:
        """Publish into the group conversation's partition; returns the write's position."""
        partition = self._streams.of(envelope.app, group_conversation(envelope.group))
        try:
            return await self._streams.publish(partition, GROUP, encode_envelope(envelope),
                                               msg_id=envelope.id)
        except NatsError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"group write not stored: {exc!r}") from None

    def _info(self, state: GroupState) -> GroupInfo:
        return GroupInfo(
            id=state.id, conversation=group_conversation(state.id), created_at=state.created_at,
            version=state.version, max_members=self._max_members, name=state.name,
            owner=state.owner,
            members=[GroupMember(user=m.user, role=m.role, joined_seq=m.joined_seq)
                     for m in state.members])
