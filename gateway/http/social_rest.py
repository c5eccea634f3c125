"""REST handlers of groups, contacts and presence (routes in ``gateway.http.routes``): parse, call
one operation, encode.

Group writes go to the storage worker (``group_write``), which decides them and answers with
typed errors; after a write this gateway drops what it cached about the group (other gateways
hear it on ``grp.changed``). Contact writes and their fan-out are
``gateway.handlers.contacts``, presence look-ups ``gateway.handlers.presence_hub``.
"""

import secrets
from typing import Final

from aiohttp import web

from gateway.auth import Identity
from gateway.handlers.contacts import Contacts
from gateway.handlers.messaging import Messaging
from gateway.handlers.permissions import Permissions
from gateway.handlers.presence_hub import PresenceHub
from gateway.http.responses import json_response
from gateway.http.rest import CONVERSATION, MESSAGE_ID
from gateway.http.routing import IdListParam, IdParam
from runtime.rpc import RpcClient
from schemas.contacts import (
    ContactAction,
    ContactList,
    ContactRequestBody,
    ContactsOf,
    PresenceList,
)
from schemas.frames import MAX_PRESENCE_USERS
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

MAX_BODY: Final = 512 * 1024
GROUP: Final = IdParam("group", "The group's id", where="path")
USER: Final = IdParam("user", "The other user's id", where="path")
USERS: Final = IdListParam("users", f"Comma-separated user ids (at most {MAX_PRESENCE_USERS})",
                           most=MAX_PRESENCE_USERS)


class SocialRest:
    """``/v1/groups``, ``/v1/contacts``, ``/v1/blocks``, ``/v1/presence`` and group receipts."""

    def __init__(self, rpc: RpcClient, messaging: Messaging, permissions: Permissions,
                 contacts: Contacts, presence: PresenceHub) -> None:
        self._rpc = rpc
        self._messaging = messaging
        self._permissions = permissions
        self._contacts = contacts
        self._presence = presence

    # ------------------------------------------------------------------ groups

    async def create_group(self, request: web.Request, identity: Identity,
                           body: CreateGroupRequest) -> web.Response:
        group = body.id or f"g{secrets.token_hex(8)}"
        info = await self._group_write(identity, group,
                                       CreateGroup(name=body.name, members=body.members))
        return json_response(info, 201)

    async def my_groups(self, request: web.Request, identity: Identity) -> web.Response:
        return json_response(await self._rpc.call(
            "user_groups", UserGroups(app=identity.app, user=identity.user), GroupList))

    async def get_group(self, request: web.Request, identity: Identity) -> web.Response:
        return json_response(await self._rpc.call(
            "group_get", GroupGet(app=identity.app, group=GROUP.value(request),
                                  user=identity.user), GroupInfo))

    async def rename_group(self, request: web.Request, identity: Identity,
                           body: RenameGroupRequest) -> web.Response:
        return json_response(await self._group_write(identity, GROUP.value(request),
                                                     RenameGroup(name=body.name)))

    async def add_members(self, request: web.Request, identity: Identity,
                          body: AddMembersRequest) -> web.Response:
        return json_response(await self._group_write(identity, GROUP.value(request),
                                                     AddMembers(users=body.users)))

    async def remove_member(self, request: web.Request, identity: Identity) -> web.Response:
        return json_response(await self._group_write(
            identity, GROUP.value(request), RemoveMember(user=USER.value(request))))

    async def set_role(self, request: web.Request, identity: Identity,
                       body: SetRoleRequest) -> web.Response:
        return json_response(await self._group_write(
            identity, GROUP.value(request),
            SetRole(user=USER.value(request), role=body.role)))

    async def leave_group(self, request: web.Request, identity: Identity) -> web.Response:
        return json_response(await self._group_write(identity, GROUP.value(request),
                                                     LeaveGroup()))

    async def receipts(self, request: web.Request, identity: Identity) -> web.Response:
        message_id = MESSAGE_ID.value(request)
        return json_response(await self._rpc.call("group_receipts", GroupReceiptsRequest(
            app=identity.app, user=identity.user, conversation=CONVERSATION.value(request),
            message_id=message_id, barrier=await self._messaging.stream_position()),
            GroupReceipts))

    async def _group_write(self, identity: Identity, group: str, op: GroupOp) -> GroupInfo:
        try:
            return await self._rpc.call("group_write", GroupWrite(
                app=identity.app, actor=identity.user, group=group, op=op), GroupInfo)
        finally:
            self._permissions.forget_group(identity.app, group)

    # ------------------------------------------------------------------ contacts

    async def contacts(self, request: web.Request, identity: Identity) -> web.Response:
        return json_response(await self._rpc.call(
            "contacts", ContactsOf(app=identity.app, user=identity.user), ContactList))

    async def request_contact(self, request: web.Request, identity: Identity,
                              body: ContactRequestBody) -> web.Response:
        return await self._contact_write(identity, body.user, "request")

    async def accept(self, request: web.Request, identity: Identity) -> web.Response:
        return await self._contact_write(identity, USER.value(request),
                                         "accept")

    async def decline(self, request: web.Request, identity: Identity) -> web.Response:
        return await self._contact_write(identity, USER.value(request),
                                         "decline")

    async def cancel(self, request: web.Request, identity: Identity) -> web.Response:
        return await self._contact_write(identity, USER.value(request),
                                         "cancel")

    async def remove_contact(self, request: web.Request, identity: Identity) -> web.Response:
        return await self._contact_write(identity, USER.value(request),
                                         "remove")

    async def block(self, request: web.Request, identity: Identity) -> web.Response:
        return await self._contact_write(identity, USER.value(request),
                                         "block")

    async def unblock(self, request: web.Request, identity: Identity) -> web.Response:
        return await self._contact_write(identity, USER.value(request),
                                         "unblock")

    async def _contact_write(self, identity: Identity, other: str,
                             action: ContactAction) -> web.Response:
        return json_response(await self._contacts.write(identity, other, action))

    # ------------------------------------------------------------------ presence

    async def presence(self, request: web.Request, identity: Identity) -> web.Response:
        states, denied = await self._presence.lookup(identity.app, identity.user,
                                                     USERS.value(request))
        return json_response(PresenceList(users=states, denied=denied))

