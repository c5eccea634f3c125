"""REST routes of groups, contacts and presence: authenticate, parse, call one operation.

Group and contact writes go to the storage worker (``group_write``, ``contact_write``), which
decides them and answers with typed errors; after a write this gateway drops what it cached
about it (other gateways hear it on ``grp.changed``/``contacts.changed``). Contact changes are
pushed live as ``contact`` frames to the connected devices of both users (of the actor only for
blocks, which the blocked user is not told about).
"""

import re
import secrets
from typing import Final

from aiohttp import web

from gateway.auth import Identity, TokenVerifier
from gateway.credentials import bearer, read_json
from gateway.limits import Limits, WriteKind
from gateway.messaging import Messaging
from gateway.permissions import Permissions
from gateway.presence_hub import PresenceHub
from gateway.rest import json_response
from gateway.user_channel import UserChannel
from runtime.rpc import RpcClient
from schemas.contacts import (
    ContactAction,
    ContactEntry,
    ContactList,
    ContactRequestBody,
    ContactsOf,
    ContactWrite,
    ContactWriteResult,
    PresenceList,
)
from schemas.errors import ErrorCode, ProtocolError
from schemas.frames import MAX_PRESENCE_USERS, Contact
from schemas.groups import (
    AddMembers,
    AddMembersRequest,
    CreateGroup,
    CreateGroupRequest,
    GroupGet,
    GroupInfo,
    GroupList,
    GroupOp,
    GroupReceipts,
    GroupReceiptsRequest,
    GroupWrite,
    LeaveGroup,
    RemoveMember,
    RenameGroup,
    RenameGroupRequest,
    SetRole,
    SetRoleRequest,
    UserGroups,
)
from schemas.ids import ID_PATTERN

MAX_BODY: Final = 512 * 1024
_ID = re.compile(ID_PATTERN)


class SocialRest:
    """``/v1/groups``, ``/v1/contacts``, ``/v1/blocks``, ``/v1/presence`` and group receipts."""

    def __init__(self, verifier: TokenVerifier, rpc: RpcClient, messaging: Messaging,
                 permissions: Permissions, channel: UserChannel, presence: PresenceHub,
                 limits: Limits) -> None:
        self._verifier = verifier
        self._limits = limits
        self._rpc = rpc
        self._messaging = messaging
        self._permissions = permissions
        self._channel = channel
        self._presence = presence

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/groups", self.create_group),
            web.get("/v1/groups", self.my_groups),
            web.get("/v1/groups/{group}", self.get_group),
            web.patch("/v1/groups/{group}", self.rename_group),
            web.post("/v1/groups/{group}/members", self.add_members),
            web.delete("/v1/groups/{group}/members/{user}", self.remove_member),
            web.put("/v1/groups/{group}/members/{user}/role", self.set_role),
            web.post("/v1/groups/{group}/leave", self.leave_group),
            web.get("/v1/conversations/{conversation}/messages/{message_id}/receipts",
                    self.receipts),
            web.get("/v1/contacts", self.contacts),
            web.post("/v1/contacts/requests", self.request_contact),
            web.post("/v1/contacts/requests/{user}/accept", self.accept),
            web.post("/v1/contacts/requests/{user}/decline", self.decline),
            web.delete("/v1/contacts/requests/{user}", self.cancel),
            web.delete("/v1/contacts/{user}", self.remove_contact),
            web.put("/v1/blocks/{user}", self.block),
            web.delete("/v1/blocks/{user}", self.unblock),
            web.get("/v1/presence", self.presence),
        ]

    # ------------------------------------------------------------------ groups

    async def create_group(self, request: web.Request) -> web.Response:
        identity = self._writer(request, "group_create")
        body = await read_json(request, CreateGroupRequest, MAX_BODY)
        group = body.id or f"g{secrets.token_hex(8)}"
        info = await self._group_write(identity, group,
                                       CreateGroup(name=body.name, members=body.members))
        return json_response(info, 201)

    async def my_groups(self, request: web.Request) -> web.Response:
        identity = self._identity(request)
        return json_response(await self._rpc.call(
            "user_groups", UserGroups(app=identity.app, user=identity.user), GroupList))

    async def get_group(self, request: web.Request) -> web.Response:
        identity = self._identity(request)
        return json_response(await self._rpc.call(
            "group_get", GroupGet(app=identity.app, group=_path_id(request, "group"),
                                  user=identity.user), GroupInfo))

    async def rename_group(self, request: web.Request) -> web.Response:
        identity = self._writer(request)
        body = await read_json(request, RenameGroupRequest, MAX_BODY)
        return json_response(await self._group_write(identity, _path_id(request, "group"),
                                                     RenameGroup(name=body.name)))

    async def add_members(self, request: web.Request) -> web.Response:
        identity = self._writer(request)
        body = await read_json(request, AddMembersRequest, MAX_BODY)
        return json_response(await self._group_write(identity, _path_id(request, "group"),
                                                     AddMembers(users=body.users)))

    async def remove_member(self, request: web.Request) -> web.Response:
        identity = self._writer(request)
        return json_response(await self._group_write(
            identity, _path_id(request, "group"), RemoveMember(user=_path_id(request, "user"))))

    async def set_role(self, request: web.Request) -> web.Response:
        identity = self._writer(request)
        body = await read_json(request, SetRoleRequest, MAX_BODY)
        return json_response(await self._group_write(
            identity, _path_id(request, "group"),
            SetRole(user=_path_id(request, "user"), role=body.role)))

    async def leave_group(self, request: web.Request) -> web.Response:
        identity = self._writer(request)
        return json_response(await self._group_write(identity, _path_id(request, "group"),
                                                     LeaveGroup()))

    async def receipts(self, request: web.Request) -> web.Response:
        identity = self._identity(request)
        message_id = request.match_info["message_id"]
        if len(message_id) > 64:
            raise ProtocolError(ErrorCode.INVALID, "message ids are at most 64 characters")
        return json_response(await self._rpc.call("group_receipts", GroupReceiptsRequest(
            app=identity.app, user=identity.user, conversation=request.match_info["conversation"],
            message_id=message_id, barrier=await self._messaging.stream_position()),
            GroupReceipts))

    async def _group_write(self, identity: Identity, group: str, op: GroupOp) -> GroupInfo:
        try:
            return await self._rpc.call("group_write", GroupWrite(
                app=identity.app, actor=identity.user, group=group, op=op), GroupInfo)
        finally:
            self._permissions.forget_group(identity.app, group)

    # ------------------------------------------------------------------ contacts

    async def contacts(self, request: web.Request) -> web.Response:
        identity = self._identity(request)
        return json_response(await self._rpc.call(
            "contacts", ContactsOf(app=identity.app, user=identity.user), ContactList))

    async def request_contact(self, request: web.Request) -> web.Response:
        identity = self._writer(request, "contact_request")
        body = await read_json(request, ContactRequestBody, MAX_BODY)
        return await self._contact_write(identity, body.user, "request")

    async def accept(self, request: web.Request) -> web.Response:
        return await self._contact_write(self._writer(request), _path_id(request, "user"),
                                         "accept")

    async def decline(self, request: web.Request) -> web.Response:
        return await self._contact_write(self._writer(request), _path_id(request, "user"),
                                         "decline")

    async def cancel(self, request: web.Request) -> web.Response:
        return await self._contact_write(self._writer(request), _path_id(request, "user"),
                                         "cancel")

    async def remove_contact(self, request: web.Request) -> web.Response:
        return await self._contact_write(self._writer(request), _path_id(request, "user"),
                                         "remove")

    async def block(self, request: web.Request) -> web.Response:
        return await self._contact_write(self._writer(request), _path_id(request, "user"),
                                         "block")

    async def unblock(self, request: web.Request) -> web.Response:
        return await self._contact_write(self._writer(request), _path_id(request, "user"),
                                         "unblock")

    async def _contact_write(self, identity: Identity, other: str,
                             action: ContactAction) -> web.Response:
        try:
            result = await self._rpc.call("contact_write", ContactWrite(
                app=identity.app, user=identity.user, other=other, action=action),
                ContactWriteResult)
        finally:
            self._permissions.forget_relation(identity.app, identity.user, other)
        await self._channel.publish(identity.app, [identity.user], _contact_frame(result.mine))
        if action not in ("block", "unblock"):
            await self._channel.publish(identity.app, [other], _contact_frame(result.theirs))
        return json_response(result.mine)

    # ------------------------------------------------------------------ presence

    async def presence(self, request: web.Request) -> web.Response:
        identity = self._identity(request)
        users = [u for u in request.query.get("users", "").split(",") if u]
        if not users or len(users) > MAX_PRESENCE_USERS:
            raise ProtocolError(ErrorCode.INVALID, f"query 'users': 1 to {MAX_PRESENCE_USERS} "
                                "comma-separated user ids")
        for user in users:
            _check_id("users", user)
        visible = await self._permissions.visible(identity.app, identity.user, users)
        return json_response(PresenceList(
            users=[await self._presence.state(identity.app, user) for user in dict.fromkeys(users)
                   if user in visible],
            denied=[user for user in dict.fromkeys(users) if user not in visible]))

    def _identity(self, request: web.Request) -> Identity:
        return self._verifier.verify(bearer(request))

    def _writer(self, request: web.Request, kind: WriteKind = "write") -> Identity:
        """The identity of a write, once the user's write budget allowed it."""
        identity = self._identity(request)
        self._limits.check_write(identity, kind)
        return identity


def _contact_frame(entry: ContactEntry) -> Contact:
    return Contact(user=entry.user, state=entry.state, blocked=entry.blocked, since=entry.since)


def _path_id(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    _check_id(name, value)
    return value


def _check_id(name: str, value: str) -> None:
    if not _ID.fullmatch(value):
        raise ProtocolError(ErrorCode.INVALID, f"{name} {value!r} is not a valid id")
