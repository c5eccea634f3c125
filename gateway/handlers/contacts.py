"""Contact and block writes, and their fan-out.

The storage worker decides each write (``contact_write``) and answers with typed errors; after
it, this gateway drops the relation it cached (other gateways hear it on ``contacts.changed``)
and pushes the change live as ``contact`` frames to the connected devices of both users, or of
the actor only for blocks and unblocks, which the other user is not told about.
"""

from typing import Final

from gateway.auth import Identity
from gateway.handlers.permissions import Permissions
from gateway.handlers.user_channel import UserChannel
from runtime.rpc import RpcClient
from schemas.contacts import ContactAction, ContactEntry, ContactWrite, ContactWriteResult
from schemas.frames import Contact

#: Actions the other user does not hear of.
SILENT: Final[frozenset[ContactAction]] = frozenset({"block", "unblock"})


class Contacts:
    """One contact write: decide, forget the cached relation, tell who may know."""

    def __init__(self, rpc: RpcClient, permissions: Permissions, channel: UserChannel) -> None:
        self._rpc = rpc
        self._permissions = permissions
        self._channel = channel

    async def write(self, identity: Identity, other: str,
                    action: ContactAction) -> ContactEntry:
        """The relation after ``action`` as ``identity``'s user sees it."""
        try:
            result = await self._rpc.call("contact_write", ContactWrite(
                app=identity.app, user=identity.user, other=other, action=action),
                ContactWriteResult)
        finally:
            self._permissions.forget_relation(identity.app, identity.user, other)
        for user, frame in fan_out(identity.user, other, action, result):
            await self._channel.publish(identity.app, [user], frame)
        return result.mine


def fan_out(actor: str, other: str, action: ContactAction,
            result: ContactWriteResult) -> list[tuple[str, Contact]]:
    """Who hears of a contact change, each with the relation as it sees it: the actor, then
    the other user unless the action is silent (``SILENT``)."""
    told = [(actor, contact_frame(result.mine))]
    if action not in SILENT:
        told.append((other, contact_frame(result.theirs)))
    return told


def contact_frame(entry: ContactEntry) -> Contact:
    return Contact(user=entry.user, state=entry.state, blocked=entry.blocked, since=entry.since)
